"""Our server under the real Java score-client: each command's requests in the order it sends
them, with its Accept header, and what it parses of each answer (statuses, Content-Type, field
names and JSON types), as /work/shared/reference/original_wire.md records them.

The Java client's error handler (ServiceRetryableResponseErrorHandler) fails at once on
400/404 and on 401/403/500, and retries anything else (409, 503, ...) ten times over ~51 s;
`java_verdict` encodes it, so a final refusal answered with a retryable status fails here.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from tests.api import bearer, song_error, submit, upload
from tests.conftest import LOCAL_STORE, init_server
from tests.publish import MiB, md5, song_payload

STUDY = "JAVA"
OBJ = "application/json, application/*+json"  # RestTemplate, for objects and booleans
STR = "text/plain, application/json, application/*+json, */*"  # for String answers
AGENT = "score-client/5.12.0"


def java_verdict(status: int) -> str:
    """What the Java client does with an error status: 'fail' at once, or 'retry' ~51 s."""
    if status in (400, 404, 401, 403, 500):
        return "fail"
    return "retry"


def call(method: str, url: str, accept: str, token: str | None = None, **kwargs) -> httpx.Response:
    """One service call as the Java client makes it: Accept from the target type, a bearer
    header only when there is a token, its User-Agent; redirects are not followed."""
    headers = {"Accept": accept, "User-Agent": AGENT, **bearer(token)}
    headers.update(kwargs.pop("headers", {}))
    return httpx.request(method, url, headers=headers, timeout=30, **kwargs)


def json_of(r: httpx.Response, status: int = 200):
    """The JSON of an answer the Java client parses: the status, and a JSON Content-Type
    (anything else is an error on the Java side)."""
    assert r.status_code == status, f"{r.status_code}: {r.text[:300]}"
    kind = r.headers.get("content-type", "").split(";")[0].strip()
    assert kind == "application/json" or (kind.startswith("application/") and "+json" in kind), kind
    return r.json()


def unsigned(spec: dict) -> dict:
    """A spec with its part URLs cut at the query: what it says, not when it was signed."""
    parts = [{**p, "url": p["url"].split("?")[0]} for p in spec["parts"]]
    return {**spec, "parts": parts}


def is_long(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def presigned_expiry(url: str) -> float:
    """S3PresignedUrlValidator.extractExpiryDate: keys lower-cased; SigV2 `Expires` (epoch
    seconds) first, else SigV4 `X-Amz-Date` + `X-Amz-Expires`; neither is an error."""
    args = {k.lower(): v for k, v in parse_qsl(urlsplit(url).query)}
    if "expires" in args:
        return int(args["expires"])
    if "x-amz-expires" in args and "x-amz-date" in args:
        date = datetime.strptime(args["x-amz-date"], "%Y%m%dT%H%M%S%z")
        return date.timestamp() + int(args["x-amz-expires"])
    raise AssertionError(f"the Java client cannot read an expiry from {url}")


def check_entity(e: dict) -> None:
    assert isinstance(e["id"], str) and isinstance(e["fileName"], str)
    assert isinstance(e["gnosId"], str) and isinstance(e["projectCode"], str)
    assert e["access"] in ("open", "controlled")
    assert is_long(e["createdTime"]) and e["createdTime"] > 1_500_000_000_000  # epoch ms


def check_spec(spec: dict, object_id: str, size: int) -> None:
    """ObjectSpecification as Score's Jackson writes it."""
    assert spec["objectId"] == object_id and isinstance(spec["objectKey"], str)
    assert isinstance(spec["uploadId"], str)
    assert is_long(spec["objectSize"]) and spec["objectSize"] == size
    assert "objectMd5" in spec and (spec["objectMd5"] is None or isinstance(spec["objectMd5"], str))
    assert isinstance(spec["parts"], list) and spec["parts"]
    for part in spec["parts"]:
        assert is_long(part["partNumber"]) and is_long(part["partSize"])
        assert is_long(part["offset"])
        assert "md5" in part, part  # written (as null on downloads) by the original
        assert "url" in part
        assert "sourceMd5" not in part or isinstance(part["sourceMd5"], str)


