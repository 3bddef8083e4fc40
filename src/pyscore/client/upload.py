"""The upload engine: parallel part PUTs to signed URLs, each part's MD5 checked against what
the store received, the whole file's MD5 checked against what the analysis declared before the
upload is completed. Resumable: the server remembers finished parts, so a re-run after any
interruption sends only the missing ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pyscore.client.api import Api
from pyscore.client.errors import IntegrityError, ScoreError, UsageError
from pyscore.client.httpio import Connections, UrlRejected, put
from pyscore.client.progress import Reporter, human
from pyscore.client.retry import Transient, delay
from pyscore.wire.score import Part

READ_BLOCK = 1024 * 1024
HASH_BLOCK = 8 * 1024 * 1024
HASH_WINDOW = 16 * 1024 * 1024  # a multiple of mmap.ALLOCATIONGRANULARITY
MAP_WINDOW = 8 * 1024 * 1024


@dataclass
class Item:
    object_id: str
    path: Path
    md5: str  # what the analysis declares


class PartBody:
    """A part of a file as a request body: slices of a small read-only mapping that slides
    along the part, each hashed as it is handed to the socket (no copy into Python
    buffers, and only MAP_WINDOW of the file mapped at a time)."""

    def __init__(self, fd: int, offset: int, length: int) -> None:
        if os.fstat(fd).st_size < offset + length:
            raise OSError(f"file shrank while uploading (part at byte {offset})")
        self.fd, self.pos, self.end = fd, offset, offset + length
        self.md5 = hashlib.md5()
        self.map: mmap.mmap | None = None
        self.map_start = self.map_end = 0

    def read(self, n: int = READ_BLOCK) -> memoryview | bytes:
        if self.pos >= self.end:
            return b""
        if not self.map_start <= self.pos < self.map_end:
            self.close()  # the previous slice was sent before this call
            self.map_start = self.pos - self.pos % mmap.ALLOCATIONGRANULARITY
            self.map_end = min(self.end, self.map_start + MAP_WINDOW)
            self.map = mmap.mmap(
                self.fd, self.map_end - self.map_start, prot=mmap.PROT_READ, offset=self.map_start
            )
        lo = self.pos - self.map_start
        chunk = memoryview(self.map)[lo : lo + min(max(n, READ_BLOCK), self.map_end - self.pos)]
        self.pos += len(chunk)
        self.md5.update(chunk)
        return chunk

    def close(self) -> None:
        if self.map is not None:
            with contextlib.suppress(BufferError):  # a slice still referenced keeps it alive
                self.map.close()
            self.map = None


def finished(part: Part) -> bool:
    """Is this part of an upload status already on the server? pyscore marks finished parts
    with `md5`, the original score-server with `sourceMd5`."""
    return bool(part.md5 or part.sourceMd5)


def file_md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_BLOCK):
            h.update(chunk)
    return h.hexdigest()


class Uploader:
    def __init__(self, api: Api, reporter: Reporter, parallel: int) -> None:
        self.api = api
        self.reporter = reporter
        self.reporter.verb = "uploaded"
        self.parallel = parallel
        settings = api.settings
        self.attempts = settings.int("storage.retryNumber")
        self.timeout = float(settings.int("client.readTimeoutSeconds"))

    def upload(self, item: Item, force: bool = False) -> None:
        """Upload one file, resuming an interrupted upload of it if there is one."""
        path, object_id = item.path, item.object_id
        if not path.is_file():
            raise UsageError(f"{path} does not exist or is not a file")
        size = path.stat().st_size
        if size == 0:
            raise UsageError(f"{path} is empty; empty files cannot be uploaded")
        if self.api.upload_exists(object_id) and not force:
            raise UsageError(
                f"object {object_id} ({path.name}) is already uploaded; use --force "
                "to replace it (only while its analysis is unpublished)"
            )
        status = None if force else self.api.upload_status(object_id, size)
        if status is not None:
            upload_id, parts = status.uploadId, status.parts
            done = sum(p.partSize for p in parts if finished(p))
            self.reporter.info(
                f"Resuming upload of {path.name}: {human(done)} of "
                f"{human(size)} already on the server"
            )
        else:
            spec = self.api.initiate_upload(object_id, size, item.md5, overwrite=force)
            upload_id, parts = spec.uploadId, spec.parts
        self.reporter.plan(1, size)
        self.reporter.started(
            _Named(path.name, object_id, size, path), sum(p.partSize for p in parts if finished(p))
        )
        fd = os.open(path, os.O_RDONLY)
        try:
            hasher = _Hasher(fd, size)
            hasher.start()
            missing = [p for p in parts if not finished(p)]
            self._send_parts(fd, object_id, upload_id, missing, path, size)
            digest = hasher.result()
        finally:
            os.close(fd)
        if digest != item.md5.lower():
            self.api.cancel_upload(object_id)
            raise IntegrityError(
                f"{path}: MD5 {digest} differs from {item.md5}, which the "
                "analysis declares; the upload was cancelled"
            )
        self.api.complete_upload(object_id, upload_id)
        self.reporter.finished(_Named(path.name, object_id, size, path), 0.0)

    def _send_parts(
        self, fd: int, object_id: str, upload_id: str, parts: list[Part], path: Path, size: int
    ) -> None:
        work: queue.Queue[Part | None] = queue.Queue()
        for p in parts:
            work.put(p)
        errors: list[ScoreError] = []
        urls = {p.partNumber: p.url for p in parts}
        lock = threading.Lock()
        named = _Named(path.name, object_id, size, path)

        def renew() -> None:
            status = self.api.upload_status(object_id, size)
            if status is None or status.uploadId != upload_id:
                raise ScoreError(f"{path.name}: the upload was cancelled or replaced on the server")
            with lock:
                urls.update({p.partNumber: p.url for p in status.parts if p.url})

        def worker() -> None:
            conns = Connections(self.timeout)
            try:
                while not errors:
                    try:
                        part = work.get_nowait()
                    except queue.Empty:
                        return
                    self._send_one(conns, fd, object_id, upload_id, part, urls, lock, renew, path)
                    self.reporter.advanced(named, part.partSize)
            except ScoreError as exc:
                errors.append(exc)
            except OSError as exc:
                errors.append(ScoreError(f"{path}: {exc}"))
            finally:
                conns.close()

        threads = [
            threading.Thread(target=worker, daemon=True)
            for _ in range(min(self.parallel, max(len(parts), 1)))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    def _send_one(
        self,
        conns: Connections,
        fd: int,
        object_id: str,
        upload_id: str,
        part: Part,
        urls: dict,
        lock: threading.Lock,
        renew,
        path: Path,
    ) -> None:
        attempt = 0
        what = f"{path.name} part {part.partNumber}"
        while True:
            body = PartBody(fd, part.offset, part.partSize)
            with lock:
                url = urls[part.partNumber]
            try:
                stored = put(conns, url or "", _Stream(body, part.partSize), what)
            except UrlRejected:
                attempt += 1
                if attempt > 3:
                    raise
                renew()
                continue
            except Transient as exc:
                attempt += 1
                if 0 <= self.attempts <= attempt:
                    raise exc.__cause__ or exc from None  # type: ignore[misc]
                self.reporter.warn(f"{exc.__cause__}; retrying ({attempt}/{self.attempts})")
                time.sleep(delay(attempt))
                continue
            finally:
                body.close()
            digest = body.md5.hexdigest()
            # An SSE-KMS store's ETag is not the MD5 (the original skips the check too); the
            # whole file's MD5 is still checked before the upload is completed.
            if stored.encryption != "aws:kms" and stored.etag.lower() != digest:
                attempt += 1
                if attempt > 3:
                    raise IntegrityError(
                        f"{what}: the store received MD5 {stored.etag}, not {digest}"
                    )
                self.reporter.warn(f"{what}: the store received different bytes; sending again")
                continue
            self.api.finalize_part(object_id, upload_id, part.partNumber, digest, stored.etag)
            return


class _Stream:
    """What http.client sends: a file-like body with a known length."""

    def __init__(self, body: PartBody, length: int) -> None:
        self.body, self.length = body, length

    def read(self, n: int = READ_BLOCK) -> bytes:
        return self.body.read(n)

    def __len__(self) -> int:
        return self.length


class _Hasher(threading.Thread):
    """The whole file's MD5, read sequentially beside the part uploads."""

    def __init__(self, fd: int, size: int) -> None:
        super().__init__(daemon=True)
        self.fd, self.size = fd, size
        self.digest: str | None = None
        self.error: OSError | None = None

    def run(self) -> None:
        h = hashlib.md5()
        pos = 0
        try:
            if os.fstat(self.fd).st_size < self.size:
                raise OSError("file shrank while uploading")
            while pos < self.size:  # through a mapping: no copy into a buffer
                length = min(HASH_WINDOW, self.size - pos)
                with mmap.mmap(self.fd, length, prot=mmap.PROT_READ, offset=pos) as window:
                    window.madvise(mmap.MADV_SEQUENTIAL)
                    with memoryview(window) as mv:
                        h.update(mv)
                pos += length
            self.digest = h.hexdigest()
        except (OSError, ValueError) as exc:
            self.error = OSError(str(exc))

    def result(self) -> str:
        self.join()
        if self.error is not None:
            raise ScoreError(f"reading the file failed: {self.error}")
        return self.digest or ""


@dataclass
class _Named:
    """The shape progress reporters expect of a transfer."""

    file_name: str
    object_id: str
    size: int
    final: Path
