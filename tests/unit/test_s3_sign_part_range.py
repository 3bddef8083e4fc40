"""The S3 store's `s3_sign_part_range` setting: off by default, on from server.json or
PYSCORE_S3_SIGN_PART_RANGE; when on, a part's presigned URL signs its Range (boto3, offline)
while whole-object URLs still sign only the host."""

from __future__ import annotations

from pyscore.server.settings import Settings
from pyscore.server.store.s3 import S3Store


def s3_settings(tmp_path, **extra) -> Settings:
    return Settings(
        data_dir=tmp_path,
        store="s3://bucket/prefix",
        s3_endpoint="http://127.0.0.1:9",
        s3_access_key="key",
        s3_secret_key="secret",
        **extra,
    )


def test_off_by_default_on_from_the_environment(tmp_path, monkeypatch):
    s3_settings(tmp_path).save()
    assert Settings.load(tmp_path).s3_sign_part_range is False
    monkeypatch.setenv("PYSCORE_S3_SIGN_PART_RANGE", "true")
    assert Settings.load(tmp_path).s3_sign_part_range is True
    monkeypatch.setenv("PYSCORE_S3_SIGN_PART_RANGE", "0")
    assert Settings.load(tmp_path).s3_sign_part_range is False


def test_part_urls_sign_their_range_only_when_asked(tmp_path):
    def part_url(store: S3Store) -> str:
        return store.url_for_get("x", base_url="", expires_in=60, offset=100, length=50)

    plain = S3Store.from_settings(s3_settings(tmp_path))
    assert not plain.signs_ranges
    assert "X-Amz-SignedHeaders=host&" in part_url(plain)
    ranged = S3Store.from_settings(s3_settings(tmp_path, s3_sign_part_range=True))
    assert ranged.signs_ranges
    assert "X-Amz-SignedHeaders=host%3Brange&" in part_url(ranged)
    whole = ranged.url_for_get("x", base_url="", expires_in=60)
    assert "X-Amz-SignedHeaders=host&" in whole
