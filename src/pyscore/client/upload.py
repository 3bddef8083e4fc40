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
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from pyscore.client.api import Api, NotOffered, refusal, status_phrase
from pyscore.client.digest import file_md5
from pyscore.client.errors import IntegrityError, ScoreError, SettingError, UsageError
from pyscore.client.httpio import SMALL_BODY, Connections, UrlRejected, buffer_cap, put
from pyscore.client.progress import Reporter
from pyscore.client.retry import Attempts, Transient
from pyscore.wire.batch import FINISH_PARTS, PartSent, UploadDone, UploadStartResult
from pyscore.wire.files import human_size as human
from pyscore.wire.score import Part

READ_BLOCK = 1024 * 1024
MAP_WINDOW = 8 * 1024 * 1024
FILES_AT_ONCE = 8  # files uploaded side by side (each file's round trips overlap others')
AHEAD = 256  # by batch: uploads begun whose parts are not all sent yet, at most


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
        self, items: list[Item], force: bool = False, verify: bool = False
    ) -> list[Optional[ScoreError]]:
        """Upload every item, FILES_AT_ONCE at a time; each item's error (None: uploaded), in
        input order, each also reported as it happens. `verify` (--verify-connection) checks
        the store beside the first calls; its failure is the run's."""
        sizes = [i.path.stat().st_size if i.path.is_file() else 0 for i in items]
        self.reporter.plan(len(items), sum(sizes))
        storage = self.api.settings.storage_url
        pinged = None
        if verify or not self.api.batch_offer(storage)[0]:
            try:  # the answer also says whether the server takes batches
                url = self.api.ping_url()
            except ScoreError as exc:
                if verify or isinstance(exc, SettingError):  # a wrong URL is the run's
                    raise
                url = ""
            if verify:
                pinged = self.calls.submit(self.api.ping_store, url)
        results = _Results(len(items), self.reporter)
        todo = list(range(len(items)))
        if self.api.batch_offer(storage)[1]:
            todo = self._upload_batched(items, force, results)

        def one(i: int) -> None:
            try:
                self.upload(items[i], force, planned=True)
            except ScoreError as exc:
                results.failed(i, exc)

        if todo:
            with ThreadPoolExecutor(min(FILES_AT_ONCE, len(todo)), "upload-file") as files:
                list(files.map(one, todo))
        if pinged is not None:
            pinged.result()  # the connection check's failure is the run's
        return results.errors

    def _upload_batched(self, items: list[Item], force: bool, results: _Results) -> list[int]:
        """Upload through pyscore's batch extension (wire/batch.py): uploads begun a batch
        at a time (8, 32, then as many as the server takes), each file's parts sent as soon
        as its upload is, and finished files completed a batch at a time, whatever is ready
        when the last batch returns. Errors go into `results`; returns the items left for
        the original's calls (all of them if the server does not answer batches)."""
        most = self.api.batch_offer(self.api.settings.storage_url)[1] or 1
        sizes: dict[int, int] = {}
        for i, item in enumerate(items):
            try:
                sizes[i] = local_size(item.path)
            except ScoreError as exc:
                results.failed(i, exc)
        ready = list(sizes)
        finisher = _Finisher(self.api, self.reporter, results, most)
        sending: set[Future[None]] = set()
        with finisher, ThreadPoolExecutor(FILES_AT_ONCE, "upload-file") as files:
            at, size = 0, FILES_AT_ONCE
            while at < len(ready):
                chunk = ready[at : at + size]
                wanted = [(items[i].object_id, sizes[i], items[i].md5, force) for i in chunk]
                try:
                    started = self.api.upload_starts(wanted)
                except NotOffered:
                    if at == 0:
                        self.api.no_batches(self.api.settings.storage_url)
                        return ready
                    raise
                except ScoreError as exc:
                    for i in chunk:
                        results.failed(i, exc)
                    started = []
                else:  # a full answer answers the first ones: the rest asked again
                    chunk = chunk[: len(started)]
                for i, answer in zip(chunk, started):
                    if answer.status != 200 or answer.uploadId is None or answer.parts is None:
                        results.failed(i, self._start_refused(items[i], answer))
                        continue
                    if answer.resumed:
                        self._resuming(items[i], answer.parts)
                    sending.add(files.submit(self._send_batched, items[i], i, answer, finisher))
                at += len(chunk)
                size = min(most, size * 4)
                while len(sending) > AHEAD:  # begun uploads not far ahead of their parts
                    _, sending = wait(sending, return_when=FIRST_COMPLETED)
        for i in ready:  # never a silent loss, whatever went wrong above
            if i not in results.completed and results.errors[i] is None:
                results.failed(i, ScoreError(f"{items[i].path}: the upload was not completed"))
        return []

    def _send_batched(
        self, item: Item, index: int, answer: UploadStartResult, finisher: _Finisher
    ) -> None:
        upload_id, parts = answer.uploadId or "", answer.parts or []
        try:
            sent = self._send_file(item, upload_id, parts, finalize=False)
        except ScoreError as exc:
            finisher.results.failed(index, exc)
            return
        size = sum(p.partSize for p in parts)
        finisher.put(index, _named(item, size), UploadDone(item.object_id, upload_id, sent))

    def _start_refused(self, item: Item, answer: UploadStartResult) -> ScoreError:
        if answer.errorId == "object.already.exists":
            return already_uploaded(item)
        message = answer.message or ""
        return refusal(
            answer.status, message, status_phrase(answer.status), f"upload of {item.object_id}"
        )

    def _resuming(self, item: Item, parts: list[Part]) -> None:
        done = sum(p.partSize for p in parts if finished(p))
        size = sum(p.partSize for p in parts)
        self.reporter.info(
            f"Resuming upload of {item.path.name}: {human(done)} of "
            f"{human(size)} already on the server"
        )

    def upload(self, item: Item, force: bool = False, planned: bool = False) -> None:
        """Upload one file, resuming an interrupted upload of it if there is one, by the
        original's calls (each part finalized as it is sent)."""
        path, object_id = item.path, item.object_id
        size = local_size(path)
        # Both questions at once: one round trip, not two.
        status_f = None if force else self.calls.submit(self.api.upload_status, object_id, size)
        if self.api.upload_exists(object_id) and not force:
            raise already_uploaded(item)
        status = None if status_f is None else status_f.result()
        if status is not None:
            upload_id, parts = status.uploadId, status.parts
            self._resuming(item, parts)
        else:
            spec = self.api.initiate_upload(object_id, size, item.md5, overwrite=force)
            upload_id, parts = spec.uploadId, spec.parts
        if not planned:
            self.reporter.plan(1, size)
        self._send_file(item, upload_id, parts, finalize=True)
        self.api.complete_upload(object_id, upload_id)
        self.reporter.finished(_named(item, size), 0.0)

    def _send_file(
        self, item: Item, upload_id: str, parts: list[Part], finalize: bool
    ) -> list[PartSent]:
        """Send a file's missing parts and check its whole MD5 against the declared one
        (cancelling the upload if it differs); the parts sent (each finalized as it is sent,
        with `finalize`)."""
        path, object_id = item.path, item.object_id
        size = sum(p.partSize for p in parts)
        self.reporter.started(_named(item, size), sum(p.partSize for p in parts if finished(p)))
        fd = os.open(path, os.O_RDONLY)
        try:
            missing = [p for p in parts if not finished(p)]
            whole = len(parts) == 1 and len(missing) == 1  # the part's MD5 is the file's
            hasher = None if whole else _Hasher(fd, size)
            if hasher is not None:
                hasher.start()
            sent = self._send_parts(fd, item, upload_id, missing, size, finalize)
            digest = sent[0].md5 if whole else hasher.result() if hasher else ""
        finally:
            os.close(fd)
        if digest != item.md5.lower():
            self.api.cancel_upload(object_id)
            raise IntegrityError(
                f"{path}: MD5 {digest} differs from {item.md5}, which the "
                "analysis declares; the upload was cancelled"
            )
        return sent

    def _send_parts(
        self,
        fd: int,
        item: Item,
        upload_id: str,
        parts: list[Part],
        size: int,
        finalize: bool,
    ) -> list[PartSent]:
        """Send the parts on the shared senders; what was sent, in order."""
        path, object_id = item.path, item.object_id
        urls = {p.partNumber: p.url for p in parts}
        lock = threading.Lock()
        named = _named(item, size)
        failed = threading.Event()

        def renew() -> None:
            status = self.api.upload_status(object_id, size)
            if status is None or status.uploadId != upload_id:
                raise ScoreError(f"{path.name}: the upload was cancelled or replaced on the server")
            with lock:
                urls.update({p.partNumber: p.url for p in status.parts if p.url})

        def send(part: Part) -> PartSent:
            if failed.is_set():
                return PartSent(part.partNumber, "", "")
            local = self.local
            if local.conns is None:
                local.conns = Connections(self.timeout)
                with self.lock:
                    self.all_conns.append(local.conns)
            try:
                sent = self._send_one(local.conns, fd, part, urls, lock, renew, path)
                if finalize:
                    self.api.finalize_part(
                        object_id, upload_id, part.partNumber, sent.md5, sent.etag
                    )
            except OSError as exc:
                failed.set()
                raise ScoreError(f"{path}: {exc}") from None
            except ScoreError:
                failed.set()
                raise
            self.reporter.advanced(named, part.partSize)
            return sent

        futures = [
            (self.small if p.partSize <= SMALL_BODY else self.senders).submit(send, p)
            for p in parts
        ]
        errors = []
        sent = []
        for future in futures:
            try:
                sent.append(future.result())
            except ScoreError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        return sent

    def _send_one(
        self,
        conns: Connections,
        fd: int,
        part: Part,
        urls: dict[int, Optional[str]],
        lock: threading.Lock,
        renew: Callable[[], None],
        path: Path,
    ) -> PartSent:
        """One part PUT, checked against the ETag the store answers."""
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
            return PartSent(part.partNumber, digest, stored.etag)