class World:
    def __init__(self, server, data: dict[str, bytes], ids: dict[str, str], analysis: str):
        self.server, self.url = server, server.url
        self.data, self.ids, self.analysis = data, ids, analysis
        self.reader = server.token(f"PROGRAMDATA-{STUDY}.READ")
        self.admin = server.admin_token

    def submitted(self, size: int, donor: str) -> tuple[str, bytes, str]:
        """(object id, bytes, its /upload/{id} URL) of a new unpublished file."""
        data = {f"{donor}.bam": os.urandom(size)}
        with httpx.Client(base_url=self.url, headers=bearer(self.admin)) as http:
            _, ids = submit(http, song_payload(STUDY, data, donor=donor), bearer(self.admin))
        object_id = ids[f"{donor}.bam"]
        return object_id, data[f"{donor}.bam"], f"{self.url}/upload/{object_id}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("java")
    with init_server(root / "data", "--part-size", "5") as server:
        with httpx.Client(base_url=server.url, headers=bearer(server.admin_token)) as http:
            assert http.post(f"/studies/{STUDY}/", json={"studyId": STUDY}).status_code == 200
            data = {"x.bam": os.urandom(5 * MiB + 1000), "x.bam.BAI": os.urandom(3000)}
            payload = song_payload(STUDY, data, file_type="BAM")
            payload["files"][1]["fileType"] = "BAI"
            analysis, ids = submit(http, payload, bearer(server.admin_token))
            for name, content in data.items():
                upload(http, ids[name], content, bearer(server.admin_token))
            r = http.put(f"/studies/{STUDY}/analysis/publish/{analysis}")
            assert r.status_code == 200, r.text
        yield World(server, data, ids, analysis)


# -- start-up and ping ----------------------------------------------------------------------
def test_startup_profile_then_ping_and_its_url(world):
    r = call("GET", f"{world.url}/profile", STR, world.reader)
    assert r.status_code == 200 and r.text in ("s3", "az")
    ping = call("GET", f"{world.url}/download/ping", STR, world.reader)
    assert ping.status_code == 200, ping.text
    uri = urlsplit(ping.text)  # parsed as a URI: a bare URL, not JSON
    assert uri.scheme in ("http", "https") and uri.netloc, ping.text
    sentinel = httpx.get(ping.text, timeout=5)  # no auth, 5 s
    assert sentinel.status_code == 200
    anonymous = call("GET", f"{world.url}/download/ping", STR)
    assert anonymous.status_code == 200


def test_bad_token_on_ping_and_listing_is_401(world):
    for path, accept in (("/download/ping", STR), ("/listing", OBJ)):
        r = call("GET", f"{world.url}{path}", accept, "not-a-token")
        song_error(r, 401, "unauthorized.token")
        assert java_verdict(r.status_code) == "fail"


# -- download -------------------------------------------------------------------------------
def download_requests(world, object_id: str, token: str | None) -> list[httpx.Response]:
    """`download --object-id X --index`: the entity, its analysis's entities page by page
    until `last`, then the spec twice (space check, then the download)."""
    sent = []
    entity = call("GET", f"{world.url}/entities/{object_id}", OBJ, token)
    sent.append(entity)
    gnos = json_of(entity)["gnosId"]
    page, pages = 0, []
    while page < 10:  # bounded: two files at size=1 take two pages
        r = call(
            "GET",
            f"{world.url}/entities",
            OBJ,
            token,
            params={"gnosId": gnos, "size": 1, "page": page},
        )
        sent.append(r)
        body = json_of(r)
        assert isinstance(body["last"], bool) and isinstance(body["content"], list)
        pages.append(body)
        if body["last"]:
            break
        page += 1
    assert pages[-1]["last"], "paging never reached `last`"
    for _ in range(2):
        sent.append(
            call(
                "GET",
                f"{world.url}/download/{object_id}",
                OBJ,
                token,
                params={"offset": 0, "length": -1},
            )
        )
    return sent


