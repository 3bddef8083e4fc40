"""The local store's signed object URLs, served by score-server itself: HTTP Range semantics,
the signed byte range of part URLs, tampering and expiry, and clients that hang up mid-body.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from tests.api import bearer, song_error, submit, upload
from tests.conftest import Server, init_server, local_store_only
from tests.publish import MiB, md5, song_payload

pytestmark = local_store_only  # the local store's own signed URLs (S3 presigns its own)

STUDY = "SIG"


def with_query(url: str, **changes: str) -> str:
    """The URL with some query parameters replaced (None drops one)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    for key, value in changes.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


@dataclass
class Obj:
    object_id: str
    data: bytes


@dataclass
class World:
    server: Server
    small: Obj  # 10 000 bytes
    big: Obj  # 12 MiB, for clients that hang up

    def spec(self, obj: Obj, **params) -> dict:
        r = httpx.get(
            f"{self.server.url}/download/{obj.object_id}",
            params=params,
            headers=bearer(self.server.admin_token),
        )
        assert r.status_code == 200, r.text
        return r.json()

    def whole_url(self, obj: Obj) -> str:
        """An unranged URL for the whole object (what external=true gives)."""
        (part,) = self.spec(obj, external="true")["parts"]
        return part["url"]

    def part_url(self, obj: Obj, offset: int, length: int) -> str:
        (part,) = self.spec(obj, offset=offset, length=length)["parts"]
        assert (part["offset"], part["partSize"]) == (offset, length)
        return part["url"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("signed")
    with init_server(root / "data") as server:
        with httpx.Client(
            base_url=server.url, headers=bearer(server.admin_token), timeout=60
        ) as http:
            assert http.post(f"/studies/{STUDY}/", json={"studyId": STUDY}).status_code == 200
            data = {"small.bam": os.urandom(10_000), "big.bam": os.urandom(12 * MiB)}
            for name, content in data.items():
                (root / name).write_bytes(content)
            analysis_id, ids = submit(http, song_payload(STUDY, data))
            for name, content in data.items():
                upload(http, ids[name], content)
            r = http.put(f"/studies/{STUDY}/analysis/publish/{analysis_id}")
            assert r.status_code == 200, r.text
        yield World(
            server, Obj(ids["small.bam"], data["small.bam"]), Obj(ids["big.bam"], data["big.bam"])
        )


def signing_store(server: Server):
    """The platform's own local store, with its signing keys, to mint URLs the server would
    never hand out."""
    from pyscore.server.platform import Platform
    from pyscore.server.settings import Settings

    return Platform.open(Settings.load(server.data_dir)).store


# -- ranges on a whole-object URL -----------------------------------------------------------
def test_range_gives_206_with_exact_bytes_and_headers(world):
    data = world.small.data
    url = world.whole_url(world.small)
    r = httpx.get(url, headers={"Range": "bytes=100-199"})
    assert r.status_code == 206
    assert r.content == data[100:200]
    assert r.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    assert r.headers["Content-Length"] == "100"
    assert r.headers["Accept-Ranges"] == "bytes"
    assert r.headers["ETag"]
    again = httpx.get(url, headers={"Range": "bytes=0-0"})
    assert again.content == data[:1]
    assert again.headers["ETag"] == r.headers["ETag"]  # same object, same validator


def test_whole_object_without_range(world):
    data = world.small.data
    r = httpx.get(world.whole_url(world.small))
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["Content-Length"] == str(len(data))
    assert r.headers["Accept-Ranges"] == "bytes"


@pytest.mark.parametrize(
    "header, start, end",
    [
        ("bytes=9000-", 9000, 10_000),  # open-ended
        ("bytes=-100", 9900, 10_000),  # suffix
        ("bytes=-20000", 0, 10_000),  # suffix longer than the object: all of it
        ("bytes=9990-20000", 9990, 10_000),  # end past the object: clipped
        ("bytes=0-9999", 0, 10_000),
    ],
)
def test_open_ended_and_suffix_ranges(world, header, start, end):
    data = world.small.data
    r = httpx.get(world.whole_url(world.small), headers={"Range": header})
    assert r.status_code == 206
    assert r.content == data[start:end]
    assert r.headers["Content-Range"] == f"bytes {start}-{end - 1}/{len(data)}"
    assert r.headers["Content-Length"] == str(end - start)


@pytest.mark.parametrize(
    "header", ["bytes=10000-", "bytes=10000-10010", "bytes=20000-30000", "bytes=-0"]
)
def test_unsatisfiable_range_is_416(world, header):
    r = httpx.get(world.whole_url(world.small), headers={"Range": header})
    assert r.status_code == 416
    assert r.headers["Content-Range"] == f"bytes */{len(world.small.data)}"


@pytest.mark.parametrize("header", ["items=0-5", "bytes=abc"])
def test_range_with_unknown_unit_or_bad_syntax_is_ignored(world, header):
    r = httpx.get(world.whole_url(world.small), headers={"Range": header})
    assert r.status_code == 200, (r.status_code, r.headers.get("content-type"), r.text[:80])
    assert r.content == world.small.data


def test_part_url_ignores_a_range_with_an_unknown_unit(world):
    r = httpx.get(world.part_url(world.small, 1000, 500), headers={"Range": "items=0-5"})
    assert r.status_code in (200, 206)
    assert r.content == world.small.data[1000:1500]


def test_head(world):
    url = world.whole_url(world.small)
    r = httpx.head(url)
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["Content-Length"] == str(len(world.small.data))
    assert r.headers["Accept-Ranges"] == "bytes"
    ranged = httpx.head(url, headers={"Range": "bytes=10-19"})
    assert ranged.status_code == 206
    assert ranged.content == b""
    assert ranged.headers["Content-Range"] == f"bytes 10-19/{len(world.small.data)}"
    assert ranged.headers["Content-Length"] == "10"


# -- part URLs: signed for one byte range ---------------------------------------------------
def test_part_url_without_range_gives_the_part(world):
    data = world.small.data
    r = httpx.get(world.part_url(world.small, 1000, 500))
    assert r.status_code in (200, 206)
    assert r.content == data[1000:1500]
    assert r.headers["Content-Length"] == "500"
    if r.status_code == 206:
        assert r.headers["Content-Range"] == f"bytes 1000-1499/{len(data)}"


def test_part_url_with_range_inside_it(world):
    data = world.small.data
    url = world.part_url(world.small, 1000, 500)
    r = httpx.get(url, headers={"Range": "bytes=1100-1199"})
    assert r.status_code == 206
    assert r.content == data[1100:1200]
    whole = httpx.get(url, headers={"Range": "bytes=1000-1499"})
    assert whole.content == data[1000:1500]


@pytest.mark.parametrize(
    "header", ["bytes=0-99", "bytes=1400-1600", "bytes=900-1100", "bytes=1000-", "bytes=-10"]
)
def test_range_outside_a_part_url_is_403(world, header):
    url = world.part_url(world.small, 1000, 500)
    song_error(httpx.get(url, headers={"Range": header}), 403, "signature.range")


# -- tampering and expiry -------------------------------------------------------------------
def flip(text: str) -> str:
    return ("1" if text[0] != "1" else "2") + text[1:]


@pytest.mark.parametrize(
    "tamper",
    ["sig", "sig-missing", "exp", "exp-garbage", "range", "range-dropped", "object-id", "method"],
)
def test_tampered_url_is_403(world, tamper):
    url = world.part_url(world.small, 1000, 500)
    query = dict(parse_qsl(urlsplit(url).query))
    method = "GET"
    if tamper == "sig":
        url = with_query(url, sig=flip(query["sig"]))
    elif tamper == "sig-missing":
        url = with_query(url, sig=None)
    elif tamper == "exp":
        url = with_query(url, Expires=str(int(query["Expires"]) + 3600))
    elif tamper == "exp-garbage":
        url = with_query(url, Expires="tomorrow")
    elif tamper == "range":
        url = with_query(url, range="0-9999")
    elif tamper == "range-dropped":  # would make it a whole-object URL
        url = with_query(url, range=None)
    elif tamper == "object-id":
        url = url.replace(world.small.object_id, world.big.object_id)
    elif tamper == "method":  # HEAD is allowed on GET URLs; a DELETE is not a read
        method = "DELETE"
    r = httpx.request(method, url, headers={"Range": "bytes=1000-1099"})
    if tamper == "method":
        assert r.status_code in (403, 405)
        song_error(r, r.status_code)
        return
    body = song_error(r, 403)
    assert body["errorId"].startswith("signature."), body


def test_expired_url_is_403(world):
    store = signing_store(world.server)
    fresh = store.url_for_get(world.small.object_id, base_url=world.server.url, expires_in=60)
    assert httpx.get(fresh).content == world.small.data  # the minted URL is otherwise good
    expired = store.url_for_get(world.small.object_id, base_url=world.server.url, expires_in=-10)
    song_error(httpx.get(expired), 403, "signature.expired", "expired")
    ranged = store.url_for_get(
        world.small.object_id, base_url=world.server.url, expires_in=-10, offset=0, length=10
    )
    song_error(httpx.get(ranged, headers={"Range": "bytes=0-9"}), 403, "signature.expired")


def test_url_for_a_missing_object_is_404_json(world):
    store = signing_store(world.server)
    url = store.url_for_get("no-such-object", base_url=world.server.url, expires_in=60)
    song_error(httpx.get(url), 404)


# -- clients that hang up -------------------------------------------------------------------
def test_client_disconnecting_mid_body_does_not_break_the_server(world):
    url = urlsplit(world.whole_url(world.big))
    target = f"{url.path}?{url.query}"
    for attempt in range(5):
        with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
            ranged = f"Range: bytes={attempt}-\r\n" if attempt % 2 else ""
            sock.sendall(
                f"GET {target} HTTP/1.1\r\nHost: {url.netloc}\r\n{ranged}"
                "Connection: close\r\n\r\n".encode()
            )
            received = b""
            while len(received) < 256 * 1024:  # some of the body, then hang up
                chunk = sock.recv(65536)
                assert chunk, "server closed before sending a body"
                received += chunk
            assert received.startswith(b"HTTP/1.1 20")
            if attempt == 4:  # abortive close (RST) rather than FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    time.sleep(0.5)
    assert world.server.process.poll() is None, "the server died"
    assert httpx.get(f"{world.server.url}/isAlive").json() is True
    r = httpx.get(world.whole_url(world.big), timeout=60)
    assert r.status_code == 200
    assert md5(r.content) == md5(world.big.data)
    tail = httpx.get(world.whole_url(world.big), headers={"Range": "bytes=-1000"})
    assert tail.content == world.big.data[-1000:]
