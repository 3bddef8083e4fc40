"""The client's own HTTP/1.1 (client/http1.py) against a real loopback server: chunked and
length-delimited bodies, redirects (the token only to its own origin), the size cap, a kept-alive
connection the server closed, and URLs as the JSON calls and the byte path need them."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler

import pytest

from pyscore.client import http1
from tests.loopback import Loopback


def answer(h: BaseHTTPRequestHandler, status: int, body: bytes, **headers: str) -> None:
    h.send_response(status)
    for k, v in headers.items():
        h.send_header(k.replace("_", "-"), v)
    if "Transfer_Encoding" not in headers:
        h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


@pytest.fixture
def served():
    """A server whose answers a test sets per path; records each request's headers."""
    routes: dict[str, object] = {}
    seen: list[tuple[str, dict[str, str]]] = []

    def handle(h: BaseHTTPRequestHandler) -> None:
        seen.append((h.path, {k.lower(): v for k, v in h.headers.items()}))
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        route = routes.get(h.path.split("?")[0])
        if callable(route):
            route(h, body)
        else:
            answer(h, 404, b"none")

    server = Loopback(handle)
    yield server, routes, seen
    server.close()


def test_a_chunked_answer_is_read_whole(served):
    server, routes, _ = served

    def chunked(h, _):
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for piece in (b'{"a": ', b"1", b"}"):
            h.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        h.wfile.write(b"0\r\nX-Trailer: t\r\n\r\n")

    routes["/c"] = chunked
    routes["/n"] = lambda h, _: answer(h, 200, b"next")
    pool = http1.Pool(5, 5)
    try:
        assert pool.fetch("GET", server.url + "/c", {}).json() == {"a": 1}
        assert pool.fetch("GET", server.url + "/n", {}).text == "next"  # same connection
    finally:
        pool.close()


def test_redirects_are_followed_and_the_token_stays_with_its_origin(served):
    server, routes, seen = served
    elsewhere: list[dict[str, str]] = []

    def there(h: BaseHTTPRequestHandler) -> None:
        elsewhere.append({k.lower(): v for k, v in h.headers.items()})
        answer(h, 200, b"there")

    other = Loopback(there)
    try:
        routes["/here"] = lambda h, _: answer(h, 200, b"here")
        routes["/a"] = lambda h, _: answer(h, 307, b"", Location="/here")
        routes["/b"] = lambda h, _: answer(h, 302, b"", Location=other.url + "/x")
        pool = http1.Pool(5, 5)
        auth = {"Authorization": "Bearer secret"}
        assert pool.fetch("GET", server.url + "/a", auth).text == "here"
        assert seen[-1][0] == "/here" and seen[-1][1]["authorization"] == "Bearer secret"
        got = pool.fetch("GET", server.url + "/b", auth)
        assert (got.status_code, got.text, got.url) == (200, "there", other.url + "/x")
        assert "authorization" not in elsewhere[-1]
        pool.close()
    finally:
        other.close()


def test_an_answer_over_the_cap_is_refused_unread(served):
    server, routes, _ = served
    routes["/big"] = lambda h, _: answer(h, 200, b"x" * 5000)
    pool = http1.Pool(5, 5)
    try:
        with pytest.raises(http1.TooLarge):
            pool.fetch("GET", server.url + "/big", {}, limit=4096)
        assert len(pool.fetch("GET", server.url + "/big", {}, limit=5000).content) == 5000
    finally:
        pool.close()


def test_a_kept_alive_connection_the_server_closed_is_replaced():
    """A server that closes each connection after one answer, without saying so: the next
    call on the pool's idle connection must not fail."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]

    def serve() -> None:
        for _ in range(3):
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    pool = http1.Pool(5, 5)
    try:
        for _ in range(3):
            assert pool.fetch("GET", f"http://127.0.0.1:{port}/", {}).text == "ok"
    finally:
        pool.close()


def test_a_post_sends_its_json_body_and_length(served):
    server, routes, seen = served
    routes["/p"] = lambda h, body: answer(h, 200, body)
    pool = http1.Pool(5, 5)
    try:
        got = pool.fetch("POST", server.url + "/p", {"Content-Type": "application/json"}, b"{}")
        assert got.content == b"{}"
        assert seen[-1][1]["content-length"] == "2"
    finally:
        pool.close()


def test_not_an_http_server_is_a_protocol_error():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(1024)
            conn.sendall(b"\x15\x03\x01\x00\x02\x02\x46")  # a TLS alert, as a TLS port says
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    pool = http1.Pool(5, 5)
    with pytest.raises(http1.ProtocolError):
        pool.fetch("GET", f"http://127.0.0.1:{listener.getsockname()[1]}/", {})
    pool.close()


@pytest.mark.parametrize(
    ("url", "parts"),
    [
        ("http://h/p?q=1#f", ("http", "h", 80, "/p?q=1")),
        ("HTTPS://User@H.example:8443", ("https", "h.example", 8443, "/")),
        ("http://[::1]:9/x", ("http", "::1", 9, "/x")),
        ("http://h?x=1", ("http", "h", 80, "/?x=1")),
    ],
)
def test_urls_split(url, parts):
    u = http1.split(url)
    assert (u.scheme, u.host, u.port, u.target) == parts


@pytest.mark.parametrize(
    "url", ["ftp://h/", "http://", "http://h:port/", "h/path", "http://h:99999/"]
)
def test_urls_that_are_refused(url):
    with pytest.raises(http1.InvalidUrl):
        http1.split(url)


def test_query_values_round_trip():
    url = http1.with_params("http://h/p", {"a": "x y/ü", "b": True, "c": 3})
    assert url == "http://h/p?a=x%20y%2F%C3%BC&b=true&c=3"
    assert http1.query_of(url + "&A=again&d=%zz+1") == {
        "a": "x y/ü",
        "b": "true",
        "c": "3",
        "d": "%zz 1",
    }
    assert http1.join("http://h:8/a/b?q", "c") == "http://h:8/a/c"
    assert http1.join("https://h/a", "//o/x") == "https://o/x"