def test_download_by_object_id_with_index(world):
    bam = world.ids["x.bam"]
    entity, *pages, space, spec = download_requests(world, bam, world.reader)
    e = json_of(entity)
    check_entity(e)
    assert (e["id"], e["fileName"], e["gnosId"]) == (bam, "x.bam", world.analysis)
    assert (e["projectCode"], e["access"]) == (STUDY, "controlled")
    listed = [x for p in pages for x in json_of(p)["content"]]
    for x in listed:
        check_entity(x)
    # the index is the entity named <name>.bai/.crai/.tbi/.idx, any case (here x.bam.BAI)
    index = [
        x
        for x in listed
        if x["fileName"].lower() in {"x.bam." + s for s in ("bai", "crai", "tbi", "idx")}
        or x["fileName"].lower() == "x.bai"
    ]
    assert [x["id"] for x in index] == [world.ids["x.bam.BAI"]]
    # the same answer twice, but for the URLs' signatures (S3 signs the second it is asked)
    assert unsigned(json_of(space)) == unsigned(json_of(spec))
    body = json_of(spec)
    check_spec(body, bam, len(world.data["x.bam"]))
    assert body["objectMd5"] == md5(world.data["x.bam"])
    assert [p["partSize"] for p in body["parts"]] == [5 * MiB, 1000]
    assert all(p["md5"] is None for p in body["parts"])
    for part in body["parts"]:
        # a GET per part.url, no Authorization, exactly the part's range
        end = part["offset"] + part["partSize"] - 1
        got = httpx.get(part["url"], headers={"Range": f"bytes={part['offset']}-{end}"})
        assert got.status_code in (200, 206), got.text[:200]
        assert got.content == world.data["x.bam"][part["offset"] : end + 1]
        # on resume, the client reads the expiry out of the part URL
        expiry = presigned_expiry(part["url"])
        assert time.time() < expiry < time.time() + 8 * 24 * 3600


def test_download_by_analysis_id(world):
    r = call(
        "GET",
        f"{world.url}/entities",
        OBJ,
        world.reader,
        params={"gnosId": world.analysis, "projectCode": STUDY, "size": 2000, "page": 0},
    )
    body = json_of(r)
    assert body["last"] is True
    assert {e["fileName"] for e in body["content"]} == {"x.bam", "x.bam.BAI"}


def url_command(world, object_id: str) -> str:
    """What `url` (and view's and mount's external reads) ask: the spec with external=true,
    which must have exactly one part; its URL."""
    r = call(
        "GET",
        f"{world.url}/download/{object_id}",
        OBJ,
        world.reader,
        params={"offset": 0, "length": -1, "external": "true"},
    )
    (part,) = json_of(r)["parts"]
    assert isinstance(part["url"], str)
    return part["url"]


def test_url_command_is_one_whole_object_part(world):
    got = httpx.get(url_command(world, world.ids["x.bam"]), timeout=30)
    assert got.status_code == 200 and got.content == world.data["x.bam"]


def test_view_reads_with_head_then_ranges(world):
    for name in ("x.bam", "x.bam.BAI"):
        url = url_command(world, world.ids[name])
        size = len(world.data[name])
        if LOCAL_STORE:  # htsjdk asks the length first (S3 refuses HEAD on a GET URL)
            head = httpx.head(url)
            assert head.status_code == 200
            assert int(head.headers["content-length"]) == size
        tail = httpx.get(url, headers={"Range": f"bytes={size - 100}-{size - 1}"})
        assert tail.status_code == 206 and tail.content == world.data[name][-100:]


