"""GA4GH DRS 1.x over real HTTP: objects, bundles, access URLs, and the download access rules."""

from __future__ import annotations

import httpx
import pytest

from pyscore.wire.manifest import parse_download
from tests.api import bearer
from tests.publish import md5


@pytest.fixture(scope="module")
def drs(demo_server):
    rows = {r.fileName: r for r in parse_download(demo_server.manifest.read_text(), "m")}
    reader = demo_server.token("PROGRAMDATA-DEMO.READ")
    other = demo_server.token("PROGRAMDATA-OTHER.READ")
    return demo_server, rows, reader, other


def get(server, path: str, token: str | None = None) -> httpx.Response:
    return httpx.get(f"{server.url}/ga4gh/drs/v1{path}", headers=bearer(token), timeout=30)


def test_service_info(drs):
    server, *_ = drs
    info = get(server, "/service-info").json()
    assert info["type"]["artifact"] == "drs"
    # DRS 1.4 reads the bulk limit at the top level (1.3 under `drs`)
    assert isinstance(info["maxBulkRequestLength"], int) and info["maxBulkRequestLength"] >= 1


def test_object_fields_and_access_url_bytes(drs, demo_files):
    server, rows, reader, _ = drs
    row = rows["DONOR-1-N.vcf.gz"]
    obj = get(server, f"/objects/{row.objectId}", reader).json()
    assert obj["id"] == row.objectId and obj["name"] == "DONOR-1-N.vcf.gz"
    assert obj["size"] == row.fileSize
    assert obj["checksums"] == [{"checksum": row.fileMd5sum, "type": "md5"}]
    assert obj["self_uri"].startswith("drs://") and obj["self_uri"].endswith(row.objectId)
    assert obj["created_time"] and obj["access_methods"][0]["type"] == "https"
    access_id = obj["access_methods"][0]["access_id"]
    url = get(server, f"/objects/{row.objectId}/access/{access_id}", reader).json()["url"]
    data = httpx.get(url, timeout=30).content  # the signed URL itself needs no token
    assert md5(data) == row.fileMd5sum
    assert data == (demo_files / "DONOR-1-N.vcf.gz").read_bytes()


def test_bundle_for_an_analysis(drs):
    server, rows, reader, _ = drs
    row = rows["DONOR-1-N.bam"]
    bundle = get(server, f"/objects/{row.analysisId}", reader).json()
    names = {c["name"] for c in bundle["contents"]}
    assert names == {"DONOR-1-N.bam", "DONOR-1-N.bam.bai"}
    assert all(c["drs_uri"][0].startswith("drs://") for c in bundle["contents"])
    assert bundle["size"] == sum(
        get(server, f"/objects/{c['id']}", reader).json()["size"] for c in bundle["contents"]
    )


@pytest.mark.parametrize(
    "who, status", [("anonymous", 401), ("invalid", 401), ("other", 403), ("reader", 200)]
)
def test_controlled_object_access_rules(drs, who, status):
    server, rows, reader, other = drs
    token = {"anonymous": None, "invalid": "nope", "other": other, "reader": reader}[who]
    oid = rows["DONOR-1-N.bam"].objectId
    for path in (f"/objects/{oid}", f"/objects/{oid}/access/https"):
        r = get(server, path, token)
        assert r.status_code == status, (path, r.text)
        if status != 200:
            body = r.json()
            assert body["status_code"] == status and body["msg"]
    if who == "other":
        assert "PROGRAMDATA-DEMO.READ" in get(server, f"/objects/{oid}", token).json()["msg"]


def test_open_object_needs_no_token(drs):
    server, rows, *_ = drs
    oid = rows["clinical.tsv"].objectId
    assert get(server, f"/objects/{oid}").status_code == 200
    url = get(server, f"/objects/{oid}/access/https").json()["url"]
    assert md5(httpx.get(url).content) == rows["clinical.tsv"].fileMd5sum


def test_unknown_object_and_access_id(drs):
    server, rows, reader, _ = drs
    r = get(server, "/objects/00000000-0000-4000-8000-000000000000", reader)
    assert r.status_code == 404 and r.json()["status_code"] == 404
    r = get(server, f"/objects/{rows['clinical.tsv'].objectId}/access/s3")
    assert r.status_code == 400 and "access_id" in r.json()["msg"]
