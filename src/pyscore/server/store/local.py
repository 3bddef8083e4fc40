"""Filesystem object store, served by the app itself through HMAC-signed, expiring URLs.

Layout under the objects directory (mirrors Score's bucket keys):
  data/<objectId>                 completed objects
  upload/<uploadId>.data          a multipart upload in progress, parts copied to their offsets
                                  once received whole
  upload/<uploadId>/part-XXXXXXXX the MD5 of each part committed (the store's ListParts)
Completing an upload is a rename: it never copies the object.

A URL binds method, path, expiry (`Expires`, epoch seconds, as S3's SigV2 URLs carry it) and
(for parts) the byte range; changing any of them breaks the signature. Reads honour HTTP Range
(206/416), never holding a whole object in memory.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlencode

import anyio
from fastapi import APIRouter, Request
from starlette.responses import FileResponse, Response
from starlette.types import Receive, Scope, Send

from pyscore.server.errors import ApiError
from pyscore.server.keys import KeyRing
from pyscore.server.store.base import ObjectStat, content_disposition

UUIDISH = re.compile(r"[A-Za-z0-9._\-]{1,128}")
RANGE_RE = re.compile(r"[0-9]{1,19}-[0-9]{1,19}")
CHUNK = 4 * 1024 * 1024
FIRST_CHUNK = 64 * 1024


def _safe(name: str) -> str:
    if not UUIDISH.fullmatch(name) or name in (".", ".."):
        raise ApiError(400, "malformed.id", f"Invalid object or upload id {name!r}")
    return name


class LocalStore:
    kind = "local"
    signs_ranges = True

    def __init__(self, root: Path, keys: KeyRing | bytes, max_lifetime: int = 7 * 86400) -> None:
        self.root = Path(root)
        self.keys = KeyRing.static(keys) if isinstance(keys, bytes) else keys
        self.max_lifetime = max_lifetime  # no URL is signed, or honoured, for longer
        self.data = self.root / "data"
        self.uploads = self.root / "upload"
        self.prepare()

    # -- signing ---------------------------------------------------------------------------
    @staticmethod
    def sign(key: bytes, method: str, path: str, exp: int, rng: str, name: str = "") -> str:
        # One canonical, unambiguous message: a JSON array of every field, so no two sets
        # of fields (say range "" with name "n", and range "\nn" without) share a signature.
        message = json.dumps([method, path, exp, rng, name], separators=(",", ":"))
        return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()

    def _signed(
        self, method: str, base_url: str, path: str, expires_in: int, rng: str, name: str = ""
    ) -> str:
        exp = int(time.time()) + min(expires_in, self.max_lifetime)
        kid, key = self.keys.current()
        query = {
            # SigV2's name for the expiry (epoch seconds), which the Java score-client's
            # S3PresignedUrlValidator reads to renew URLs before resuming; it is signed.
            "Expires": exp,
            **({"range": rng} if rng else {}),
            **({"name": name} if name else {}),
            "kid": kid,
            "sig": self.sign(key, method, path, exp, rng, name),
        }
        return f"{base_url.rstrip('/')}{path}?{urlencode(query)}"

    def verify(self, method: str, path: str, query: dict[str, str]) -> str:
        """Check a request's signature and expiry; return the signed range ('' if none).
        `path` is the path as routed (the ASGI scope's), not as re-parsed from the URL, which
        drops characters such as a trailing newline that the route still sees."""
        try:
            exp = int(query.get("Expires", "")[:20])
        except ValueError:
            raise ApiError(403, "signature.invalid", "Signed URL is malformed") from None
        rng = query.get("range", "")
        if rng and not RANGE_RE.fullmatch(rng):
            raise ApiError(403, "signature.invalid", "Signed URL is malformed")
        key = self.keys.get(query.get("kid", "k0"))
        if key is None:
            raise ApiError(403, "signature.invalid", "Signed URL names an unknown or retired key")
        expected = self.sign(key, method, path, exp, rng, query.get("name", ""))
        if not hmac.compare_digest(expected, query.get("sig", "")):
            raise ApiError(403, "signature.invalid", "Signed URL signature does not match")
        now = time.time()
        if exp < now:
            raise ApiError(403, "signature.expired", "Signed URL has expired")
        if exp > now + self.max_lifetime + 60:
            raise ApiError(
                403, "signature.expiry", "Signed URL outlives the server's maximum URL lifetime"
            )
        return rng

    def prepare(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        self.uploads.mkdir(parents=True, exist_ok=True)

    def write_meta(self, object_id: str, spec: dict) -> None:
        self.put_bytes(f"{object_id}.meta", json.dumps(spec).encode())

    # -- objects ---------------------------------------------------------------------------
    def path(self, object_id: str) -> Path:
        return self.data / _safe(object_id)

    def url_for_get(
        self,
        object_id: str,
        *,
        base_url: str,
        expires_in: int,
        offset: int | None = None,
        length: int | None = None,
        filename: str | None = None,
    ) -> str:
        rng = "" if offset is None or length is None else f"{offset}-{offset + length - 1}"
        return self._signed(
            "GET", base_url, f"/store/objects/{_safe(object_id)}", expires_in, rng, filename or ""
        )

    def stat(self, object_id: str) -> ObjectStat | None:
        try:
            st = self.path(object_id).stat()
        except FileNotFoundError:
            return None
        return ObjectStat(st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def read_range(self, object_id: str, offset: int, length: int) -> bytes:
        fd = os.open(self.path(object_id), os.O_RDONLY)
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def put_bytes(self, object_id: str, data: bytes) -> None:
        target = self.path(object_id)
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
        tmp.write_bytes(data)
        tmp.replace(target)

    def put_file(self, object_id: str, path: Path) -> None:
        target = self.path(object_id)
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
        shutil.copyfile(path, tmp)  # copy_file_range/sendfile: no bytes through Python
        tmp.replace(target)

    def delete(self, object_id: str) -> None:
        self.path(object_id).unlink(missing_ok=True)

    # -- multipart uploads -----------------------------------------------------------------
    # A part's body streams into a temporary file. Only once it is whole and of the part's
    # size is it committed: under an exclusive lock on the upload's data file, unless the
    # platform has recorded the part meanwhile, its bytes are copied in the kernel to their
    # offset and its MD5 marker written. Completion takes the same lock, checks the markers
    # against the MD5s the platform recorded, and renames the data file into place; a commit
    # that comes later finds the file gone. So a refused body changes nothing, a recorded
    # part no more, and the object is the parts that were recorded.

    def _upload_data(self, upload_id: str) -> Path:
        return self.uploads / f"{_safe(upload_id)}.data"

    def _upload_parts(self, upload_id: str) -> Path:
        return self.uploads / _safe(upload_id)

    def initiate(self, object_id: str, size: int) -> str:
        upload_id = secrets.token_hex(16)
        with open(self._upload_data(upload_id), "wb") as f:
            f.truncate(size)  # sparse: parts land at their offsets
        self._upload_parts(upload_id).mkdir()
        return upload_id

    def url_for_part(
        self,
        object_id: str,
        upload_id: str,
        part_number: int,
        offset: int,
        size: int,
        *,
        base_url: str,
        expires_in: int,
    ) -> str:
        path = f"/store/uploads/{_safe(upload_id)}/{part_number}"
        return self._signed("PUT", base_url, path, expires_in, f"{offset}-{offset + size - 1}")

    def list_parts(self, object_id: str, upload_id: str) -> dict[int, str]:
        folder = self._upload_parts(upload_id)
        if not folder.is_dir():
            return {}
        return {
            int(p.name[5:], 16): p.read_text().strip()
            for p in folder.iterdir()
            if p.name.startswith("part-") and not p.name.endswith(".tmp")
        }

    def _locked(self, upload_id: str) -> int:
        """The upload's data file, open and exclusively locked; 404 once completed or
        cancelled (also when that happened while waiting for the lock)."""
        path = self._upload_data(upload_id)
        try:
            fd = os.open(path, os.O_WRONLY)
        except FileNotFoundError:
            raise ApiError(404, "upload.not.found", f"Upload {upload_id} does not exist") from None
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            still = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            still = False
        if not still:
            os.close(fd)
            raise ApiError(404, "upload.not.found", f"Upload {upload_id} does not exist")
        return fd

    def complete(self, object_id: str, upload_id: str, etags: dict[int, str]) -> None:
        fd = self._locked(upload_id)
        try:
            held = self.list_parts(object_id, upload_id)
            for number, etag in etags.items():
                if held.get(number) != etag.strip('"'):
                    raise ApiError(
                        400,
                        "upload.part.missing",
                        f"Part {number} of upload {upload_id} is missing or differs",
                    )
            os.replace(self._upload_data(upload_id), self.path(object_id))
            self._drop_parts(upload_id)
        finally:
            os.close(fd)

    def abort(self, object_id: str, upload_id: str) -> None:
        self._upload_data(upload_id).unlink(missing_ok=True)
        self._drop_parts(upload_id)

    def _drop_parts(self, upload_id: str) -> None:
        shutil.rmtree(self._upload_parts(upload_id), ignore_errors=True)

    def _commit(
        self,
        upload_id: str,
        part_number: int,
        tmp: Path,
        offset: int,
        digest: str,
        finalized: Callable[[str, int], bool],
    ) -> None:
        fd = self._locked(upload_id)
        try:
            if finalized(upload_id, part_number):
                raise ApiError(
                    403,
                    "upload.part.finalized",
                    f"Part {part_number} of upload {upload_id} was recorded meanwhile",
                )
            with open(tmp, "rb") as src:
                _copy(src.fileno(), fd, os.fstat(src.fileno()).st_size, offset)
            marker = self._upload_parts(upload_id) / f"part-{part_number:08x}"
            with open(marker.with_suffix(".tmp"), "w") as f:
                f.write(digest)
            marker.with_suffix(".tmp").replace(marker)
        finally:
            os.close(fd)

    async def receive_part(
        self,
        upload_id: str,
        part_number: int,
        rng: str,
        chunks: Iterator[bytes] | object,
        finalized: Callable[[str, int], bool] = lambda upload_id, n: False,
    ) -> str:
        """Take a part's body into a temporary file, hashing as it streams; commit it only if
        it is exactly the part's size. Returns its MD5."""
        start, end = (int(x) for x in rng.split("-"))
        size = end - start + 1
        folder = self._upload_parts(upload_id)
        if not folder.is_dir() or not self._upload_data(upload_id).exists():
            raise ApiError(404, "upload.not.found", f"Upload {upload_id} does not exist")
        md5 = hashlib.md5()
        written = 0
        tmp = folder / f".body-{part_number:08x}-{secrets.token_hex(6)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileNotFoundError:  # completed or cancelled meanwhile
            raise ApiError(404, "upload.not.found", f"Upload {upload_id} does not exist") from None
        try:
            try:
                async for chunk in chunks:  # type: ignore[attr-defined]
                    if written + len(chunk) > size:
                        raise ApiError(400, "upload.part.size", "Part body is larger than the part")
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
                    md5.update(chunk)
                    written += len(chunk)
            finally:
                os.close(fd)
            if written != size:
                raise ApiError(
                    400,
                    "upload.part.size",
                    f"Part {part_number} has {written} bytes, expected {size}",
                )
            digest = md5.hexdigest()
            await anyio.to_thread.run_sync(
                self._commit,
                upload_id,
                part_number,
                tmp,
                start,
                digest,
                finalized,
                limiter=_writers(),
            )
        finally:
            tmp.unlink(missing_ok=True)
        return digest


def _copy(src: int, dst: int, length: int, offset: int) -> None:
    """`length` bytes from the start of src to `offset` in dst, in the kernel where it can."""
    done = 0
    while done < length:
        try:
            n = os.copy_file_range(src, dst, length - done, done, offset + done)
        except OSError:  # e.g. across filesystems on old kernels: read and write
            chunk = os.pread(src, min(CHUNK, length - done), done)
            n = os.pwrite(dst, chunk, offset + done) if chunk else 0
        if n == 0:
            raise OSError(f"part body ended {length - done} bytes early")
        done += n


_WRITERS: list[anyio.CapacityLimiter] = []


def _writers() -> anyio.CapacityLimiter:
    """Threads of their own for committing parts (see _readers)."""
    if not _WRITERS:
        _WRITERS.append(anyio.CapacityLimiter(8))
    return _WRITERS[0]


# -- serving -------------------------------------------------------------------------------
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


def router(store: LocalStore, finalized: Callable[[str, int], bool]) -> APIRouter:
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
        if await anyio.to_thread.run_sync(finalized, upload_id, part_number, limiter=_writers()):
            raise ApiError(
                403,
                "upload.part.finalized",
                f"Part {part_number} of upload {upload_id} is already recorded; "
                "delete it (DELETE /upload/{id}/parts) before sending it again",
            )
        digest = await store.receive_part(upload_id, part_number, rng, request.stream(), finalized)
        return Response(status_code=200, headers={"ETag": f'"{digest}"'})

    return api