# -- mount ----------------------------------------------------------------------------------
def test_mount_entities_listing_and_access_probe(world):
    r = call(
        "GET",
        f"{world.url}/entities/?fields=id&fields=fileName&fields=gnosId&size=2000&page=0",
        OBJ,
        world.reader,
    )
    body = json_of(r)  # answered at /entities/ itself: no redirect
    assert body["last"] is True
    assert body["content"] and all(set(e) == {"id", "fileName", "gnosId"} for e in body["content"])
    listing = json_of(call("GET", f"{world.url}/listing", OBJ, world.reader))
    assert isinstance(listing, list)
    for entry in listing:
        assert set(entry) == {"id", "lastModified", "size"}
        assert is_long(entry["lastModified"]) and entry["lastModified"] > 1_500_000_000_000
        assert is_long(entry["size"])
    assert {e["id"]: e["size"] for e in listing}[world.ids["x.bam"]] == len(world.data["x.bam"])
    # the access probe: the url of the last entity, then a read of it
    url = url_command(world, body["content"][-1]["id"])
    whole = httpx.get(url, timeout=30)  # no Range: for the size
    assert whole.status_code == 200
    size = int(whole.headers["content-length"])
    rest = httpx.get(url, headers={"Range": f"bytes=10-{size - 1}"})
    assert rest.status_code == 206 and len(rest.content) == size - 10


def test_entities_with_and_without_slash_are_answered_directly(world):
    for path in ("/entities", "/entities/"):
        with httpx.Client(follow_redirects=False) as http:
            r = http.get(f"{world.url}{path}", params={"size": 5}, headers={"Accept": OBJ})
        assert json_of(r)["content"], path


# -- upload ---------------------------------------------------------------------------------
def test_upload_sequence(world):
    admin = world.admin
    object_id, content, base = world.submitted(5 * MiB + 777, "U")
    exists = call("GET", base, OBJ, admin)
    assert json_of(exists) is False
    song_error(call("GET", f"{base}/status", OBJ, admin, params={"fileSize": len(content)}), 404)
    r = call(
        "POST",
        f"{base}/uploads",
        OBJ,
        admin,
        params={"fileSize": len(content), "overwrite": "true", "md5": md5(content)},
    )
    spec = json_of(r)
    check_spec(spec, object_id, len(content))
    upload_id = spec["uploadId"]

    def put(part: dict) -> str:
        chunk = content[part["offset"] : part["offset"] + part["partSize"]]
        r = httpx.put(part["url"], content=chunk, headers={"Content-Length": str(len(chunk))})
        assert r.status_code == 200, r.text
        etag = r.headers["etag"].strip('"')
        assert etag == md5(chunk)  # the client checks the ETag against the part's MD5
        done = call(
            "POST",
            f"{base}/parts",
            OBJ,
            admin,
            params={
                "uploadId": upload_id,
                "partNumber": part["partNumber"],
                "md5": md5(chunk),
                "etag": etag,
            },
        )
        assert done.status_code == 200, done.text
        return etag

    first, second = spec["parts"]
    put(first)
    status = json_of(call("GET", f"{base}/status", OBJ, admin, params={"fileSize": len(content)}))
    assert status["objectId"] == object_id and status["uploadId"] == upload_id
    parts = {p["partNumber"]: p for p in status["parts"]}
    for part in status["parts"]:
        assert is_long(part["partNumber"]) and is_long(part["offset"])
        assert "md5" in part and "url" in part
    assert parts[1]["md5"] == md5(content[: 5 * MiB]) == parts[1]["sourceMd5"]
    assert parts[2]["md5"] is None and parts[2]["url"]
    # a bad part is deleted, then sent again
    put(second)
    r = call("DELETE", f"{base}/parts", OBJ, admin, params={"uploadId": upload_id, "partNumber": 2})
    assert r.status_code == 200, r.text
    r = call("POST", f"{base}/recovery", OBJ, admin, params={"fileSize": len(content)})
    assert r.status_code == 200, r.text
    status = json_of(call("GET", f"{base}/status", OBJ, admin, params={"fileSize": len(content)}))
    (again,) = [p for p in status["parts"] if p["md5"] is None]
    put(again)
    r = call("POST", base, OBJ, admin, params={"uploadId": upload_id})
    assert r.status_code == 200, r.text
    assert json_of(call("GET", base, OBJ, admin)) is True


