"""The local store's signed URLs, answered by this server (S3 answers its own): ranged reads
(206/416, zero-copy for whole files) and part uploads, each checked against its signature."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

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
    """206 for [start, end] of a file (or 200 for all of it), read in chunks off the loop."""

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
