"""The emulated long link itself (tests/wanlink.py): delay, handshake, window, rate cap and
counters, against a small HTTP server on loopback. Timing checks are lower bounds only (a
busy machine only adds to them), except one check that the delay line does not serialize
chunks, bounded in round trips of a long emulated RTT, not in the machine's speed."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.wanlink import Framer, MiB, WanLink, peak_overlap

KiB = 1024
BARRIER_PARTIES = 4


class Origin:
    """An HTTP/1.1 server: GET /bytes/N answers N bytes; /together waits until
    BARRIER_PARTIES requests are in the server at once; POST answers the body's length."""

    def __init__(self) -> None:
        self.barrier = threading.Barrier(BARRIER_PARTIES, timeout=60)
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _send(self, body: bytes, status: int = 200) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path.startswith("/bytes/"):
                    self._send(b"x" * int(self.path.rsplit("/", 1)[1]))
                elif self.path == "/together":
                    origin.barrier.wait()
                    self._send(b"ok")
                elif self.path == "/empty":
                    self.send_response(204)
                    self.end_headers()
                else:
                    self._send(b"hello")

            do_HEAD = do_GET

            def do_POST(self) -> None:
                n = int(self.headers["Content-Length"])
                self._send(str(len(self.rfile.read(n))).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    o = Origin()
    yield o
    o.close()


def get(conn: http.client.HTTPConnection, path: str, **headers: str) -> bytes:
    conn.request("GET", path, headers=headers)
    return conn.getresponse().read()


def settle(link: WanLink, seconds: float = 60) -> None:
    """Wait (bounded) until the link has no open connection and nothing in flight."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        s = link.stats()
        if s.open_connections == 0 and s.in_flight == 0:
            return
        time.sleep(0.01)
    raise AssertionError(f"the link did not settle: {link.stats()}")


def test_a_round_trip_costs_rtt_and_a_new_connection_one_more(origin: Origin) -> None:
    with WanLink(origin.port, rtt_ms=100) as link:
        conn = http.client.HTTPConnection("127.0.0.1", link.port, timeout=10)
        started = time.monotonic()
        assert get(conn, "/a") == b"hello"
        first = time.monotonic() - started
        started = time.monotonic()
        assert get(conn, "/b") == b"hello"
        second = time.monotonic() - started
        conn.close()
        settle(link)
        s = link.stats()
    assert first >= 0.2  # handshake + request
    assert second >= 0.1  # the connection is open: one round trip
    assert (s.connections, s.requests, s.responses) == (1, 2, 2)


def test_the_delay_line_keeps_chunks_moving_together(origin: Origin) -> None:
    """A body of many chunks arrives RTT/2 after it was sent, not RTT/2 per chunk. The RTT
    is long (0.5 s) so that the check is in round trips: a per-chunk delay would add 16 x
    RTT/2 (4 s); failing takes half of that on top of the round trip, 2 s to move 4 MiB on
    loopback, which only a delay line that serializes (or a machine ~50 times slower than
    usual) takes."""
    size, rtt = 4 * MiB, 0.5  # 16 of the link's 256 KiB chunks
    with WanLink(origin.port, rtt_ms=rtt * 1000, window=64 * MiB, rate=0) as link:
        conn = http.client.HTTPConnection("127.0.0.1", link.port, timeout=60)
        get(conn, "/a")  # connected
        started = time.monotonic()
        assert len(get(conn, f"/bytes/{size}")) == size
        seconds = time.monotonic() - started
        conn.close()
    assert seconds >= rtt
    assert seconds < rtt + 8 * rtt / 2, f"{seconds:.1f} s: chunks delayed one after another"


def test_the_window_bounds_one_connection_to_window_per_rtt(origin: Origin) -> None:
    size, window, rtt = 1 * MiB, 64 * KiB, 0.05
    with WanLink(origin.port, rtt_ms=rtt * 1000, window=window, rate=0) as link:
        conn = http.client.HTTPConnection("127.0.0.1", link.port, timeout=30)
        get(conn, "/a")
        started = time.monotonic()
        assert len(get(conn, f"/bytes/{size}")) == size
        seconds = time.monotonic() - started
        conn.close()
    # 16 windows: the first leaves at once, each of the other 15 waits for an RTT of ACKs
    assert seconds >= (size // window - 1) * rtt * 0.95


def test_the_rate_cap_is_shared_by_all_connections(origin: Origin) -> None:
    size, rate = 1 * MiB, 4_000_000
    with WanLink(origin.port, rtt_ms=0, rate=rate) as link:
        results: list[int] = []

        def fetch() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", link.port, timeout=30)
            results.append(len(get(conn, f"/bytes/{size}")))
            conn.close()

        started = time.monotonic()
        threads = [threading.Thread(target=fetch) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        seconds = time.monotonic() - started
        settle(link)
        s = link.stats()
    assert results == [size, size]
    assert s.connections == 2
    assert seconds >= 2 * size / rate * 0.95


def test_counters_bytes_and_the_request_log(origin: Origin) -> None:
    with WanLink(origin.port, rtt_ms=10) as link:
        sent = received = 0
        with socket.create_connection(("127.0.0.1", link.port), timeout=10) as sock:
            requests = [
                b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
                b"HEAD /bytes/500 HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET /bytes/1000 HTTP/1.1\r\nHost: x\r\nRange: bytes=0-99\r\n\r\n",
                b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\nabcdefg",
                b"GET /empty HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            ]
            for r in requests:  # pipelined: all at once, the answers in order
                sock.sendall(r)
                sent += len(r)
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
            answer = b"".join(chunks)
            received = len(answer)
        settle(link)
        raw = link.stats()
        conn = http.client.HTTPConnection("127.0.0.1", link.port, timeout=10)
        get(conn, "/b")
        conn.close()
        settle(link)
        s = link.stats()
    assert answer.count(b"HTTP/1.") == 5
    assert (raw.bytes_up, raw.bytes_down) == (sent, received)
    assert s.connections == 2
    assert s.requests == s.responses == 6
    assert s.in_flight == 0
    assert s.lines() == [
        "GET /a",
        "HEAD /bytes/500",
        "GET /bytes/1000 [bytes=0-99]",
        "POST /up",
        "GET /empty",
        "GET /b",
    ]
    assert [r.status for r in s.log] == [200, 200, 200, 200, 204, 200]
    assert [r.connection for r in s.log] == [1, 1, 1, 1, 1, 2]
    assert all(r.done is not None and r.done >= r.sent for r in s.log)
    assert s.peak_in_flight == 5  # the pipelined five
    assert s.bytes_up > sent and s.bytes_down > received  # and the second connection's
    assert s.unparsed == 0


def test_requests_in_flight_across_connections(origin: Origin) -> None:
    with WanLink(origin.port, rtt_ms=20) as link:
        errors: list[BaseException] = []

        def together() -> None:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", link.port, timeout=60)
                assert get(conn, "/together") == b"ok"
                conn.close()
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=together) for _ in range(BARRIER_PARTIES)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        settle(link)
        s = link.stats()
        link.reset()
        conn = http.client.HTTPConnection("127.0.0.1", link.port, timeout=10)
        for _ in range(3):
            get(conn, "/a")
        conn.close()
        settle(link)
        one_by_one = link.stats()
    assert not errors, errors
    assert s.peak_in_flight == BARRIER_PARTIES  # the server held them all at once
    assert s.peak_connections == BARRIER_PARTIES
    assert peak_overlap(s.log, lambda r: r.path == "/together") == BARRIER_PARTIES
    assert (one_by_one.requests, one_by_one.peak_in_flight, one_by_one.connections) == (3, 1, 1)
    assert peak_overlap(one_by_one.log, lambda r: True) == 1


def closed_at_once(port: int) -> bool:
    """A new connection to the port is closed (or reset) without a byte."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            return sock.recv(10) == b""
        except ConnectionResetError:
            return True


def test_connections_beyond_the_limit_and_to_nowhere_are_refused(origin: Origin) -> None:
    with WanLink(origin.port, rtt_ms=0, max_connections=1) as link:
        held = socket.create_connection(("127.0.0.1", link.port), timeout=5)
        deadline = time.monotonic() + 5
        while link.stats().open_connections < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert closed_at_once(link.port)
        held.close()
        settle(link)
        assert link.stats().refused == 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nowhere = s.getsockname()[1]  # bound, never listening
        with WanLink(nowhere, rtt_ms=0) as link:
            assert closed_at_once(link.port)
            settle(link)
            assert (link.stats().refused, link.stats().connections) == (1, 0)


# -- HTTP/1.1 framing, fed in awkward pieces ---------------------------------------------
def frame(data: bytes, methods: list[str], step: int) -> list[tuple[int, str]]:
    """Feed a response stream `step` bytes at a time; (status, method) per completed
    response, as the link pairs them with the requests' methods."""
    pending = list(methods)
    done: list[tuple[int, str]] = []
    current: list[int] = []

    def head(line: str, headers: dict[str, str]) -> tuple[str, int]:
        status = int(line.split()[1])
        if status < 200:
            current.append(0)
            return ("none", 0)
        current.append(status)
        if pending[0] == "HEAD" or status in (204, 304):
            return ("none", 0)
        if headers.get("transfer-encoding") == "chunked":
            return ("chunked", 0)
        if "content-length" in headers:
            return ("length", int(headers["content-length"]))
        return ("close", 0)

    def end() -> None:
        status = current.pop()
        if status:
            done.append((status, pending.pop(0)))

    framer = Framer(head, end)
    for i in range(0, len(data), step):
        framer.feed(data[i : i + step])
    framer.eof()
    return done


@pytest.mark.parametrize("step", [1, 7, 1 << 20])
def test_framing_of_responses(step: int) -> None:
    stream = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
        b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n"  # a HEAD: no body
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4;ext=1\r\nwiki\r\n5\r\npedia\r\n0\r\nX-Trailer: y\r\n\r\n"
        b"HTTP/1.1 204 No Content\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"
    )
    methods = ["GET", "HEAD", "PUT", "DELETE", "GET"]
    assert frame(stream, methods, step) == [
        (200, "GET"),
        (200, "HEAD"),
        (201, "PUT"),
        (204, "DELETE"),
        (200, "GET"),
    ]


def test_framing_gives_up_on_an_oversized_head() -> None:
    framer = Framer(lambda line, headers: ("none", 0), lambda: None)
    framer.feed(b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * (100 * KiB))
    assert framer.broken