# -- statuses of refusals -------------------------------------------------------------------
def test_final_refusals_are_not_retried_by_the_java_client(world):
    """Each refusal the Java client can meet that no retry would change: 400/401/403/404,
    never a 409 it would retry for ~51 s."""
    admin = world.admin
    object_id, content, base = world.submitted(5 * MiB + 10, "R")
    published = world.ids["x.bam"]
    refusals = {}
    spec_params = {"offset": 0, "length": -1}
    refusals["unpublished download"] = call(
        "GET", f"{world.url}/download/{object_id}", OBJ, admin, params=spec_params
    )
    refusals["anonymous controlled download"] = call(
        "GET", f"{world.url}/download/{published}", OBJ, params=spec_params
    )
    refusals["upload of a published object"] = call(
        "POST", f"{world.url}/upload/{published}/uploads", OBJ, admin, params={"fileSize": 5}
    )
    init = call(
        "POST",
        f"{base}/uploads",
        OBJ,
        admin,
        params={"fileSize": len(content), "md5": md5(content)},
    )
    upload_id = json_of(init)["uploadId"]
    refusals["second initiate"] = call(
        "POST",
        f"{base}/uploads",
        OBJ,
        admin,
        params={"fileSize": len(content), "md5": md5(content)},
    )
    refusals["status of another size"] = call(
        "GET", f"{base}/status", OBJ, admin, params={"fileSize": len(content) + 1}
    )
    refusals["finalize an unsent part"] = call(
        "POST",
        f"{base}/parts",
        OBJ,
        admin,
        params={"uploadId": upload_id, "partNumber": 1, "md5": md5(b""), "etag": md5(b"")},
    )
    refusals["complete with parts missing"] = call(
        "POST", base, OBJ, admin, params={"uploadId": upload_id}
    )
    for what, r in refusals.items():
        assert r.status_code != 409, what
        assert java_verdict(r.status_code) == "fail", (what, r.status_code, r.text[:200])
    song_error(refusals["unpublished download"], 400, "analysis.not.published", "UNPUBLISHED")
    song_error(refusals["anonymous controlled download"], 403, None, f"PROGRAMDATA-{STUDY}.READ")
    assert (
        refusals["anonymous controlled download"]
        .json()["message"]
        .startswith("Token missing required scope")
    )


def test_song_error_is_songs_shape(world):
    url = f"{world.url}/studies/NOPE/analysis?analysisStates=PUBLISHED"
    r = call("GET", url, OBJ)
    body = song_error(r, 404, "study.id.does.not.exist")
    assert is_long(body["timestamp"])  # epoch ms, a long
    assert abs(body["timestamp"] / 1000 - time.time()) < 600
    parsed = datetime.fromisoformat(body["datetime"])
    assert parsed.tzinfo is not None
    assert abs(parsed.timestamp() * 1000 - body["timestamp"]) < 1
    assert body["requestUrl"] == url  # scheme, host, path and query


@pytest.mark.skipif(not LOCAL_STORE, reason="the local store's own URLs")
def test_local_store_expiry_is_signed(world):
    r = call(
        "GET",
        f"{world.url}/download/{world.ids['x.bam.BAI']}",
        OBJ,
        world.reader,
        params={"offset": 0, "length": -1},
    )
    (part,) = json_of(r)["parts"]
    url = part["url"]
    query = dict(parse_qsl(urlsplit(url).query))
    later = url.replace(f"Expires={query['Expires']}", f"Expires={int(query['Expires']) + 60}")
    assert later != url
    assert httpx.get(later).status_code == 403
    assert httpx.get(url).status_code in (200, 206)
    assert presigned_expiry(url) > time.time()
