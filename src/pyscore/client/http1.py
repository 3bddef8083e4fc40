"""HTTP/1.1 over the standard library's sockets: what every request of score-client goes
through, JSON API calls and object bytes alike.

Why not http.client or httpx: importing httpx costs ~55 ms and http.client ~20 ms (it loads
the `email` package to parse headers), each paid by every start of the client before its
first request; this module needs only `socket` (and `ssl` for an https:// URL, when the first
one is met). Bodies are read with `readinto` into the caller's buffer (a BufferedReader hands
a large read straight to the socket), so object bytes are never copied in Python.
"""

from __future__ import annotations

import socket

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import Any, Optional

MAX_LINE = 64 * 1024
MAX_HEADERS = 200
READ_BUFFER = 64 * 1024
SEND_BLOCK = 1024 * 1024  # what a file-like body is read in
REDIRECTS = (301, 302, 303, 307, 308)
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset("0123456789abcdefABCDEF")


class InvalidUrl(ValueError):
    """Not an http:// or https:// URL with a host."""


class ConnectError(OSError):
    """No connection: refused, no such host, no route, a failed TLS handshake (the socket's
    or TLS error is the __cause__)."""


class ConnectTimeout(ConnectError):
    """The host did not accept a connection in time."""


class ProtocolError(OSError):
    """The peer did not answer as an HTTP/1.1 server."""


class RemoteDisconnected(ProtocolError):
    """The connection ended before an answer began (a kept-alive connection the server had
    closed, or a server that is not HTTP there)."""


class TooLarge(Exception):
    """A body longer than the reader's limit."""


# -- URLs -----------------------------------------------------------------------------------
class Url:
    """An http(s) URL in the pieces a request needs."""

    __slots__ = ("host", "port", "scheme", "target")

    def __init__(self, scheme: str, host: str, port: int, target: str) -> None:
        self.scheme, self.host, self.port, self.target = scheme, host, port, target

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]


_SPLIT: dict[str, Url] = {}


def split(url: str) -> Url:
    """An http:// or https:// URL's scheme, host, port and request target (path and query;
    the fragment dropped). Cached: a signed URL is split before each of its requests."""
    found = _SPLIT.get(url)
    if found is not None:
        return found
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https"):
        raise InvalidUrl(f"{url!r} is not an http:// or https:// URL")
    cut = len(rest)
    for c in "/?#":
        at = rest.find(c)
        if 0 <= at < cut:
            cut = at
    netloc, target = rest[:cut], rest[cut:].partition("#")[0]
    if not target.startswith("/"):
        target = "/" + target
    hostport = netloc.rpartition("@")[2]
    if hostport.startswith("["):  # an IPv6 literal
        host, _, after = hostport[1:].partition("]")
        port = after[1:] if after.startswith(":") else ""
    else:
        host, _, port = hostport.partition(":")
    if not host or (port and not port.isdigit()) or any(c in host for c in " \r\n\t"):
        raise InvalidUrl(f"{url!r} has no usable host")
    number = int(port) if port else (443 if scheme == "https" else 80)
    if number > 65535:
        raise InvalidUrl(f"{url!r} names no port")
    parsed = Url(scheme, host.lower(), number, target)
    if len(_SPLIT) > 4096:
        _SPLIT.clear()
    _SPLIT[url] = parsed
    return parsed


def join(base: str, location: str) -> str:
    """Where a redirect's Location points, from the URL that answered it."""
    if "://" in location.partition("?")[0]:
        return location
    b = split(base)
    netloc = f"[{b.host}]" if ":" in b.host else b.host
    if b.port != (443 if b.scheme == "https" else 80):
        netloc += f":{b.port}"
    if location.startswith("//"):
        return f"{b.scheme}:{location}"
    if location.startswith("/"):
        return f"{b.scheme}://{netloc}{location}"
    folder = b.path.rpartition("/")[0]
    return f"{b.scheme}://{netloc}{folder}/{location}"


def quote(text: str) -> str:
    """Percent-encoding of a query value (every byte but the unreserved ones)."""
    data = text.encode()
    if all(c in _UNRESERVED for c in data):
        return text
    return "".join(chr(c) if c in _UNRESERVED else f"%{c:02X}" for c in data)


def unquote(text: str) -> str:
    """A query value decoded ('+' is a space, %XX a byte of UTF-8)."""
    text = text.replace("+", " ")
    if "%" not in text:
        return text
    pieces = text.split("%")
    out = bytearray(pieces[0].encode())
    for piece in pieces[1:]:
        if len(piece) >= 2 and piece[0] in _HEX and piece[1] in _HEX:
            out.append(int(piece[:2], 16))
            out += piece[2:].encode()
        else:
            out += b"%" + piece.encode()
    return out.decode("utf-8", "replace")


