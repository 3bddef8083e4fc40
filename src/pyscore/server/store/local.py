"""Filesystem object store with HMAC-signed, expiring URLs (answered by `web/signed.py`).

Layout under the objects directory (mirrors Score's bucket keys):
  data/<objectId>                 completed objects
  upload/<uploadId>.data          a multipart upload in progress, parts copied to their offsets
                                  once received whole
  upload/<uploadId>/part-XXXXXXXX the MD5 of each part committed (the store's ListParts)
  upload/<uploadId>.done          a completed upload's object and parts, for a day: asked
                                  again, completion answers as the first time
Completing an upload is a rename: it never copies the object.

A URL binds method, path, expiry (`Expires`, epoch seconds, as S3's SigV2 URLs carry it) and
(for parts) the byte range; changing any of them breaks the signature. Reads honour HTTP Range
(206/416), never holding a whole object in memory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote_plus

import anyio

from pyscore.server.errors import ApiError, Unavailable
from pyscore.server.keys import KeyRing
from pyscore.server.store.base import ObjectStat

UUIDISH = re.compile(r"[A-Za-z0-9._\-]{1,128}")
RANGE_RE = re.compile(r"[0-9]{1,19}-[0-9]{1,19}")
CHUNK = 4 * 1024 * 1024
DONE_KEEP_SECONDS = 86400
_CANONICAL = json.JSONEncoder(separators=(",", ":")).encode  # json.dumps(..., separators=)


@lru_cache(maxsize=16)
def _keyed(key: bytes) -> hmac.HMAC:
    return hmac.new(key, digestmod=hashlib.sha256)


@contextlib.contextmanager
def room() -> Iterator[None]:
    """A write that finds the disk full (or the quota used) is a 503 with Retry-After: the
    client tries again, and succeeds once the operator has made room."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise Unavailable(
            "object_store",
            "The object store's disk is full; retry after Retry-After seconds",
        ) from exc


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
        self._swept = 0.0  # when completion markers were last swept (_sweep_done)
        self.prepare()

    # -- signing ---------------------------------------------------------------------------
    @staticmethod
    def sign(key: bytes, method: str, path: str, exp: int, rng: str, name: str = "") -> str:
        # One canonical, unambiguous message: a JSON array of every field, so no two sets
        # of fields (say range "" with name "n", and range "\nn" without) share a signature.
        message = _CANONICAL([method, path, exp, rng, name])
        return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()

    def _signed(
        self, method: str, base_url: str, path: str, expires_in: int, rng: str, name: str = ""
    ) -> str:
        exp = int(time.time()) + min(expires_in, self.max_lifetime)
        kid, key = self.keys.current()
        mac = _keyed(key).copy()  # the key's HMAC state, made once (a spec signs 16 parts)
        mac.update(_CANONICAL([method, path, exp, rng, name]).encode())
        # as urlencode writes them; `Expires` is SigV2's name for the expiry (epoch seconds),
        # which the Java score-client's S3PresignedUrlValidator reads to renew URLs before
        # resuming; it is signed.
        query = f"Expires={exp}"
        if rng:
            query += f"&range={quote_plus(rng)}"
        if name:
            query += f"&name={quote_plus(name)}"
        query += f"&kid={quote_plus(kid)}&sig={mac.hexdigest()}"
        return f"{base_url.rstrip('/')}{path}?{query}"

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
        self._put(object_id, lambda tmp: tmp.write_bytes(data))

    def put_file(self, object_id: str, path: Path) -> None:
        # copy_file_range/sendfile: no bytes through Python
        self._put(object_id, lambda tmp: shutil.copyfile(path, tmp))

    @room()
    def _put(self, object_id: str, write: Callable[[Path], object]) -> None:
        """An object written beside its place, then renamed into it (never half there)."""
        target = self.path(object_id)
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
        try:
            write(tmp)
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)

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

    @room()
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

    def list_parts(self, object_id: str, upload_id: str) -> dict[int, str] | None:
        folder = self._upload_parts(upload_id)
        if not folder.is_dir():
            return None
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

    @room()
    def complete(self, object_id: str, upload_id: str, etags: dict[int, str]) -> None:
        """Rename the upload's data into place. Asked again for the same parts once done
        (the platform's record of it lost with a dropped transaction), it answers as the
        first time, as S3's CompleteMultipartUpload does: a marker says what was done."""
        done = {"objectId": object_id, "etags": {str(n): e.strip('"') for n, e in etags.items()}}
        try:
            fd = self._locked(upload_id)
        except ApiError:
            if self._done_before(upload_id, done):
                return
            raise
        try:
            held = self.list_parts(object_id, upload_id) or {}
            for number, etag in etags.items():
                if held.get(number) != etag.strip('"'):
                    raise ApiError(
                        400,
                        "upload.part.missing",
                        f"Part {number} of upload {upload_id} is missing or differs",
                    )
            marker = self._done_marker(upload_id)
            marker.with_suffix(".tmp").write_text(json.dumps(done))
            marker.with_suffix(".tmp").replace(marker)
            os.replace(self._upload_data(upload_id), self.path(object_id))
            self._drop_parts(upload_id)
        finally:
            os.close(fd)
        self._sweep_done()

    def _done_marker(self, upload_id: str) -> Path:
        return self.uploads / f"{_safe(upload_id)}.done"

    def _done_before(self, upload_id: str, done: dict) -> bool:
        try:
            marker = json.loads(self._done_marker(upload_id).read_text())
        except (OSError, ValueError):
            return False
        return marker == done and self.path(done["objectId"]).exists()

    def _sweep_done(self) -> None:
        """Markers of completions are kept DONE_KEEP_SECONDS (a retry comes within
        seconds), swept at most once an hour."""
        now = time.time()
        if now - self._swept < 3600:
            return
        self._swept = now
        for entry in os.scandir(self.uploads):
            with contextlib.suppress(OSError):
                if entry.name.endswith(".done") and entry.stat().st_mtime < now - DONE_KEEP_SECONDS:
                    os.unlink(entry.path)

    def abort(self, object_id: str, upload_id: str) -> None:
        self._upload_data(upload_id).unlink(missing_ok=True)
        self._drop_parts(upload_id)

    def _drop_parts(self, upload_id: str) -> None:
        shutil.rmtree(self._upload_parts(upload_id), ignore_errors=True)

    @room()
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
        chunks: AsyncIterator[bytes],
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
        with room():  # the body's file, and its copy in place
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileNotFoundError:  # completed or cancelled meanwhile
                raise ApiError(
                    404, "upload.not.found", f"Upload {upload_id} does not exist"
                ) from None
            try:
                try:
                    async for chunk in chunks:
                        if written + len(chunk) > size:
                            raise ApiError(
                                400, "upload.part.size", "Part body is larger than the part"
                            )
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
                    limiter=writers(),
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


WRITERS: list[anyio.CapacityLimiter] = []


def writers() -> anyio.CapacityLimiter:
    """Threads of their own for committing parts (see _readers)."""
    if not WRITERS:
        WRITERS.append(anyio.CapacityLimiter(8))
    return WRITERS[0]
