"""The local store's signed URLs, answered by this server (S3 answers its own): ranged reads
(206/416) and part uploads, each checked against its signature.

Object bytes never pass through Python where the server allows: a whole file goes out by
granian's zero-copy file response (ASGI `http.response.pathsend`), and so does a byte range,
through a FIFO: a thread moves the range from the file into the pipe with splice(2) (page
references, no copy) and granian sends the FIFO's bytes as it would a file's. Where that
cannot be (no pathsend, Python < 3.10 without os.splice, too many at once), ranges go out in
chunks read off the event loop.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, Request
from starlette.responses import FileResponse, Response
from starlette.types import Receive, Scope, Send

from pyscore.server.errors import ApiError
from pyscore.server.store.base import ServesItsUrls, content_disposition
from pyscore.server.store.local import writers

CHUNK = 4 * 1024 * 1024
FIRST_CHUNK = 64 * 1024


class RangeNotSatisfiable(Exception):
    pass


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One 'bytes=' range → inclusive (start, end) clipped to the object; None = whole."""
    # at most 19 digits (int64): a longer number is no byte position, so the header is ignored
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d{0,19})\s*-\s*(\d{0,19})\s*", header)
    if not match or (match[1] == "" and match[2] == ""):
        return None  # malformed or multi-range: RFC 9110 lets us ignore it
    if match[1] == "":  # suffix range: the last N bytes
        n = int(match[2])
        if n == 0 or size == 0:
            raise RangeNotSatisfiable
        return max(0, size - n), size - 1
    start = int(match[1])
    end = int(match[2]) if match[2] else size - 1
    if start >= size or end < start:
        raise RangeNotSatisfiable
    return start, min(end, size - 1)


_READERS: list[anyio.CapacityLimiter] = []


def _readers() -> anyio.CapacityLimiter:
    """Threads of their own for reading object bytes, so many downloads never take the
    threads the API's requests need (limits.py)."""
    if not _READERS:
        _READERS.append(anyio.CapacityLimiter(16))
    return _READERS[0]


class RangeResponse(Response):
    """206 for [start, end] of a file (or 200 for all of it): spliced through a FIFO to
    granian's file response when it can (see the module's docstring), else read in chunks
    off the loop."""

    def __init__(
        self, path: Path, start: int, end: int, size: int, headers: dict, partial: bool = True
    ) -> None:
        extra = {"Content-Range": f"bytes {start}-{end}/{size}"} if partial else {}
        super().__init__(
            status_code=206 if partial else 200,
            headers={**headers, **extra, "Content-Length": str(end - start + 1)},
        )
        self.path, self.start, self.end = path, start, end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        if scope["method"] == "HEAD":
            await send({"type": "http.response.body", "body": b""})
            return
        if "http.response.pathsend" in scope.get("extensions", {}) and self.end >= self.start:
            fifo = spliced(self.path, self.start, self.end + 1)
            if fifo is not None:
                await send({"type": "http.response.pathsend", "path": fifo})
                return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            pos, end = self.start, self.end + 1
            # Slow start: readers such as htslib open with an open-ended range, read a few
            # KiB and hang up; small first chunks keep what we push at them small too.
            size = FIRST_CHUNK
            while pos < end:
                n = min(size, end - pos)
                size = min(CHUNK, size * 4)
                chunk = await anyio.to_thread.run_sync(os.pread, fd, n, pos, limiter=_readers())
                if not chunk:
                    break
                pos += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": pos < end})
        finally:
            os.close(fd)


# -- ranges through a FIFO -------------------------------------------------------------------
PUMPS = threading.BoundedSemaphore(64)  # ranges spliced at once per process; the rest: chunks
PIPE_SIZE = 1024 * 1024
SPLICE: Any = getattr(os, "splice", None)  # Linux, Python >= 3.10
SET_PIPE_SIZE = getattr(fcntl, "F_SETPIPE_SZ", 1031)
RENDEZVOUS = 30.0  # seconds granian has to open the FIFO (it does so at once)
_FIFO_DIR: list[str] = []


def _fifo_dir() -> str:
    """A directory of this process's own (0700) for its FIFOs, removed at exit."""
    if not _FIFO_DIR:
        import atexit
        import shutil
        import tempfile

        folder = tempfile.mkdtemp(prefix="pyscore-ranges-")
        atexit.register(shutil.rmtree, folder, True)
        _FIFO_DIR.append(folder)
    return _FIFO_DIR[0]


