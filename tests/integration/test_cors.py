"""CORS for browser clients, over real HTTP as a browser sends it (Origin, preflights): the
htsget tickets, DRS, Song's reads and the local store's signed URLs of a platform that lists
an origin in `cors_origins`; nothing for an origin outside the list, nothing by default; and
the S3 bucket's rule, applied by `score-server cors apply`, on CI's S3 server."""

from __future__ import annotations

import json
import os
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from pyscore.wire.manifest import parse_download
from tests.api import bearer, drs_access_url
from tests.conftest import (
    LOCAL_STORE,
    SERVER,
    free_port,
    init_demo_server,
    init_server,
    local_store_only,
    one_line_error,
    run,
)

ALLOWED = "http://127.0.0.1:8765"
OTHER = "http://127.0.0.1:8766"
EXPOSED = {"content-range", "content-length", "accept-ranges", "etag"}
needs_s3 = pytest.mark.skipif(
    not os.environ.get("PYSCORE_TEST_S3"), reason="needs PYSCORE_TEST_S3 (CI's S3 pass)"
)


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    """The demo study, served with one allowed origin (as PYSCORE_CORS_ORIGINS)."""
    server = init_demo_server(tmp_path_factory.mktemp("cors") / "data")
    server.start(env={"PYSCORE_CORS_ORIGINS": f"{ALLOWED}, https://viewer.example.org"})
    rows = {r.fileName: r for r in parse_download(server.manifest.read_text(), "m")}
    server.rows, server.reader = rows, server.token("PROGRAMDATA-DEMO.READ")
    yield server
    server.stop()


def signed_url(server, name: str) -> str:
    """The whole-object signed URL DRS hands out for a demo file."""
    return drs_access_url(server.url, server.rows[name].objectId, server.reader)


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def store_urls(server) -> dict[str, str]:
    """The local store's signed URL of a demo file (an S3 store's are the store's own: they
    answer CORS from the bucket's rule, tested below with `cors apply`)."""
    return {"store": signed_url(server, "DONOR-1-N.bam")} if LOCAL_STORE else {}


def preflight(url: str, origin: str, method: str = "GET") -> httpx.Response:
    return httpx.options(
        url,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization,range,cache-control",
        },
        timeout=30,
    )


def vary(response: httpx.Response) -> set[str]:
    return {v.strip().lower() for v in response.headers.get("vary", "").split(",")}


def assert_cors(response: httpx.Response, origin: str) -> None:
    assert response.headers.get("access-control-allow-origin") == origin, response.headers
    assert "origin" in vary(response)
    exposed = {
        h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")
    }
    assert exposed >= EXPOSED
    assert "access-control-allow-credentials" not in response.headers


def api_urls(server) -> dict[str, str]:
    bam = server.rows["DONOR-1-N.bam"].objectId
    vcf = server.rows["DONOR-1-N.vcf.gz"].objectId
    return {
        "htsget reads": f"{server.url}/htsget/reads/{bam}",
        "htsget variants": f"{server.url}/htsget/variants/{vcf}",
        "drs access": f"{server.url}/ga4gh/drs/v1/objects/{bam}/access/https",
        "song entity": f"{server.url}/entities/{bam}",
        "song analyses": f"{server.url}/studies/DEMO/analysis?analysisStates=PUBLISHED",
    }


def test_preflights_are_answered_204_without_a_token(platform):
    urls = {**api_urls(platform), **store_urls(platform)}
    for what, url in urls.items():
        answer = preflight(url, ALLOWED)
        assert answer.status_code == 204, (what, answer.status_code, answer.text)
        assert answer.headers["access-control-allow-origin"] == ALLOWED, what
        assert "origin" in vary(answer), what
        allowed = {
            h.strip().lower() for h in answer.headers["access-control-allow-headers"].split(",")
        }
        assert allowed >= {"authorization", "range", "cache-control", "content-type"}, what
        assert "GET" in answer.headers["access-control-allow-methods"], what
        assert int(answer.headers["access-control-max-age"]) >= 600, what
    # htsget's POST tickets too (a JSON body needs a preflight)
    assert preflight(urls["htsget reads"], ALLOWED, "POST").status_code == 204


