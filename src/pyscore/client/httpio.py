"""The byte path: ranged GETs and part PUTs on signed URLs, without per-chunk allocations.

Measured on these machines, stdlib http.client with `readinto` on a reused buffer and `pwrite`
moves 2-3 GB/s per core where httpx manages ~0.4 GB/s, so object bytes go through here and
only JSON API calls use httpx. One `Connections` per thread keeps connections alive.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

from pyscore import __version__
from pyscore.client import tls
from pyscore.client.errors import NotFoundError, ScoreError, UnreachableError
from pyscore.client.retry import Transient

USER_AGENT = f"pyscore-score-client/{__version__}"
BUFFER = 4 * 1024 * 1024  # the most one request reads before handing bytes on
BUFFERS_BUDGET = 64 * 1024 * 1024  # what all of a transfer's buffers may hold together
MIN_BUFFER = 256 * 1024
# Requests for at most this many bytes are latency-bound: they run many at once whatever
# --parallel says (which bounds the connections moving big bodies).
SMALL_BODY = 1024 * 1024
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
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
        self.pool: dict[tuple[str, str], http.client.HTTPConnection] = {}
        self.context = tls.context()

    def get(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        key = (scheme, netloc)
        conn = self.pool.get(key)
        if conn is None:
            if scheme == "https":
                conn = http.client.HTTPSConnection(
                    netloc, timeout=self.connect_timeout, context=self.context
                )
            else:
                conn = http.client.HTTPConnection(netloc, timeout=self.connect_timeout)
            self.pool[key] = conn
        return conn

    def drop(self, scheme: str, netloc: str) -> None:
        conn = self.pool.pop((scheme, netloc), None)
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


@lru_cache(maxsize=256)
def _query(url: str) -> dict[str, str]:
    """A URL's query, names lower-cased (first value of each). Cached: each signed URL is
    asked about a few times (expiry before each request, whether it binds its Range), and
    a thousand small files meant a thousand times that many parses. Read-only to callers."""
    return {k.lower(): v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def url_expiry(url: str) -> float | None:
    """When a signed URL stops working (epoch seconds), if the URL says: pyscore `exp`,
    S3 SigV4 X-Amz-Date + X-Amz-Expires, SigV2 `Expires`, Azure SAS `se`."""
    query = _query(url)
    try:
        if "exp" in query:
            return float(query["exp"])
        if "x-amz-date" in query and "x-amz-expires" in query:
            t = time.strptime(query["x-amz-date"], "%Y%m%dT%H%M%SZ")
            return time.mktime(t) - time.timezone + int(query["x-amz-expires"])
        if "expires" in query:
            return float(query["expires"])
        if "se" in query:
            t = time.strptime(query["se"][:19], "%Y-%m-%dT%H:%M:%S")
            return time.mktime(t) - time.timezone
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
    if ours and urlsplit(url).path.startswith("/store/objects/"):
        return False
    return not ("awsaccesskeyid" in query and "signature" in query and "expires" in query)


def _read_error(resp: http.client.HTTPResponse) -> str:
    try:
        return resp.read(2048).decode("utf-8", "replace").strip().splitlines()[0][:200]
    except (IndexError, OSError, http.client.HTTPException):
        return ""


def _status_error(resp: http.client.HTTPResponse, what: str) -> Exception:
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
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    conn = conns.get(parts.scheme, parts.netloc)
    try:
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if not whole:
            headers["Range"] = f"bytes={start}-{end - 1}"
        conn.request("GET", target, headers=headers)
        resp = conn.getresponse()
        if conn.sock is not None and conn.sock.gettimeout() != conns.timeout:
            conn.sock.settimeout(conns.timeout)  # once a connection: each call is an ioctl
        if resp.status == 206:
            match = CONTENT_RANGE.match(resp.getheader("Content-Range", ""))
            if not match or int(match[1]) != start:
                conns.drop(parts.scheme, parts.netloc)
                raise ScoreError(
                    f"{what}: object store sent the wrong range "
                    f"({resp.getheader('Content-Range')!r} for {start}-{end - 1})"
                )
        elif resp.status == 200 and start == 0:
            pass  # the store ignored Range; the first (end - start) bytes are ours
        elif resp.status == 200:
            conns.drop(parts.scheme, parts.netloc)
            raise ScoreError(f"{what}: object store does not support ranged reads")
        else:
            error = _status_error(resp, what)
            conns.drop(parts.scheme, parts.netloc)
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
                    conns.drop(parts.scheme, parts.netloc)
                    raise Transient() from UnreachableError(
                        f"{what}: connection closed after {pos + filled - start} of "
                        f"{end - start} bytes"
                    )
                filled += n
            sink(buf[:filled], pos)
            pos += filled
        if not resp.isclosed() and resp.length != 0:
            conns.drop(parts.scheme, parts.netloc)  # unread body left: don't reuse
    except (OSError, http.client.HTTPException) as exc:
        conns.drop(parts.scheme, parts.netloc)
        timed_out = isinstance(exc, (socket.timeout, TimeoutError))  # not one class before 3.10
        kind = "timed out" if timed_out else type(exc).__name__
        raise Transient() from UnreachableError(f"{what}: {kind}: {exc}")


class Stored(NamedTuple):
    """What the store answered to a part PUT."""

    etag: str  # quotes stripped: the part's MD5, unless `encryption` is aws:kms
    encryption: str  # x-amz-server-side-encryption; with aws:kms the ETag is opaque


def put(
    conns: Connections,
    url: str,
    body: Any,
    what: str,
    headers: dict[str, str] | None = None,
) -> Stored:
    """PUT a part body; return the store's ETag and server-side encryption."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    conn = conns.get(parts.scheme, parts.netloc)
    try:
        conn.request(
            "PUT",
            target,
            body=body,
            headers={"Content-Length": str(len(body)), "User-Agent": USER_AGENT, **(headers or {})},
        )
        resp = conn.getresponse()
        if resp.status not in (200, 201, 204):
            error = _status_error(resp, what)
            conns.drop(parts.scheme, parts.netloc)
            raise error
        resp.read(64 * 1024)  # S3 answers a part PUT with an empty body; never read without end
        if not resp.isclosed():
            conns.drop(parts.scheme, parts.netloc)
        return Stored(
            (resp.getheader("ETag") or "").strip('"'),
            (resp.getheader("x-amz-server-side-encryption") or "").lower(),
        )
    except (OSError, http.client.HTTPException) as exc:
        conns.drop(parts.scheme, parts.netloc)
        raise Transient() from UnreachableError(f"{what}: {type(exc).__name__}: {exc}")