def spliced(path: Path, start: int, end: int) -> str | None:
    """A FIFO from which [start, end) of `path` can be read, fed by a thread with splice(2);
    None where that cannot be (no os.splice, the file gone, PUMPS all busy)."""
    if SPLICE is None or not PUMPS.acquire(blocking=False):
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        PUMPS.release()
        return None
    fifo = os.path.join(_fifo_dir(), f"{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}")
    try:
        os.mkfifo(fifo, 0o600)
    except OSError:
        os.close(fd)
        PUMPS.release()
        return None
    threading.Thread(target=_pump, args=(fd, fifo, start, end), daemon=True).start()
    return fifo


def _pump(fd: int, fifo: str, start: int, end: int) -> None:
    """Move [start, end) of fd into the FIFO once its reader (granian) opened it; its
    reader going away (the client hung up) ends it."""
    out = -1
    try:
        out = _open_writer(fifo)
        if out < 0:
            return
        os.unlink(fifo)  # both ends are open: the name is no longer needed
        os.set_blocking(out, True)
        pos, step = start, FIRST_CHUNK
        while pos < end:
            # Slow start, as the chunked path: a reader such as htslib opens an open-ended
            # range, reads a few KiB and hangs up; the pipe grows once it keeps reading.
            n = SPLICE(fd, out, min(step, end - pos), offset_src=pos)
            if n == 0:
                break  # the file is shorter than it was: the answer ends short
            pos += n
            if step < PIPE_SIZE and pos - start >= step:
                step *= 4
                if step >= PIPE_SIZE:  # (above /proc/sys/fs/pipe-max-size: the default)
                    with contextlib.suppress(OSError):
                        fcntl.fcntl(out, SET_PIPE_SIZE, PIPE_SIZE)
    except OSError:
        pass  # EPIPE: the client hung up; another error ends the answer short
    finally:
        if out >= 0:
            os.close(out)
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(fifo)
        PUMPS.release()


def _open_writer(fifo: str) -> int:
    """The FIFO opened for writing once a reader has it open (-1 if none comes in time).
    Non-blocking, so a reader that never comes cannot hold the thread forever."""
    deadline = time.monotonic() + RENDEZVOUS
    wait = 0.0002
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                return -1
        time.sleep(wait)
        wait = min(wait * 2, 0.01)


def router(store: ServesItsUrls, finalized: Callable[[str, int], bool]) -> APIRouter:
    """The store's own URLs. `finalized(upload_id, part_number)` says whether the platform
    has recorded a part as done: such a part takes no more bodies."""
    api = APIRouter(include_in_schema=False)

    @api.api_route("/store/objects/{object_id}", methods=["GET", "HEAD"])
    async def get_object(object_id: str, request: Request) -> Response:
        signed = store.verify("GET", request.scope["path"], dict(request.query_params))
        path = store.path(object_id)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise ApiError(404, "object.not.found", f"Object {object_id} not found") from None
        size = st.st_size
        headers = {
            "Accept-Ranges": "bytes",
            "ETag": f'"{st.st_size:x}-{st.st_mtime_ns:x}"',
            "Cache-Control": "private, no-store",
        }
        if request.query_params.get("name"):  # signed: a download for a browser
            headers["Content-Disposition"] = content_disposition(request.query_params["name"])
        lo, hi = 0, size - 1
        if signed:
            lo, hi = (int(x) for x in signed.split("-"))
            hi = min(hi, size - 1)
        try:
            wanted = parse_range(request.headers.get("range", ""), size)
        except RangeNotSatisfiable:
            return Response(
                status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"}
            )
        if wanted is None:
            if not signed and "range" not in request.headers:  # zero-copy whole file
                return FileResponse(
                    path, headers=headers, stat_result=st, media_type="application/octet-stream"
                )
            if not signed:  # a Range we ignore (other unit, bad syntax, several ranges)
                return RangeResponse(path, 0, size - 1, size, headers, partial=False)
            wanted = (lo, hi)
        if wanted[0] < lo or wanted[1] > hi:
            raise ApiError(403, "signature.range", "Requested range is outside the signed range")
        return RangeResponse(path, wanted[0], wanted[1], size, headers)

    @api.put("/store/uploads/{upload_id}/{part_number}")
    async def put_part(upload_id: str, part_number: int, request: Request) -> Response:
        rng = store.verify("PUT", request.scope["path"], dict(request.query_params))
        # on the store's own threads, at most 8 at once: fewer than the database connections
        # the pool keeps beyond the admitted requests, so this never waits on them (limits.py)
        if await anyio.to_thread.run_sync(finalized, upload_id, part_number, limiter=writers()):
            raise ApiError(
                403,
                "upload.part.finalized",
                f"Part {part_number} of upload {upload_id} is already recorded; "
                "delete it (DELETE /upload/{id}/parts) before sending it again",
            )
        digest = await store.receive_part(upload_id, part_number, rng, request.stream(), finalized)
        return Response(status_code=200, headers={"ETag": f'"{digest}"'})

    return api