def test_reads_carry_the_origin_on_every_status(platform):
    urls = api_urls(platform)
    token = bearer(platform.reader)
    origin = {"Origin": ALLOWED}
    cases = {
        "ticket 200": httpx.get(
            urls["htsget reads"] + "?referenceName=chr1&start=10000&end=12000",
            headers={**origin, **token},
        ),
        "ticket 401 (no token)": httpx.get(urls["htsget reads"], headers=origin),
        "ticket 404": httpx.get(
            f"{platform.url}/htsget/reads/no-such-id", headers={**origin, **token}
        ),
        "drs 200": httpx.get(urls["drs access"], headers={**origin, **token}),
        "song 200": httpx.get(urls["song entity"], headers=origin),
        "song 404": httpx.get(f"{platform.url}/entities/no-such-id", headers=origin),
    }
    expected = {
        "ticket 200": 200,
        "ticket 401 (no token)": 401,
        "ticket 404": 404,
        "drs 200": 200,
        "song 200": 200,
        "song 404": 404,
    }
    for what, answer in cases.items():
        assert answer.status_code == expected[what], (what, answer.text)
        assert_cors(answer, ALLOWED)


@local_store_only
def test_the_store_urls_carry_the_origin_on_every_status(platform, demo_files):
    url = signed_url(platform, "DONOR-1-N.bam")
    size = platform.rows["DONOR-1-N.bam"].fileSize
    origin = {"Origin": ALLOWED}
    whole = httpx.get(url, headers=origin)
    assert whole.status_code == 200 and whole.content == (demo_files / "DONOR-1-N.bam").read_bytes()
    assert_cors(whole, ALLOWED)
    part = httpx.get(url, headers={**origin, "Range": "bytes=100-199"})
    assert part.status_code == 206 and part.headers["content-range"] == f"bytes 100-199/{size}"
    assert_cors(part, ALLOWED)
    past = httpx.get(url, headers={**origin, "Range": f"bytes={size + 10}-"})
    assert past.status_code == 416
    assert_cors(past, ALLOWED)
    forged = httpx.get(with_query(url, sig="0" * 64), headers=origin)
    assert forged.status_code == 403
    assert_cors(forged, ALLOWED)
    # htsget's data blocks are signed store URLs as well: the ticket's own URLs answer CORS
    bam = platform.rows["DONOR-1-N.bam"].objectId
    ticket = httpx.get(
        f"{platform.url}/htsget/reads/{bam}?referenceName=chr2&start=1000&end=3000",
        headers=bearer(platform.reader),
    ).json()["htsget"]
    data = [u for u in ticket["urls"] if not u["url"].startswith("data:")]
    assert data
    for block in data:
        assert preflight(block["url"], ALLOWED).status_code == 204
        answer = httpx.get(block["url"], headers={**origin, **block.get("headers", {})})
        assert answer.status_code == 206
        assert_cors(answer, ALLOWED)


def test_an_origin_outside_the_list_gets_no_cors_headers(platform):
    urls = {**api_urls(platform), **store_urls(platform)}
    for what, url in urls.items():
        answer = preflight(url, OTHER)
        assert answer.status_code != 204, what
        assert "access-control-allow-origin" not in answer.headers, what
        got = httpx.get(url, headers={"Origin": OTHER, **bearer(platform.reader)})
        assert got.status_code in (200, 206), (what, got.status_code)
        assert "access-control-allow-origin" not in got.headers, what
        assert "origin" in vary(got), what  # a shared cache keeps the answers apart