def items_for(
    manifest: Optional[Path], object_id: Optional[str], file: Optional[Path], md5: Optional[str]
) -> list[Item]:
    """What to upload: a Song upload manifest's rows (paths relative to it), or one object
    with its file and the MD5 its analysis declares."""
    from pyscore.client.api import manifest_path, read_manifest_text
    from pyscore.wire.manifest import parse_upload

    if bool(manifest) == bool(object_id):
        raise UsageError("Give either --manifest or --object-id (with --file and --md5)")
    if object_id:
        if not file or not md5:
            raise UsageError("--object-id needs --file and --md5")
        if len(md5) != 32 or any(c not in "0123456789abcdefABCDEF" for c in md5):
            raise UsageError(f"--md5 {md5!r} is not an MD5 (32 hex digits)")
        return [Item(object_id, Path(file), md5.lower())]
    assert manifest is not None
    manifest = Path(manifest)
    _, rows = parse_upload(read_manifest_text(str(manifest)), str(manifest))
    base = manifest_path(str(manifest)).parent
    return [
        Item(oid, (base / path) if not Path(path).is_absolute() else Path(path), md5)
        for oid, path, md5 in rows
    ]


def upload_items(
    api: Api, uploader: Uploader, items: list[Item], force: bool, verify: bool
) -> dict[str, ScoreError]:
    """Upload the items; each failed one's error by object id (one item: its error raised,
    as the command line has it)."""
    if len(items) == 1:
        if verify:
            api.ping()
        uploader.upload(items[0], force=force)
        return {}
    errors = uploader.upload_many(items, force=force, verify=verify)
    return {i.object_id: e for i, e in zip(items, errors) if e is not None}


