"""An emulated long-distance link on loopback: a TCP proxy in front of one host:port.

The kernel here has no netem, so latency is emulated in user space (asyncio, one thread):

- delay line: every chunk read from one side is delivered to the other side RTT/2 after it
  was sent (after it finished crossing the rate cap), in order; chunks travel concurrently,
  so throughput is kept (a delay, not a per-chunk sleep that serializes);
- handshake: a new connection costs one RTT: the client's first bytes are not sent before
  RTT has passed since the connection was accepted (what a SYN / SYN-ACK exchange costs);
- window: at most `window` bytes per connection and direction are unacknowledged; a chunk's
  bytes count from when it is sent until its acknowledgement is back (delivery + RTT/2), so
  one connection moves at most window / RTT;
- rate cap: one serializing bottleneck per direction shared by all connections (`rate`
  bytes/s; 0 = none), like a full-duplex access link;
- counters: connections, HTTP/1.1 requests and responses, requests in flight (now and at the
  most), bytes each way, and a log of request lines (method, path, Range header, status,
  times) that tests and benchmarks can inspect.

Requests in flight are found by HTTP/1.1 framing of both directions (request and response
heads; bodies by Content-Length, chunked encoding, or up to the close; no body for HEAD,
1xx, 204 and 304): a request is in flight from when its head enters the link on the client's
side until the last byte of its response is delivered to the client (or the connection
ends). A connection whose bytes cannot be framed as HTTP/1.1 (TLS, HTTP/2, a 101 upgrade, a
head over 64 KiB) is still forwarded, but stops being counted and adds to `unparsed`.

Bounded: per-connection buffering is the window in each direction, connections beyond
`max_connections` are refused, a connection with no bytes either way for `idle_timeout`
seconds is closed, the upstream connect times out after `connect_timeout`, and the request
log keeps at most `log_limit` entries (`log_dropped` counts the rest).

    with WanLink(target_port, rtt_ms=100) as link:   # link.url points at the target
        ...
        link.stats().requests, link.stats().peak_in_flight, link.stats().log
    link.configure(rtt_ms=25)   # applies to chunks sent from now on
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

MiB = 1024 * 1024
CHUNK = 256 * 1024  # most bytes read from a socket at once
HEAD_LIMIT = 64 * 1024  # an HTTP head larger than this is not framed
UP, DOWN = 0, 1  # client -> server, server -> client


@dataclass
class RequestRecord:
    """One HTTP request seen on the link. Times are seconds since the link started."""

    connection: int  # 1, 2, ... in order of acceptance
    method: str
    path: str
    range: str | None  # the Range header, if any
    sent: float  # when the request's head entered the link on the client's side
    done: float | None = None  # when its response's last byte reached the client
    status: int | None = None  # the final response's status (None: no response)


@dataclass
class LinkStats:
    connections: int = 0  # accepted and connected upstream
    refused: int = 0  # beyond max_connections, or the target did not accept
    open_connections: int = 0
    peak_connections: int = 0  # open at once, at the most
    requests: int = 0  # request heads seen client -> server
    responses: int = 0  # final responses completed server -> client
    in_flight: int = 0  # requests sent whose response has not completed
    peak_in_flight: int = 0
    bytes_up: int = 0  # delivered client -> server
    bytes_down: int = 0  # delivered server -> client
    unparsed: int = 0  # connections whose bytes could not be framed as HTTP/1.1
    log: list[RequestRecord] = field(default_factory=list)
    log_dropped: int = 0

    def lines(self) -> list[str]:
        """The request log as 'METHOD path [Range]' strings, in the order sent."""
        return [f"{r.method} {r.path}" + (f" [{r.range}]" if r.range else "") for r in self.log]


def peak_overlap(records: list[RequestRecord], keep: Callable[[RequestRecord], bool]) -> int:
    """The most of the kept requests in flight at once, from their logged times."""
    events = []
    for r in records:
        if keep(r):
            events.append((r.sent, 1))
            events.append((r.done if r.done is not None else float("inf"), -1))
    events.sort(key=lambda e: (e[0], e[1]))  # an end before a start at the same instant
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


class Framer:
    """Finds message boundaries in one direction of an HTTP/1.1 byte stream, fed in pieces.

    `on_head(start_line, headers)` is called for every message head and returns how its body
    is framed: ("length", n), ("chunked", 0), ("close", 0), ("none", 0), or ("broken", 0) to
    stop framing; `on_end()` is called when a message (head and body) is complete. After
    "broken", or a head over HEAD_LIMIT, `broken` is set and the rest is ignored."""

    def __init__(
        self,
        on_head: Callable[[str, dict[str, str]], tuple[str, int]],
        on_end: Callable[[], None],
    ) -> None:
        self.on_head, self.on_end = on_head, on_end
        self.state = "head"
        self.buf = bytearray()
        self.left = 0
        self.broken = False

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self.broken:
            if self.state in ("head", "size", "trailer"):
                view = self._line_state(view)
            elif self.state in ("body", "chunk"):
                n = min(self.left, len(view))
                self.left -= n
                view = view[n:]
                if self.left == 0:
                    if self.state == "body":
                        self._end()
                    else:
                        self.state, self.left = "chunk-crlf", 2
            elif self.state == "chunk-crlf":
                n = min(self.left, len(view))
                self.left -= n
                view = view[n:]
                if self.left == 0:
                    self.state = "size"
            else:  # "close": everything up to the end of the stream
                return

    def eof(self) -> None:
        """The stream ended: a body delimited by the close is complete."""
        if not self.broken and self.state == "close":
            self._end()

    def _end(self) -> None:
        self.state = "head"
        self.on_end()

    def _line_state(self, view: memoryview) -> memoryview:
        """Accumulate up to the end of a head (blank line) or of one line (chunk size)."""
        end_mark = b"\r\n\r\n" if self.state == "head" else b"\r\n"
        start = max(len(self.buf) - len(end_mark) + 1, 0)
        self.buf += view
        at = self.buf.find(end_mark, start)
        if at < 0:
            if len(self.buf) > HEAD_LIMIT:
                self.broken = True
            return memoryview(b"")
        rest = memoryview(bytes(self.buf[at + len(end_mark) :]))
        text = bytes(self.buf[:at]).decode("latin-1")
        self.buf.clear()
        if self.state == "head":
            if not text.strip():  # stray blank lines between messages
                return rest
            self._head(text)
        elif self.state == "size":
            try:
                size = int(text.split(";", 1)[0].strip(), 16)
            except ValueError:
                self.broken = True
                return memoryview(b"")
            if size == 0:
                self.state = "trailer"
            else:
                self.state, self.left = "chunk", size
        else:  # trailer lines, until an empty one
            if text == "":
                self._end()
        return rest

    def _head(self, text: str) -> None:
        lines = text.split("\r\n")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        kind, n = self.on_head(lines[0], headers)
        if kind == "broken":
            self.broken = True
        elif kind == "length" and n > 0:
            self.state, self.left = "body", n
        elif kind == "chunked":
            self.state = "size"
        elif kind == "close":
            self.state = "close"
        else:
            self._end()


def body_of(headers: dict[str, str]) -> tuple[str, int] | None:
    """Framing from Transfer-Encoding / Content-Length, or None when neither says."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return ("chunked", 0)
    if "content-length" in headers:
        try:
            return ("length", int(headers["content-length"].split(",")[0]))
        except ValueError:
            return ("broken", 0)
    return None