def test_writes_and_pages_stay_same_origin(platform):
    for path, method in [
        ("/submit/DEMO", "POST"),
        ("/studies/DEMO/analysis/publish/x", "PUT"),
        ("/upload/some-id/uploads", "POST"),
        ("/repository", "GET"),
        ("/portal/sign-in", "POST"),
    ]:
        answer = preflight(platform.url + path, ALLOWED, method)
        assert answer.status_code != 204, path
        assert "access-control-allow-origin" not in answer.headers, path
    page = httpx.get(platform.url + "/repository", headers={"Origin": ALLOWED})
    assert "access-control-allow-origin" not in page.headers


def test_cors_is_off_by_default(demo_server):
    rows = {r.fileName: r for r in parse_download(demo_server.manifest.read_text(), "m")}
    url = f"{demo_server.url}/htsget/reads/{rows['DONOR-1-N.bam'].objectId}"
    assert preflight(url, ALLOWED).status_code == 405
    answer = httpx.get(url, headers={"Origin": ALLOWED})
    assert "access-control-allow-origin" not in answer.headers


def test_an_entry_that_is_no_origin_is_one_line_at_serve(tmp_path):
    server = init_server(tmp_path / "data")
    serve = ["serve", "--data-dir", str(server.data_dir), "--port", str(free_port())]
    origins = "https://ok.example.org,https://viewer.example.org/igv"
    result = run(SERVER, *serve, env={"PYSCORE_CORS_ORIGINS": origins}, timeout=60)
    assert "https://viewer.example.org/igv" in one_line_error(result)


def test_cors_show_prints_the_bucket_rule_and_apply_refuses_a_local_store(tmp_path):
    server = init_server(tmp_path / "data")
    empty = run(SERVER, "cors", "show", "--data-dir", str(server.data_dir))
    assert "cors_origins is empty" in one_line_error(empty)
    env = {"PYSCORE_CORS_ORIGINS": ALLOWED}
    shown = run(SERVER, "cors", "show", "--data-dir", str(server.data_dir), env=env, check=True)
    (rule,) = json.loads(shown.stdout)["CORSRules"]
    assert rule["AllowedOrigins"] == [ALLOWED] and rule["AllowedMethods"] == ["GET", "HEAD"]
    assert set(rule["ExposeHeaders"]) >= {
        "Content-Range",
        "Content-Length",
        "Accept-Ranges",
        "ETag",
    }
    assert {"Range", "Authorization"} <= set(rule["AllowedHeaders"])
    if not os.environ.get("PYSCORE_TEST_S3"):
        local = run(SERVER, "cors", "apply", "--data-dir", str(server.data_dir), env=env)
        assert "s3://" in one_line_error(local)


@needs_s3
def test_cors_apply_puts_the_rule_on_the_bucket_and_presigned_urls_answer(tmp_path):
    server = init_demo_server(tmp_path / "data")
    env = {"PYSCORE_CORS_ORIGINS": ALLOWED}
    applied = run(SERVER, "cors", "apply", "--data-dir", str(server.data_dir), env=env, check=True)
    assert json.loads(applied.stdout)["CORSRules"][0]["AllowedOrigins"] == [ALLOWED]
    server.start(env=env)
    try:
        server.rows = {r.fileName: r for r in parse_download(server.manifest.read_text(), "m")}
        server.reader = server.token("PROGRAMDATA-DEMO.READ")
        url = signed_url(server, "DONOR-1-N.bam")
        assert urlsplit(url).netloc != urlsplit(server.url).netloc  # the S3 server's own URL
        answer = preflight(url, ALLOWED)
        assert answer.status_code in (200, 204), answer.text
        assert answer.headers.get("access-control-allow-origin") in (ALLOWED, "*")
        part = httpx.get(url, headers={"Origin": ALLOWED, "Range": "bytes=0-99"}, timeout=30)
        assert part.status_code == 206
        assert part.headers.get("access-control-allow-origin") in (ALLOWED, "*")
        exposed = part.headers.get("access-control-expose-headers", "").lower()
        assert "content-range" in exposed
        outside = httpx.get(url, headers={"Origin": OTHER, "Range": "bytes=0-99"}, timeout=30)
        assert "access-control-allow-origin" not in outside.headers
    finally:
        server.stop()
