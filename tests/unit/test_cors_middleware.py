"""The CORS middleware on statuses and headers a route of ours may answer but the demo cannot
easily provoke (304, 5xx, a route's own Vary), and the allow-list's parsing."""

from __future__ import annotations

import asyncio

import pytest

from pyscore.server.web.cors import Cors, Origins, normalize_origin

ORIGIN = "https://viewer.example.org"


def answer(status: int, headers: list[tuple[bytes, bytes]]):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    return app


def call(app, path: str, origin: str | None, method: str = "GET") -> tuple[int, dict[str, str]]:
    sent: list[dict] = []
    headers = [(b"origin", origin.encode())] if origin else []
    scope = {"type": "http", "method": method, "path": path, "headers": headers}

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    asyncio.run(Cors(app, Origins([ORIGIN]))(scope, receive, send))
    start = sent[0]
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}


@pytest.mark.parametrize("status", [200, 206, 304, 403, 404, 416, 500, 503])
def test_every_status_of_a_covered_route_carries_the_origin(status):
    got, headers = call(answer(status, []), "/store/objects/x", ORIGIN)
    assert got == status
    assert headers["access-control-allow-origin"] == ORIGIN
    assert headers["vary"] == "Origin"
    assert "Content-Range" in headers["access-control-expose-headers"]


def test_a_routes_own_vary_is_kept():
    _, headers = call(answer(200, [(b"vary", b"Accept-Encoding")]), "/htsget/reads/x", ORIGIN)
    assert headers["vary"] == "Accept-Encoding, Origin"


def test_uncovered_paths_and_other_origins_are_left_alone():
    _, page = call(answer(200, []), "/repository", ORIGIN)
    assert "access-control-allow-origin" not in page and "vary" not in page
    _, other = call(answer(200, []), "/htsget/reads/x", "https://elsewhere.example.org")
    assert "access-control-allow-origin" not in other and other["vary"] == "Origin"
    _, write = call(answer(200, []), "/studies/DEMO/analysis/x", ORIGIN, method="PUT")
    assert "access-control-allow-origin" not in write


def test_origins_are_compared_as_browsers_send_them():
    origins = Origins(["HTTPS://Viewer.Example.org:443/", " http://127.0.0.1:8000 ", ""])
    assert origins.allows("https://viewer.example.org")
    assert origins.allows("http://127.0.0.1:8000")
    assert not origins.allows("http://127.0.0.1:8001")
    assert not origins.allows("null") and not origins.allows(None)
    assert not Origins([])
    assert Origins(["*"]).allows("https://anyone.example.org")
    assert normalize_origin("http://[::1]:8080") == "http://[::1]:8080"


@pytest.mark.parametrize(
    "entry", ["viewer.example.org", "ftp://x.org", "https://x.org/igv", "https://x.org/?a=1"]
)
def test_an_entry_that_is_no_origin_is_refused(entry):
    with pytest.raises(ValueError, match="cors_origins"):
        Origins([entry])
