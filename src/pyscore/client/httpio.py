"""The byte path: ranged GETs and part PUTs on signed URLs, without per-chunk allocations.

Object bytes are read with `readinto` straight into a reused buffer and written with `pwrite`
(http1.py's connections: the standard library's sockets, nothing else loaded), 2-3 GB/s per
core. One `Connections` per thread keeps connections alive.
"""

from __future__ import annotations

import contextlib
import socket
import time

from pyscore import __version__
from pyscore.client.errors import NotFoundError, ScoreError, UnreachableError
from pyscore.client.http1 import Connection, Response, query_of, split
from pyscore.client.retry import Transient

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

USER_AGENT = f"pyscore-score-client/{__version__}"
# The most one request reads before handing bytes on. Small enough to stay in the CPU's
# cache between the socket's copy into it and pwrite's copy out (with 4 MiB buffers, 8 at
# once, pwrite's copy was a third of a download's CPU samples under `perf`; 256 KiB cut the
# client's system time by a fifth), large enough that Python's work per chunk is noise.
BUFFER = 256 * 1024
BUFFERS_BUDGET = 64 * 1024 * 1024  # what all of a transfer's buffers may hold together
MIN_BUFFER = 256 * 1024
# Requests for at most this many bytes are latency-bound: they run many at once whatever
# --parallel says (which bounds the connections moving big bodies).
SMALL_BODY = 1024 * 1024
# A signed URL this close to its expiry is renewed before use: the one margin for every
# transfer (download, mount, view), long enough for a request to wait in a queue and cross
# a slow link.
RENEW_MARGIN = 60.0