class _Direction:
    """One direction of one connection: its unacknowledged bytes and the delay line."""

    def __init__(self) -> None:
        self.unacked = 0
        self.credit = asyncio.Event()
        self.queue: asyncio.Queue = asyncio.Queue()  # (due, bytes) or None; bounded by bytes

    def ack(self, n: int) -> None:
        self.unacked -= n
        self.credit.set()


class _Connection:
    def __init__(self, link: WanLink, number: int, accepted: float) -> None:
        self.link, self.number, self.accepted = link, number, accepted
        self.last_activity = accepted
        self.dirs = (_Direction(), _Direction())
        self.pending: deque[RequestRecord] = deque()  # sent, response not yet complete
        self.requests = Framer(self._request_head, lambda: None)
        self.responses = Framer(self._response_head, self._response_end)
        self.counted = True  # False once framing failed
        self._final: int | None = None  # the status of the response being framed

    # -- framing callbacks (on the loop thread) ----------------------------------------
    def _request_head(self, line: str, headers: dict[str, str]) -> tuple[str, int]:
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return self._broken()
        link = self.link
        record = RequestRecord(self.number, parts[0], parts[1], headers.get("range"), link.clock())
        self.pending.append(record)
        with link.lock:
            s = link._stats
            s.requests += 1
            s.in_flight += 1
            s.peak_in_flight = max(s.peak_in_flight, s.in_flight)
            if len(s.log) < link.log_limit:
                s.log.append(record)
            else:
                s.log_dropped += 1
        return body_of(headers) or ("none", 0)

    def _response_head(self, line: str, headers: dict[str, str]) -> tuple[str, int]:
        parts = line.split(" ", 2)
        try:
            status = int(parts[1])
        except (IndexError, ValueError):
            return self._broken()
        if not parts[0].startswith("HTTP/1.") or not self.pending or status == 101:
            return self._broken()
        if status < 200:  # 100 Continue and friends: the final answer is still to come
            return ("none", 0)
        self._final = status
        self.pending[0].status = status
        if self.pending[0].method == "HEAD" or status in (204, 304):
            return ("none", 0)
        return body_of(headers) or ("close", 0)

    def _response_end(self) -> None:
        if self._final is None:
            return  # the end of an interim (1xx) response
        self._final = None
        self._finish(self.pending.popleft(), complete=True)

    def _finish(self, record: RequestRecord, complete: bool) -> None:
        record.done = self.link.clock()
        with self.link.lock:
            s = self.link._stats
            s.in_flight -= 1
            if complete:
                s.responses += 1

    def _broken(self) -> tuple[str, int]:
        if self.counted:
            self.counted = False
            with self.link.lock:
                self.link._stats.unparsed += 1
        return ("broken", 0)

    def close(self) -> None:
        """The connection ended: requests still waiting never got (all of) a response."""
        while self.pending:
            self._finish(self.pending.popleft(), complete=False)
        self.requests.broken = self.responses.broken = True


