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
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from pyscore.client.api import Api
from pyscore.client.digest import file_md5
from pyscore.client.errors import IntegrityError, ScoreError, UsageError
from pyscore.client.httpio import SMALL_BODY, Connections, UrlRejected, buffer_cap, put
from pyscore.client.progress import Reporter
from pyscore.client.retry import Attempts, Transient
from pyscore.wire.files import human_size as human
from pyscore.wire.score import Part

READ_BLOCK = 1024 * 1024
MAP_WINDOW = 8 * 1024 * 1024
FILES_AT_ONCE = 8  # files uploaded side by side (each file's round trips overlap others')


@dataclass
class Item:
    object_id: str
    path: Path
    md5: str  # what the analysis declares


class PartBody:
    """A part of a file as a request body: slices of a small read-only mapping that slides
    along the part, each hashed as it is handed to the socket (no copy into Python
    buffers, and only MAP_WINDOW of the file mapped at a time)."""

    def __init__(self, fd: int, offset: int, length: int, window: int = MAP_WINDOW) -> None:
        if os.fstat(fd).st_size < offset + length:
            raise OSError(f"file shrank while uploading (part at byte {offset})")
        self.fd, self.pos, self.end = fd, offset, offset + length
        self.md5 = hashlib.md5()
        self.map: mmap.mmap | None = None
        self.map_start = self.map_end = 0
        self.window = window

    def read(self, n: int = READ_BLOCK) -> memoryview | bytes:
        if self.pos >= self.end:
            return b""
        if not self.map_start <= self.pos < self.map_end:
            self.close()  # the previous slice was sent before this call
            self.map_start = self.pos - self.pos % mmap.ALLOCATIONGRANULARITY
            self.map_end = min(self.end, self.map_start + self.window)
            self.map = mmap.mmap(
                self.fd, self.map_end - self.map_start, prot=mmap.PROT_READ, offset=self.map_start
            )
        lo = self.pos - self.map_start
        assert self.map is not None
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


class _Worker(threading.local):
    """A part-sending thread's keep-alive connections, reused from part to part and file to
    file."""

    conns: Optional[Connections] = None


