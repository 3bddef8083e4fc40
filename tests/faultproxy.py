"""A fault-injecting HTTP proxy on loopback, for transfer tests.

It forwards every request to the real server, passing the client's Host header through so
signed URLs the server builds point back at the proxy (or, in front of an S3 server, so
SigV4 signatures made for the proxy's address hold). For object-data requests (paths under
/store/, or the given prefix) it can drop the connection after N bytes, stall, answer 5xx,
corrupt a byte at an object offset, or throttle; it counts the data bytes it served and
records the Range of each data GET.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from tests.loopback import Loopback

DATA_PATH = "/store/"
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
CHUNK = 64 * 1024


@dataclass
class Faults:
    """What to do to data responses; counters say how many more times."""

    drop_after: int = 0  # bytes of body before the connection is cut
    drops: int = 0
    stall_after: int = 0
    stall_seconds: float = 0.0
    stalls: int = 0
    status: int = 0  # answer this instead of forwarding
    statuses: int = 0
    corrupt_offset: int = -1  # object offset whose byte is flipped
    corruptions: int = 0
    delay_request: float = 0.0  # hold a data request this long before forwarding
    delays: int = 0
    rate: float = 0.0  # bytes per second cap per response (0 = unthrottled)


@dataclass
class Stats:
    data_bytes: int = 0
    data_requests: int = 0
    statuses: list[int] = field(default_factory=list)
    spec_requests: int = 0
    put_bytes: int = 0
    put_requests: int = 0
    ranges: list[str | None] = field(default_factory=list)  # the Range of each data GET
    held: int = 0  # data requests being held by `delays` now
    most_held: int = 0  # ... and the most at once
    stalled: int = 0  # data responses stalled now
    relaying: int = 0  # data responses being relayed now (a dead client's end at a write)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path) of each


class FaultProxy:
    def __init__(self, upstream_port: int, data_path: str = DATA_PATH) -> None:
        self.upstream_port = upstream_port
        self.data_path = data_path
        self.faults = Faults()
        self.stats = Stats()
        self.lock = threading.Lock()
        self.released = threading.Event()  # set on close: stalls end
        self.loopback = Loopback(self.handle)
        self.port, self.url = self.loopback.port, self.loopback.url

    def close(self) -> None:
        self.released.set()
        self.loopback.close()

    def _take(self, name: str) -> bool:
        """Use up one of a fault's remaining occurrences."""
        with self.lock:
            left = getattr(self.faults, name)
            if left > 0:
                setattr(self.faults, name, left - 1)
                return True
            return False

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        is_data = h.path.startswith(self.data_path) and "/heliograph" not in h.path
        with self.lock:
            self.stats.requests.append((h.command, h.path))
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else None
        if h.path.startswith("/download/") and not h.path.startswith("/download/ping"):
            with self.lock:
                self.stats.spec_requests += 1
        if is_data and h.command == "PUT":
            with self.lock:
                self.stats.put_requests += 1
                self.stats.put_bytes += length
        if is_data:
            with self.lock:
                self.stats.data_requests += 1
                if h.command == "GET":
                    self.stats.ranges.append(h.headers.get("Range"))
            if self._take("delays"):
                with self.lock:
                    self.stats.held += 1
                    self.stats.most_held = max(self.stats.most_held, self.stats.held)
                time.sleep(self.faults.delay_request)
                with self.lock:
                    self.stats.held -= 1
            if self._take("statuses"):
                self._send_plain(h, self.faults.status, b"injected failure\n")
                return
        headers = {k: v for k, v in h.headers.items() if k.lower() != "connection"}
        try:
            upstream = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
            upstream.request(h.command, h.path, body=body, headers=headers)
            resp = upstream.getresponse()
        except OSError:
            self._send_plain(h, 502, b"upstream unreachable\n")
            return
        with self.lock:
            self.stats.statuses.append(resp.status)
        h.send_response_only(resp.status, resp.reason)
        for key, value in resp.getheaders():
            if key.lower() not in (
                "connection",
                "transfer-encoding",
                "keep-alive",
                "date",
                "server",
            ):
                h.send_header(key, value)
        body_length = resp.getheader("Content-Length")
        if body_length is None and h.command != "HEAD":
            h.send_header("Connection", "close")
            h.close_connection = True
        h.end_headers()
        if h.command == "HEAD":
            resp.read()
            upstream.close()
            return
        base = 0
        match = CONTENT_RANGE.match(resp.getheader("Content-Range") or "")
        if match:
            base = int(match[1])
        drop = is_data and resp.status in (200, 206) and self._take("drops")
        stall = is_data and resp.status in (200, 206) and self._take("stalls")
        corrupt = is_data and resp.status in (200, 206) and self.faults.corrupt_offset >= 0
        sent = 0
        started = time.monotonic()
        if is_data:
            with self.lock:
                self.stats.relaying += 1
        try:
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                lo = base + sent
                if (
                    corrupt
                    and lo <= self.faults.corrupt_offset < lo + len(chunk)
                    and self._take("corruptions")
                ):
                    i = self.faults.corrupt_offset - lo
                    chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1 :]
                if drop and sent + len(chunk) > self.faults.drop_after:
                    keep = max(self.faults.drop_after - sent, 0)
                    h.wfile.write(chunk[:keep])
                    h.wfile.flush()
                    self._count(is_data, keep)
                    self._cut(h)
                    return
                if stall and sent + len(chunk) > self.faults.stall_after:
                    stall = False
                    self._stall()
                h.wfile.write(chunk)
                sent += len(chunk)
                self._count(is_data, len(chunk))
                if is_data and self.faults.rate:
                    ahead = sent / self.faults.rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
            h.wfile.flush()
        except OSError:
            h.close_connection = True
        finally:
            upstream.close()
            if is_data:
                with self.lock:
                    self.stats.relaying -= 1

    def _stall(self) -> None:
        """Hold the response for stall_seconds (or until the proxy closes)."""
        with self.lock:
            self.stats.stalled += 1
        try:
            self.released.wait(self.faults.stall_seconds)
        finally:
            with self.lock:
                self.stats.stalled -= 1

    def _count(self, is_data: bool, n: int) -> None:
        if is_data:
            with self.lock:
                self.stats.data_bytes += n

    @staticmethod
    def _cut(h: BaseHTTPRequestHandler) -> None:
        h.close_connection = True
        with contextlib.suppress(OSError):
            h.connection.shutdown(socket.SHUT_RDWR)

    @staticmethod
    def _send_plain(h: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
        h.send_response_only(status)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