class WanLink:
    """A loopback TCP proxy at `url` to 127.0.0.1:`target_port` that behaves like a long
    link: `rtt_ms` round trip, `window` bytes in flight per connection and direction,
    `rate` bytes/s shared per direction (0: no cap). See the module's documentation."""

    def __init__(
        self,
        target_port: int,
        rtt_ms: float = 100.0,
        window: int = 4 * MiB,
        rate: float = 125_000_000,
        target_host: str = "127.0.0.1",
        max_connections: int = 512,
        idle_timeout: float = 300.0,
        connect_timeout: float = 10.0,
        log_limit: int = 200_000,
    ) -> None:
        self.target = (target_host, target_port)
        self.rtt = rtt_ms / 1000
        self.window, self.rate = window, rate
        self.max_connections, self.idle_timeout = max_connections, idle_timeout
        self.connect_timeout, self.log_limit = connect_timeout, log_limit
        self.lock = threading.Lock()
        self._stats = LinkStats()
        self._link_free = [0.0, 0.0]  # when each direction's bottleneck is next free
        self._numbers = 0
        self._started = time.monotonic()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="wanlink", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise RuntimeError(f"the link did not start: {self._error}")
        self.url = f"http://127.0.0.1:{self.port}"

    # -- public ------------------------------------------------------------------------
    def configure(
        self, rtt_ms: float | None = None, window: int | None = None, rate: float | None = None
    ) -> None:
        """Change the link; chunks sent from now on see the new values."""
        if rtt_ms is not None:
            self.rtt = rtt_ms / 1000
        if window is not None:
            self.window = window
        if rate is not None:
            self.rate = rate

    def stats(self) -> LinkStats:
        """A copy of the counters and the log (the log's records are copies too)."""
        with self.lock:
            s = self._stats
            return replace(s, log=[replace(r) for r in s.log])

    def reset(self) -> None:
        """Zero the counters and the log (open connections and requests in flight stay)."""
        with self.lock:
            s = self._stats
            self._stats = LinkStats(
                open_connections=s.open_connections,
                peak_connections=s.open_connections,
                in_flight=s.in_flight,
                peak_in_flight=s.in_flight,
            )

    def clock(self) -> float:
        return time.monotonic() - self._started

    def close(self) -> None:
        if self._loop.is_closed():
            return
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        with contextlib.suppress(Exception):
            fut.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> WanLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the loop thread ----------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._tasks: set[asyncio.Task] = set()
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._accept, "127.0.0.1", 0, limit=CHUNK, backlog=1024)
            )
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as exc:  # reported by __init__
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    async def _shutdown(self) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        await self._server.wait_closed()

    async def _accept(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter):
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(creader, cwriter)
        finally:
            self._tasks.discard(task)

    async def _serve(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter):
        loop = asyncio.get_running_loop()
        accepted = loop.time()
        with self.lock:
            s = self._stats
            refuse = s.open_connections >= self.max_connections
            if refuse:
                s.refused += 1
        if refuse:
            cwriter.transport.abort()
            return
        try:
            ureader, uwriter = await asyncio.wait_for(
                asyncio.open_connection(*self.target, limit=CHUNK), self.connect_timeout
            )
        except (OSError, asyncio.TimeoutError):
            with self.lock:
                self._stats.refused += 1
            cwriter.transport.abort()
            return
        for w in (cwriter, uwriter):
            sock = w.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._numbers += 1
        conn = _Connection(self, self._numbers, accepted)
        with self.lock:
            s = self._stats
            s.connections += 1
            s.open_connections += 1
            s.peak_connections = max(s.peak_connections, s.open_connections)
        tasks = [
            asyncio.ensure_future(self._send(conn, UP, creader, accepted + self.rtt)),
            asyncio.ensure_future(self._deliver(conn, UP, uwriter)),
            asyncio.ensure_future(self._send(conn, DOWN, ureader, accepted)),
            asyncio.ensure_future(self._deliver(conn, DOWN, cwriter)),
        ]
        failed = True
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            failed = any(t.cancelled() or t.exception() is not None for t in done)
            failed = failed or len(done) < len(tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for w in (cwriter, uwriter):
                if failed:  # a reset on one side: reset the other too
                    w.transport.abort()
                else:  # both sides ended: close once what is buffered is written
                    w.close()
            conn.close()
            with self.lock:
                self._stats.open_connections -= 1

    async def _send(
        self, conn: _Connection, way: int, reader: asyncio.StreamReader, hold_until: float
    ) -> None:
        """Read one side and put its bytes on the delay line, within the window and rate."""
        loop = asyncio.get_running_loop()
        d = conn.dirs[way]
        while True:
            while d.unacked >= self.window:
                d.credit.clear()
                await d.credit.wait()
            want = min(CHUNK, self.window - d.unacked)
            try:
                data = await asyncio.wait_for(reader.read(want), self.idle_timeout)
            except asyncio.TimeoutError:
                if loop.time() - conn.last_activity >= self.idle_timeout:
                    raise
                continue
            now = loop.time()
            conn.last_activity = now
            if not data:
                d.queue.put_nowait(None)
                return
            start = max(now, hold_until)
            if self.rate > 0:
                start = max(start, self._link_free[way])
                start += len(data) / self.rate
                self._link_free[way] = start
            d.unacked += len(data)
            if way == UP and conn.counted and not conn.requests.broken:
                conn.requests.feed(data)
            d.queue.put_nowait((start + self.rtt / 2, data))

    async def _deliver(self, conn: _Connection, way: int, writer: asyncio.StreamWriter) -> None:
        """Deliver the delay line's chunks when due; acknowledge them RTT/2 later."""
        loop = asyncio.get_running_loop()
        d = conn.dirs[way]
        while True:
            item = await d.queue.get()
            if item is None:
                if way == DOWN and conn.counted:
                    conn.responses.eof()
                if writer.can_write_eof():
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                return
            due, data = item
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
            now = loop.time()
            conn.last_activity = now
            with self.lock:
                if way == UP:
                    self._stats.bytes_up += len(data)
                else:
                    self._stats.bytes_down += len(data)
            if way == DOWN and conn.counted and not conn.responses.broken:
                conn.responses.feed(data)
            if self.rtt > 0:
                loop.call_at(now + self.rtt / 2, d.ack, len(data))
            else:
                d.ack(len(data))