class Uploader:
    """Uploads files FILES_AT_ONCE at a time; every file's parts go through one pool of
    `parallel` senders whose connections are kept alive."""

    def __init__(self, api: Api, reporter: Reporter, parallel: int) -> None:
        self.api = api
        self.reporter = reporter
        self.reporter.verb = "uploaded"
        self.parallel = parallel
        settings = api.settings
        self.attempts = settings.int("storage.retryNumber")
        self.timeout = float(settings.int("client.readTimeoutSeconds"))
        # Big parts on `parallel` connections (bandwidth-bound); small ones (latency-bound)
        # on FILES_AT_ONCE more, as downloads do.
        self.senders = ThreadPoolExecutor(parallel, "upload-part")
        self.small = ThreadPoolExecutor(FILES_AT_ONCE, "upload-small")
        self.window = max(READ_BLOCK, min(MAP_WINDOW, buffer_cap(parallel) * 2))
        self.calls = ThreadPoolExecutor(FILES_AT_ONCE, "upload-call")
        self.local = _Worker()
        self.all_conns: list[Connections] = []
        self.lock = threading.Lock()

    def close(self) -> None:
        self.senders.shutdown(wait=False, cancel_futures=True)
        self.small.shutdown(wait=False, cancel_futures=True)
        self.calls.shutdown(wait=False, cancel_futures=True)
        with self.lock:
            for conns in self.all_conns:
                conns.close()

    def upload_many(
        self,
        items: list[Item],
        force: bool = False,
        ping: Optional[Callable[[], None]] = None,
    ) -> list[Optional[ScoreError]]:
        """Upload every item, FILES_AT_ONCE at a time; each item's error (None: uploaded), in
        input order, each also reported as it happens. `ping` (--verify-connection) runs
        beside the first calls; its failure is the run's."""
        sizes = [i.path.stat().st_size if i.path.is_file() else 0 for i in items]
        self.reporter.plan(len(items), sum(sizes))
        pinged = self.calls.submit(ping) if ping else None

        def one(item: Item) -> Optional[ScoreError]:
            try:
                self.upload(item, force, planned=True)
                return None
            except ScoreError as exc:
                if pinged is not None:
                    pinged.result()  # the connection check's failure is the run's
                if len(items) > 1:
                    self.reporter.error(str(exc))
                return exc

        with ThreadPoolExecutor(min(FILES_AT_ONCE, max(len(items), 1)), "upload-file") as files:
            results = list(files.map(one, items))
        if pinged is not None:
            pinged.result()
        return results

    def upload(self, item: Item, force: bool = False, planned: bool = False) -> None:
        """Upload one file, resuming an interrupted upload of it if there is one."""
        path, object_id = item.path, item.object_id
        if not path.is_file():
            raise UsageError(f"{path} does not exist or is not a file")
        size = path.stat().st_size
        if size == 0:
            raise UsageError(f"{path} is empty; empty files cannot be uploaded")
        # Both questions at once: one round trip, not two.
        status_f = None if force else self.calls.submit(self.api.upload_status, object_id, size)
        if self.api.upload_exists(object_id) and not force:
            raise UsageError(
                f"object {object_id} ({path.name}) is already uploaded; use --force "
                "to replace it (only while its analysis is unpublished)"
            )
        status = None if status_f is None else status_f.result()
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
        if not planned:
            self.reporter.plan(1, size)
        named = _Named(path.name, object_id, size, path)
        self.reporter.started(named, sum(p.partSize for p in parts if finished(p)))
        fd = os.open(path, os.O_RDONLY)
        try:
            missing = [p for p in parts if not finished(p)]
            whole = len(parts) == 1 and len(missing) == 1  # the part's MD5 is the file's
            hasher = None if whole else _Hasher(fd, size)
            if hasher is not None:
                hasher.start()
            digests = self._send_parts(fd, object_id, upload_id, missing, path, size)
            digest = digests[0] if whole else hasher.result() if hasher else ""
        finally:
            os.close(fd)
        if digest != item.md5.lower():
            self.api.cancel_upload(object_id)
            raise IntegrityError(
                f"{path}: MD5 {digest} differs from {item.md5}, which the "
                "analysis declares; the upload was cancelled"
            )
        self.api.complete_upload(object_id, upload_id)
        self.reporter.finished(named, 0.0)

    def _send_parts(
        self, fd: int, object_id: str, upload_id: str, parts: list[Part], path: Path, size: int
    ) -> list[str]:
        """Send the parts on the shared senders; their MD5s, in order."""
        urls = {p.partNumber: p.url for p in parts}
        lock = threading.Lock()
        named = _Named(path.name, object_id, size, path)
        failed = threading.Event()

        def renew() -> None:
            status = self.api.upload_status(object_id, size)
            if status is None or status.uploadId != upload_id:
                raise ScoreError(f"{path.name}: the upload was cancelled or replaced on the server")
            with lock:
                urls.update({p.partNumber: p.url for p in status.parts if p.url})

        def send(part: Part) -> str:
            if failed.is_set():
                return ""
            local = self.local
            if local.conns is None:
                local.conns = Connections(self.timeout)
                with self.lock:
                    self.all_conns.append(local.conns)
            try:
                digest = self._send_one(
                    local.conns, fd, object_id, upload_id, part, urls, lock, renew, path
                )
            except OSError as exc:
                failed.set()
                raise ScoreError(f"{path}: {exc}") from None
            except ScoreError:
                failed.set()
                raise
            self.reporter.advanced(named, part.partSize)
            return digest

        futures = [
            (self.small if p.partSize <= SMALL_BODY else self.senders).submit(send, p)
            for p in parts
        ]
        errors = []
        digests = []
        for future in futures:
            try:
                digests.append(future.result())
            except ScoreError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        return digests

    def _send_one(
        self,
        conns: Connections,
        fd: int,
        object_id: str,
        upload_id: str,
        part: Part,
        urls: dict[int, Optional[str]],
        lock: threading.Lock,
        renew: Callable[[], None],
        path: Path,
    ) -> str:
        what = f"{path.name} part {part.partNumber}"
        budget = Attempts(
            self.attempts,
            lambda n, cause: self.reporter.warn(f"{cause}; retrying ({n}/{self.attempts})"),
        )
        mismatches = 0
        while True:
            body = PartBody(fd, part.offset, part.partSize, self.window)
            with lock:
                url = urls[part.partNumber]
            try:
                stored = put(conns, url or "", _Stream(body, part.partSize), what)
            except UrlRejected:
                if not budget.renewed():
                    raise
                renew()
                continue
            except Transient as exc:
                budget.failed(exc)
                continue
            finally:
                body.close()
            digest = body.md5.hexdigest()
            # An SSE-KMS store's ETag is not the MD5 (the original skips the check too); the
            # whole file's MD5 is still checked before the upload is completed.
            if stored.encryption != "aws:kms" and stored.etag.lower() != digest:
                mismatches += 1
                if mismatches > 3:
                    raise IntegrityError(
                        f"{what}: the store received MD5 {stored.etag}, not {digest}"
                    )
                self.reporter.warn(f"{what}: the store received different bytes; sending again")
                continue
            self.api.finalize_part(object_id, upload_id, part.partNumber, digest, stored.etag)
            return digest


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
        self.digest: Optional[str] = None
        self.error: Optional[OSError] = None

    def run(self) -> None:
        try:
            if os.fstat(self.fd).st_size < self.size:
                raise OSError("file shrank while uploading")
            self.digest = file_md5(self.fd, self.size)
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