def with_params(url: str, params: Optional[Mapping[str, Any]]) -> str:
    """The URL with these query parameters added (True/False as true/false, as httpx did)."""
    if not params:
        return url
    pairs = []
    for k, v in params.items():
        value = ("true" if v else "false") if isinstance(v, bool) else "" if v is None else str(v)
        pairs.append(f"{quote(str(k))}={quote(value)}")
    return url + ("&" if "?" in url else "?") + "&".join(pairs)


def query_of(url: str) -> dict[str, str]:
    """A URL's query parameters, names lower-cased, the first value of each."""
    out: dict[str, str] = {}
    for pair in url.partition("?")[2].partition("#")[0].split("&"):
        if pair:
            name, _, value = pair.partition("=")
            out.setdefault(unquote(name).lower(), unquote(value))
    return out


# -- messages ---------------------------------------------------------------------------------
class Headers(dict):
    """Response headers by lower-cased name; repeated ones joined with ', '."""

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        value: str = super().__getitem__(name.lower())
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())


class Response:
    """An answer whose body is read from its connection: `readinto` (object bytes) or
    `read` (a capped whole body). `reusable` once the body was read to its end."""

    def __init__(self, conn: Connection, status: int, reason: str, headers: Headers) -> None:
        self.conn, self.status, self.reason, self.headers = conn, status, reason, headers
        self.length: Optional[int] = None  # body bytes left, when the answer said
        self.chunked = False
        self.chunk_left = 0
        self.ended = False
        self.will_close = False

    def getheader(self, name: str, default: Any = None) -> Any:
        return self.headers.get(name, default)

    @property
    def reusable(self) -> bool:
        return self.ended and not self.will_close

    def readinto(self, view: memoryview) -> int:
        """Fill `view` from the body (less only at its end); 0 at the end of the body, or
        when the connection ended early (`ended` stays False then)."""
        if self.ended or not len(view):
            return 0
        file = self.conn.file
        assert file is not None
        if self.chunked:
            return self._read_chunks(view)
        if self.length is None:  # until the server closes
            n = file.readinto(view) or 0
            if n == 0:
                self.ended = True
            return n
        want = min(len(view), self.length)
        n = file.readinto(view[:want]) or 0
        self.length -= n
        if self.length == 0:
            self.ended = True
        return n

    def _read_chunks(self, view: memoryview) -> int:
        file = self.conn.file
        assert file is not None
        done = 0
        while done < len(view):
            if self.chunk_left == 0:
                line = file.readline(MAX_LINE)
                if not line.endswith(b"\n"):
                    return done
                size = line.split(b";", 1)[0].strip()
                try:
                    self.chunk_left = int(size, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size {size[:20]!r}") from None
                if self.chunk_left == 0:
                    for _ in range(MAX_HEADERS):  # trailers, then the blank line
                        if file.readline(MAX_LINE) in (b"\r\n", b"\n", b""):
                            break
                    self.ended = True
                    return done
            want = min(len(view) - done, self.chunk_left)
            n = file.readinto(view[done : done + want]) or 0
            if n == 0:
                return done
            done += n
            self.chunk_left -= n
            if self.chunk_left == 0:
                file.readline(MAX_LINE)  # the CRLF after the chunk
        return done

    def read(self, limit: int) -> bytes:
        """The rest of the body; TooLarge beyond `limit` bytes."""
        if self.length is not None:
            if self.length > limit:
                raise TooLarge(f"{self.length:,} bytes")
            buf = bytearray(self.length)
            view, got = memoryview(buf), 0
            while got < len(buf):
                n = self.readinto(view[got:])
                if n == 0:
                    break
                got += n
            if got < len(buf):
                raise ProtocolError(f"the answer ended after {got} of {len(buf)} bytes")
            return bytes(buf)
        out = bytearray()
        view = memoryview(bytearray(READ_BUFFER))
        while True:
            n = self.readinto(view)
            if n == 0:
                break
            out += view[:n]
            if len(out) > limit:
                raise TooLarge(f"over {limit:,} bytes")
        if not self.ended:
            raise ProtocolError("the answer's chunks ended early")
        return bytes(out)

    def discard(self, most: int = 64 * 1024) -> None:
        """Read and drop what is left of a short body, so its connection can be reused."""
        try:
            self.read(most)
        except (TooLarge, OSError):
            self.will_close = True


class Connection:
    """One HTTP/1.1 connection, opened on its first request, kept alive between requests."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        timeout: float,
        connect_timeout: float,
        context: Any = None,
    ) -> None:
        """`context`: the TLS context for https (default: the client's shared one)."""
        self.scheme, self.host, self.port, self.context = scheme, host, port, context
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self.sock: Any = None
        self.file: Any = None
        default = 443 if scheme == "https" else 80
        name = f"[{host}]" if ":" in host else host
        self.host_header = name if port == default else f"{name}:{port}"
        self.used = False  # a request was answered on it (a reused one may have gone stale)

    def open(self) -> None:
        try:
            sock = socket.create_connection((self.host, self.port), self.connect_timeout)
        except (socket.timeout, TimeoutError) as exc:
            raise ConnectTimeout(f"timed out connecting to {self.host}:{self.port}") from exc
        except OSError as exc:
            raise ConnectError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.scheme == "https":
                context = self.context
                if context is None:
                    from pyscore.client import tls

                    context = tls.context()
                try:
                    sock = context.wrap_socket(sock, server_hostname=self.host)
                except (socket.timeout, TimeoutError) as exc:
                    raise ConnectTimeout(f"TLS handshake with {self.host} timed out") from exc
                except OSError as exc:  # ssl.SSLError is one
                    raise ConnectError(f"TLS handshake with {self.host} failed: {exc}") from exc
            sock.settimeout(self.timeout)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.file = sock.makefile("rb", buffering=READ_BUFFER)
        self.used = False

    def stale(self) -> bool:
        """An idle kept-alive connection that the server closed (or wrote to: no answer is
        due) is readable; one that is not may be used."""
        if self.sock is None:
            return False
        import select

        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        return bool(poller.poll(0))

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.sock is not None:
            self.sock.close()
        self.sock = self.file = None

    def settimeout(self, timeout: float) -> None:
        if self.sock is not None and timeout != self.timeout:
            self.sock.settimeout(timeout)
        self.timeout = timeout

    def request(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]],
        body: Any = None,
    ) -> Response:
        """Send a request and read its answer's status and headers. `body`: bytes, a
        buffer, or a file-like object with read() and len()."""
        if self.sock is None:
            self.open()
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host_header}"]
        for name, value in headers:
            if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
                raise ValueError(f"header {name!r} holds a line break")
            lines.append(f"{name}: {value}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        sock = self.sock
        if body is None:
            sock.sendall(head)
        elif hasattr(body, "read"):
            sock.sendall(head)
            while True:
                chunk = body.read(SEND_BLOCK)
                if not chunk:
                    break
                sock.sendall(chunk)
        elif len(body) <= 64 * 1024:
            sock.sendall(head + bytes(body))
        else:
            sock.sendall(head)
            sock.sendall(body)
        return self._answer(method)

    def _answer(self, method: str) -> Response:
        file = self.file
        while True:
            line = file.readline(MAX_LINE + 1)
            if not line:
                raise RemoteDisconnected("the server closed the connection without answering")
            version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
            code, _, reason = rest.partition(" ")
            if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
                raise ProtocolError(f"not an HTTP/1.1 answer: {line[:40]!r}")
            headers = self._headers()
            status = int(code)
            if status == 100 or (102 <= status < 200):
                continue  # interim answers: the real one follows
            break
        r = Response(self, status, reason, headers)
        connection = headers.get("connection", "").lower()
        r.will_close = "close" in connection or (
            version == "HTTP/1.0" and "keep-alive" not in connection
        )
        if method == "HEAD" or status in (101, 204, 304):
            r.length = 0
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            r.chunked = True
        elif "content-length" in headers:
            value = headers["content-length"].split(",")[0].strip()
            if not value.isdigit():
                raise ProtocolError(f"bad Content-Length {value[:20]!r}")
            r.length = int(value)
        else:
            r.will_close = True  # the body ends when the connection does
        if r.length == 0:
            r.ended = True
        self.used = True
        return r

    def _headers(self) -> Headers:
        headers = Headers()
        for _ in range(MAX_HEADERS):
            line = self.file.readline(MAX_LINE + 1)
            if line in (b"\r\n", b"\n"):
                return headers
            if not line.endswith(b"\n"):
                raise ProtocolError("the answer's headers ended early or a line is too long")
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                continue
            key, value = name.strip().lower(), value.strip()
            headers[key] = f"{dict.get(headers, key)}, {value}" if key in headers else value
        raise ProtocolError("too many header lines in the answer")


# -- a shared pool, for JSON calls from many threads ---------------------------------------
class Answer:
    """A whole answer: status, headers and body (already read), and the URL that gave it."""

    def __init__(self, url: str, status: int, reason: str, headers: Headers, content: bytes):
        self.url, self.status_code, self.reason_phrase = url, status, reason
        self.headers, self.content = headers, content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        import json

        return json.loads(self.content)


class Pool:
    """Kept-alive connections shared by threads: each request takes an idle one (or opens
    one) and gives it back once its answer is read."""

    def __init__(
        self, timeout: float, connect_timeout: float, keep: int = 64, context: Any = None
    ) -> None:
        import threading

        self.timeout, self.connect_timeout, self.keep = timeout, connect_timeout, keep
        self.context = context
        self.idle: dict[tuple[str, str, int], list[Connection]] = {}
        self.lock = threading.Lock()

    def take(self, url: Url) -> Connection:
        with self.lock:
            idle = self.idle.get(url.origin) or []
            while idle:
                conn = idle.pop()
                if not conn.stale():
                    return conn
                conn.close()
        return Connection(
            url.scheme, url.host, url.port, self.timeout, self.connect_timeout, self.context
        )

    def give(self, conn: Connection) -> None:
        with self.lock:
            idle = self.idle.setdefault((conn.scheme, conn.host, conn.port), [])
            if len(idle) < self.keep:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self.lock:
            conns = [c for idle in self.idle.values() for c in idle]
            self.idle.clear()
        for conn in conns:
            conn.close()

    def fetch(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: Optional[bytes] = None,
        limit: int = 16 * 1024 * 1024,
        timeout: Optional[float] = None,
        redirects: int = 20,
    ) -> Answer:
        """One call, its body read up to `limit` bytes (TooLarge beyond), following
        redirects (the Authorization header only to the origin it was meant for)."""
        first = split(url).origin
        for _ in range(redirects + 1):
            answer = self._once(method, url, headers, body, limit, timeout)
            location = answer.headers.get("location")
            if answer.status_code not in REDIRECTS or not location:
                return answer
            url = join(url, location)
            if answer.status_code == 303 or (answer.status_code in (301, 302) and method == "POST"):
                method, body = ("GET" if method != "HEAD" else "HEAD"), None
            if split(url).origin != first:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        raise ProtocolError(f"more than {redirects} redirects")

    def get_into(
        self,
        url: str,
        headers: Mapping[str, str],
        write: Callable[[memoryview], Any],
        limit: Optional[int] = None,
        redirects: int = 20,
    ) -> int:
        """GET a URL (following redirects, as `fetch`) and hand its body to `write` in
        pieces; returns the status (the body of an answer >= 400 is not handed on);
        TooLarge beyond `limit` bytes."""
        for _ in range(redirects + 1):
            u = split(url)
            conn = self.take(u)
            try:
                r = conn.request("GET", u.target, list(headers.items()))
                location = r.headers.get("location")
                if r.status in REDIRECTS and location:
                    r.discard()
                    url = join(url, location)
                    if split(url).origin != u.origin:
                        headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
                    continue
                if r.status < 400:
                    view, got = memoryview(bytearray(1024 * 1024)), 0
                    while n := r.readinto(view):
                        got += n
                        if limit is not None and got > limit:
                            raise TooLarge(f"over {limit:,} bytes")
                        write(view[:n])
                    if not r.ended:
                        raise ProtocolError("the answer ended early")
                else:
                    r.discard()
            except BaseException:
                conn.close()
                raise
            if r.reusable:
                self.give(conn)
            else:
                conn.close()
            return r.status
        raise ProtocolError(f"more than {redirects} redirects")

    def _once(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: Optional[bytes],
        limit: int,
        timeout: Optional[float],
    ) -> Answer:
        u = split(url)
        pairs = list(headers.items())
        if body is not None:
            pairs.append(("Content-Length", str(len(body))))
        elif method in ("POST", "PUT", "PATCH"):
            pairs.append(("Content-Length", "0"))
        for attempt in (0, 1):
            conn = self.take(u)
            reused = conn.sock is not None
            conn.settimeout(timeout if timeout is not None else self.timeout)
            try:
                r = conn.request(method, u.target, pairs, body)
                content = r.read(limit)
            except (RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                if reused and attempt == 0:
                    continue  # a kept-alive connection the server had closed: once more
                raise
            except BaseException:
                conn.close()
                raise
            conn.settimeout(self.timeout)
            if r.reusable:
                self.give(conn)
            else:
                conn.close()
            return Answer(url, r.status, r.reason, r.headers, content)
        raise RemoteDisconnected("unreachable")  # pragma: no cover - the loop returns