def buffer_cap(parallel: int) -> int:
    """How large each of `parallel` concurrent requests' buffers may grow: 4 MiB each at the
    usual parallelism, less when many run at once, so all of them stay within the budget."""
    return max(MIN_BUFFER, min(BUFFER, BUFFERS_BUDGET // max(parallel, 1)))


class Buffer:
    """A thread's reusable receive buffer, grown to the request's size up to a cap: a 2 KiB
    file never holds a 4 MiB buffer."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray(0)

    def view(self, wanted: int) -> memoryview:
        size = max(1, min(self.cap, wanted))
        if len(self.data) < size:
            self.data = bytearray(size)
        return memoryview(self.data)[:size]


class UrlRejected(ScoreError):
    """The object store refused a signed URL (expired or altered): get fresh URLs."""


class Connections:
    """Keep-alive connections of one thread, one per scheme://host:port."""

    def __init__(self, timeout: float, connect_timeout: float | None = None) -> None:
        self.timeout = timeout
        self.connect_timeout = connect_timeout or timeout
        self.pool: dict[tuple[str, str, int], Connection] = {}
        self.context: Any = None  # TLS: the client's shared context unless set

    def get(self, origin: tuple[str, str, int]) -> Connection:
        conn = self.pool.get(origin)
        if conn is None:
            scheme, host, port = origin
            conn = Connection(scheme, host, port, self.timeout, self.connect_timeout, self.context)
            self.pool[origin] = conn
        elif conn.used and conn.stale():
            conn.close()  # the server closed it while idle: a new one, not a failed request
        return conn

    def drop(self, origin: tuple[str, str, int]) -> None:
        conn = self.pool.pop(origin, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for conn in self.pool.values():
            conn.close()
        self.pool.clear()

    def abort(self) -> None:
        """From another thread: end the requests under way on these connections now (a
        read blocked on a stalled server returns at once), leaving the closing to their
        owner. What Ctrl-C does to a transfer."""
        for conn in list(self.pool.values()):
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


_QUERIES: dict[str, dict[str, str]] = {}


def _query(url: str) -> dict[str, str]:
    """A URL's query, names lower-cased (first value of each). Cached: each signed URL is
    asked about a few times (expiry before each request, whether it binds its Range), and
    a thousand small files meant a thousand times that many parses. Read-only to callers."""
    found = _QUERIES.get(url)
    if found is None:
        if len(_QUERIES) > 1024:
            _QUERIES.clear()
        found = _QUERIES[url] = query_of(url)
    return found


def _utc(text: str, form: str) -> float:
    """Epoch seconds of a UTC time written as `form` (time.strptime's)."""
    import calendar

    return float(calendar.timegm(time.strptime(text, form)))


def url_expiry(url: str) -> float | None:
    """When a signed URL stops working (epoch seconds), if the URL says: pyscore `exp`,
    S3 SigV4 X-Amz-Date + X-Amz-Expires, SigV2 `Expires`, Azure SAS `se`."""
    query = _query(url)
    try:
        if "exp" in query:
            return float(query["exp"])
        if "x-amz-date" in query and "x-amz-expires" in query:
            return _utc(query["x-amz-date"], "%Y%m%dT%H%M%SZ") + int(query["x-amz-expires"])
        if "expires" in query:
            return float(query["expires"])
        if "se" in query:
            return _utc(query["se"][:19], "%Y-%m-%dT%H:%M:%S")
    except (ValueError, OverflowError):
        return None
    return None


def stale(url: str, now: float | None = None) -> bool:
    """Whether a signed URL expires within RENEW_MARGIN (False when the URL does not say)."""
    expiry = url_expiry(url)
    return expiry is not None and expiry - (time.time() if now is None else now) < RENEW_MARGIN


def binds_range(url: str) -> bool:
    """Whether a signed GET URL may only be fetched with exactly the Range it was signed for.

    The original score-server signs each download part's Range header into its S3 URL
    (SigV4 `X-Amz-SignedHeaders=host;range`): the store answers 403 to a sub-range, a resumed
    tail, or no Range. So a part is fetched whole with its own Range unless the URL is known
    not to bind it: pyscore's local store (`sig` + `Expires`, or the older `exp`; any range
    inside the signed one),
    SigV4 URLs whose signed headers lack `range`, SigV2 URLs (SigV2 cannot sign a Range).
    Any other shape binds, as far as we can tell."""
    query = _query(url)
    if "x-amz-signedheaders" in query:
        return "range" in query["x-amz-signedheaders"].lower().split(";")
    ours = "sig" in query and ("expires" in query or "exp" in query)
    if ours and split(url).path.startswith("/store/objects/"):
        return False
    return not ("awsaccesskeyid" in query and "signature" in query and "expires" in query)


def _read_error(resp: Response) -> str:
    try:
        return resp.read(2048).decode("utf-8", "replace").strip().splitlines()[0][:200]
    except (IndexError, OSError, ValueError, Exception):
        return ""


def _status_error(resp: Response, what: str) -> Exception:
    status = resp.status
    detail = _read_error(resp)
    if status in (401, 403):
        return UrlRejected(f"{what}: object store refused the signed URL ({status} {detail})")
    if status == 404:
        return NotFoundError(f"{what}: object store has no such object ({detail})")
    error = ScoreError(f"{what}: object store answered {status} {detail}")
    if status >= 500 or status in (408, 429):
        transient = Transient()
        transient.__cause__ = error
        return transient
    return error


def _content_range(value: str) -> int | None:
    """The first byte of a 'bytes first-last/size' Content-Range, None if it is not one."""
    unit, _, spec = value.strip().partition(" ")
    first, dash, _ = spec.partition("-")
    if unit != "bytes" or not dash or not first.isdigit():
        return None
    return int(first)


def _unreachable(what: str, exc: BaseException) -> Transient:
    timed_out = isinstance(exc, (socket.timeout, TimeoutError))  # not one class before 3.10
    kind = "timed out" if timed_out else type(exc).__name__
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    transient = Transient()
    transient.__cause__ = UnreachableError(f"{what}: {kind}: {cause}")
    return transient


def get_range(
    conns: Connections,
    url: str,
    start: int,
    end: int,
    buf: memoryview,
    sink: Callable[[memoryview, int], None],
    what: str,
    whole: bool = False,
) -> None:
    """GET [start, end) of the object at url; hand each received chunk to sink(chunk, offset).
    `whole`: [start, end) is the whole object and the URL does not bind a Range, so ask
    without one (a store serves a whole file faster, zero-copy, than a range of it).

    Raises Transient for what is worth retrying from the last byte sunk (drops, stalls, 5xx),
    UrlRejected for 401/403, and ScoreError for the rest.
    """
    u = split(url)
    conn = conns.get(u.origin)
    try:
        headers = [("User-Agent", USER_AGENT), ("Accept-Encoding", "identity")]
        if not whole:
            headers.append(("Range", f"bytes={start}-{end - 1}"))
        resp = conn.request("GET", u.target, headers)
        if resp.status == 206:
            if _content_range(resp.headers.get("content-range", "")) != start:
                conns.drop(u.origin)
                raise ScoreError(
                    f"{what}: object store sent the wrong range "
                    f"({resp.getheader('Content-Range')!r} for {start}-{end - 1})"
                )
        elif resp.status == 200 and start == 0:
            pass  # the store ignored Range; the first (end - start) bytes are ours
        elif resp.status == 200:
            conns.drop(u.origin)
            raise ScoreError(f"{what}: object store does not support ranged reads")
        else:
            error = _status_error(resp, what)
            conns.drop(u.origin)
            raise error
        pos = start
        while pos < end:
            # Fill the whole buffer before handing it on: one pwrite and one bookkeeping
            # step per 4 MiB, not per socket read.
            want = min(len(buf), end - pos)
            filled = 0
            while filled < want:
                n = resp.readinto(buf[filled:want])
                if not n:
                    if filled:
                        sink(buf[:filled], pos)
                    conns.drop(u.origin)
                    raise Transient() from UnreachableError(
                        f"{what}: connection closed after {pos + filled - start} of "
                        f"{end - start} bytes"
                    )
                filled += n
            sink(buf[:filled], pos)
            pos += filled
        if not resp.reusable:
            conns.drop(u.origin)  # unread body left, or the server closes: don't reuse
    except (OSError, ValueError) as exc:
        conns.drop(u.origin)
        raise _unreachable(what, exc)  # noqa: B904 - its cause is set


class Stored:
    """What the store answered to a part PUT."""

    __slots__ = ("checksum", "encryption", "etag")

    def __init__(self, etag: str, encryption: str, checksum: str = "") -> None:
        self.etag = etag  # quotes stripped: the part's MD5, unless `encryption` is aws:kms
        self.encryption = encryption  # x-amz-server-side-encryption; aws:kms: ETag opaque
        self.checksum = checksum  # x-amz-checksum-crc32 the store checked, when it says


def put(
    conns: Connections,
    url: str,
    body: Any,
    what: str,
    headers: dict[str, str] | None = None,
) -> Stored:
    """PUT a part body; return the store's ETag, server-side encryption and checksum."""
    u = split(url)
    conn = conns.get(u.origin)
    try:
        sent = [("Content-Length", str(len(body))), ("User-Agent", USER_AGENT)]
        resp = conn.request("PUT", u.target, sent + list((headers or {}).items()), body)
        if resp.status not in (200, 201, 204):
            error = _status_error(resp, what)
            conns.drop(u.origin)
            raise error
        resp.discard()  # S3 answers a part PUT with an empty body; never read without end
        if not resp.reusable:
            conns.drop(u.origin)
        return Stored(
            (resp.getheader("ETag") or "").strip('"'),
            (resp.getheader("x-amz-server-side-encryption") or "").lower(),
            resp.getheader("x-amz-checksum-crc32") or "",
        )
    except (OSError, ValueError) as exc:
        conns.drop(u.origin)
        raise _unreachable(what, exc)  # noqa: B904 - its cause is set
