"""Client settings: precedence and provenance, as `score-client info` shows them."""

from __future__ import annotations

import subprocess

import pytest

from pyscore.client.config import read_properties, resolve
from pyscore.client.errors import UsageError
from tests.conftest import CLIENT


@pytest.fixture
def conf(tmp_path, monkeypatch):
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "application.properties").write_text(
        "# comment\naccessToken=from-file-1234567890\nmetadata.url = http://file:1\n"
        "storage.url: http://file:2\ntransport.parallel=3\n"
    )
    (folder / "application-collab.properties").write_text("storage.url=http://collab:9\n")
    monkeypatch.setenv("SCORE_CLIENT_CONF_DIR", str(folder))
    for name in (
        "ACCESSTOKEN",
        "METADATA_URL",
        "STORAGE_URL",
        "STORAGE_PROFILE",
        "TRANSPORT_PARALLEL",
    ):
        monkeypatch.delenv(name, raising=False)
    return folder


def test_file_then_profile_then_env_then_flags(conf, monkeypatch):
    s = resolve()
    assert (s.metadata_url, s.storage_url, s.parallel) == ("http://file:1", "http://file:2", 3)
    assert s.sources["metadata.url"].endswith("application.properties")
    s = resolve(profile="collab")
    assert s.storage_url == "http://collab:9"
    assert s.sources["storage.url"].endswith("application-collab.properties")
    monkeypatch.setenv("STORAGE_URL", "http://env:3")
    monkeypatch.setenv("TRANSPORT_PARALLEL", "5")
    s = resolve(profile="collab")
    assert (s.storage_url, s.parallel, s.sources["storage.url"]) == (
        "http://env:3",
        5,
        "environment",
    )
    s = resolve({"transport.parallel": "7"}, profile="collab")
    assert (s.parallel, s.sources["transport.parallel"]) == (7, "command line")


def test_storage_profile_env_selects_profile(conf, monkeypatch):
    monkeypatch.setenv("STORAGE_PROFILE", "collab")
    assert resolve().storage_url == "http://collab:9"


def test_bad_number_is_a_usage_error(conf, monkeypatch):
    monkeypatch.setenv("TRANSPORT_PARALLEL", "many")
    with pytest.raises(UsageError, match=r"transport\.parallel"):
        resolve()


def test_properties_format(tmp_path):
    p = tmp_path / "x.properties"
    p.write_text("a=1\n! bang comment\nb : two words\n\nc=x=y\nnovalue\n")
    assert read_properties(p) == {"a": "1", "b": "two words", "c": "x=y"}


def test_info_shows_sources_and_masks_token(conf):
    out = subprocess.run(
        [CLIENT, "info"],
        capture_output=True,
        text=True,
        env={
            "SCORE_CLIENT_CONF_DIR": str(conf),
            "PATH": "/usr/bin:/bin",
            "ACCESSTOKEN": "secret-token-abcdef",
        },
    )
    assert out.returncode == 0, out.stderr
    assert "secret-token-abcdef" not in out.stdout
    assert "accessToken" in out.stdout and "[environment]" in out.stdout
    assert "http://file:1" in out.stdout and "application.properties" in out.stdout