def local_size(path: Path) -> int:
    """The size of a file that can be uploaded."""
    if not path.is_file():
        raise UsageError(f"{path} does not exist or is not a file")
    size = path.stat().st_size
    if size == 0:
        raise UsageError(f"{path} is empty; empty files cannot be uploaded")
    return size


def already_uploaded(item: Item) -> UsageError:
    return UsageError(
        f"object {item.object_id} ({item.path.name}) is already uploaded; use --force "
        "to replace it (only while its analysis is unpublished)"
    )


class _Results:
    """Each item's error (None: uploaded), each reported as it happens when there are
    several."""

    def __init__(self, count: int, reporter: Reporter) -> None:
        self.errors: list[Optional[ScoreError]] = [None] * count
        self.completed: set[int] = set()
        self.reporter = reporter

    def failed(self, index: int, error: ScoreError) -> None:
        self.errors[index] = error
        if len(self.errors) > 1:
            self.reporter.error(str(error))


class _Finisher(threading.Thread):
    """Completes sent files through `POST /upload/batch/finish`: each request takes every
    file finished while the last one was on its way (up to `most`, and FINISH_PARTS parts),
    so a batch grows with the link's round trip and a file never waits for others."""

    def __init__(self, api: Api, reporter: Reporter, results: _Results, most: int) -> None:
        super().__init__(name="upload-finish", daemon=True)
        self.api, self.reporter, self.results, self.most = api, reporter, results, most
        self.queue: queue.SimpleQueue[Optional[tuple[int, _Named, UploadDone]]] = (
            queue.SimpleQueue()
        )
        self.start()

    def put(self, index: int, named: _Named, done: UploadDone) -> None:
        self.queue.put((index, named, done))

    def __enter__(self) -> _Finisher:
        return self

    def __exit__(self, *_: object) -> None:
        """Wait for every file put so far to be completed."""
        self.queue.put(None)
        self.join()

    def run(self) -> None:
        last = False
        while not last:
            batch = [self.queue.get()]
            parts = 0
            while batch[-1] is not None and len(batch) < self.most and parts < FINISH_PARTS:
                parts += len(batch[-1][2].parts)
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            if batch[-1] is None:
                last = True
                batch.pop()
            if batch:
                self._finish([b for b in batch if b is not None])

    def _finish(self, batch: list[tuple[int, _Named, UploadDone]]) -> None:
        try:
            errors = self.api.upload_finishes([done for _, _, done in batch])
        except NotOffered:  # began by batch, yet not finished by one: the original's calls
            errors = [self._finish_one(done) for _, _, done in batch]
        except ScoreError as exc:
            errors = [exc] * len(batch)
        for (index, named, _), error in zip(batch, errors):
            if error is None:
                self.results.completed.add(index)
                self.reporter.finished(named, 0.0)
            else:
                self.results.failed(index, error)

    def _finish_one(self, done: UploadDone) -> Optional[ScoreError]:
        try:
            for p in done.parts:
                self.api.finalize_part(done.objectId, done.uploadId, p.partNumber, p.md5, p.etag)
            self.api.complete_upload(done.objectId, done.uploadId)
            return None
        except ScoreError as exc:
            return exc


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


def _named(item: Item, size: int) -> _Named:
    return _Named(item.path.name, item.object_id, size, item.path)


@dataclass
class _Named:
    """The shape progress reporters expect of a transfer."""

    file_name: str
    object_id: str
    size: int
    final: Path
