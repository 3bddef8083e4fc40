"""The download engine: parallel ranged GETs into a preallocated `.part` file, crash-safe, with
the MD5 computed as the finished prefix grows, verified before an atomic rename.

Threads, not asyncio: the byte path is `readinto` + `pwrite` + `md5.update`, all of which drop
the GIL, so N worker threads and one hasher per file keep both cores busy.

On disk, beside the output (same filesystem, so the final rename is atomic):
  <output-dir>/.score-client/<objectId>.part     the data, at its final offsets
  <output-dir>/.score-client/<objectId>.journal   ranges known durable (fdatasync'ed)
A syncer thread makes written ranges durable and journals them every `SYNC_SECONDS`, so a
`kill -9` at any moment loses at most what was written since the last sync.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import mmap
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pyscore.client.errors import DiskFullError, IntegrityError, ScoreError, UsageError
from pyscore.client.httpio import (
    BUFFER,
    Connections,
    UrlRejected,
    binds_range,
    get_range,
    url_expiry,
)
from pyscore.client.ranges import Journal, Ranges
from pyscore.client.retry import Transient, delay
from pyscore.client.safefiles import data_mode, open_dir, open_private, private_dir
from pyscore.wire.score import ObjectSpecification

STATE_DIR = ".score-client"
SYNC_SECONDS = 0.5
MIN_PIECE = 8 * 1024 * 1024
SMALL_FILE = MIN_PIECE  # one request: nothing worth resuming inside it
RENEW_MARGIN = 60.0
HASH_WINDOW = 16 * 1024 * 1024


@dataclass
class Target:
    """One object to fetch and where it must end up."""

    object_id: str
    file_name: str
    final: Path
    spec: ObjectSpecification
    validate: bool = True
    offset: int = 0  # first byte of the object wanted (--offset)
    partial: bool = False  # only a byte range: the whole-object MD5 cannot be checked

    @property
    def size(self) -> int:
        return self.spec.objectSize


class Events:
    """What the engine reports; progress.py renders it. All methods may be called from any
    thread."""

    def started(self, target: Target, already: int) -> None: ...
    def advanced(self, target: Target, nbytes: int) -> None: ...
    def finished(self, target: Target, seconds: float) -> None: ...
    def failed(self, target: Target, error: ScoreError) -> None: ...
    def warn(self, message: str) -> None: ...


@dataclass
class Task:
    download: FileDownload
    part_index: int
    start: int  # file positions, [start, end)
    end: int
    whole_part: bool = False  # the URL binds the part's Range: fetch, and refetch, it whole
    credited: int = 0  # bytes of it already reported as done (a part refetched after resume)


@dataclass
class FileDownload:
    """The state of one object being fetched."""

    target: Target
    root: Path
    renew: Callable[[], ObjectSpecification]
    events: Events
    fd: int = -1
    lock_fd: int = -1
    done: Ranges = field(default_factory=Ranges)  # durable and journaled
    written: Ranges = field(default_factory=Ranges)  # in the page cache at least
    unsynced: list[tuple[int, int]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    io: threading.Lock = field(default_factory=threading.Lock)  # guards fd against close
    pending_tasks: int = 0
    error: ScoreError | None = None
    started_at: float = field(default_factory=time.monotonic)
    finished: threading.Event = field(default_factory=threading.Event)
    renewals: int = 0

    def __post_init__(self) -> None:
        self.state_dir = self.root / STATE_DIR
        self.part_path = self.state_dir / f"{self.target.object_id}.part"
        self.journal = Journal(
            self.state_dir / f"{self.target.object_id}.journal",
            {
                "objectId": self.target.object_id,
                "size": self.target.size,
                "md5": self.target.spec.objectMd5,
                "offset": self.target.offset,
                "v": 1,
            },
        )
        # A small file is fetched again rather than resumed: no journal, no periodic syncs
        # (with thousands of small files those fsyncs, not the network, set the pace).
        self.journaled = self.target.size > SMALL_FILE

    @property
    def size(self) -> int:
        return self.target.size

    # -- setup ----------------------------------------------------------------------------
    def open(self) -> None:
        """Open or resume the .part file; preallocate; take the per-object lock."""
        private_dir(self.state_dir)
        self.lock_fd = open_private(
            self.state_dir / f"{self.target.object_id}.lock", os.O_RDWR | os.O_CREAT
        )
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.lock_fd)
            self.lock_fd = -1
            raise UsageError(
                f"{self.target.file_name}: another score-client is downloading "
                f"object {self.target.object_id} into this directory"
            ) from None
        done = self.journal.load() if self.journaled and self.part_path.exists() else Ranges()
        self.fd = open_private(self.part_path, os.O_RDWR | os.O_CREAT)
        if os.fstat(self.fd).st_size != self.size:
            done = Ranges() if os.fstat(self.fd).st_size > self.size else done
            self._preallocate(done)
        self.done = Ranges(done.spans())
        self.written = Ranges(done.spans())
        if self.journaled:
            self.journal.open(self.done)

    def _preallocate(self, done: Ranges) -> None:
        try:
            os.posix_fallocate(self.fd, 0, max(self.size, 1))
            os.ftruncate(self.fd, self.size)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                free = shutil.disk_usage(self.state_dir).free
                raise DiskFullError(
                    f"{self.target.file_name}: not enough disk space in {self.state_dir.parent}: "
                    f"needs {self.size - done.total():,} more bytes, {free:,} available; "
                    "finished parts are kept, re-run to resume"
                ) from None
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                os.ftruncate(self.fd, self.size)
            else:
                raise

    def tasks(self, parallel: int) -> list[Task]:
        """Pieces still missing, within part bounds, sized so even one file fills the pool.
        A part whose URL binds its Range (binds_range) is one task, fetched whole even when
        only some of it is missing."""
        piece = max(MIN_PIECE, -(-self.size // (parallel * 4)))
        out = []
        for index, part in enumerate(self.target.spec.parts):
            start = part.offset - self.target.offset
            gaps = self.done.missing(start, start + part.partSize)
            if gaps and binds_range(part.url or ""):
                missing = sum(e - s for s, e in gaps)
                end = start + part.partSize
                out.append(Task(self, index, start, end, True, part.partSize - missing))
                continue
            for gap_start, gap_end in gaps:
                for s in range(gap_start, gap_end, piece):
                    out.append(Task(self, index, s, min(gap_end, s + piece)))
        self.pending_tasks = len(out)
        return out

    # -- data path (worker threads) -------------------------------------------------------
    def url_for(self, task: Task) -> str:
        with self.cond:
            part = self.target.spec.parts[task.part_index]
            expiry = url_expiry(part.url or "")
            if expiry is not None and expiry - time.time() < RENEW_MARGIN:
                self._renew_locked()
                part = self.target.spec.parts[task.part_index]
            return part.url or ""

    def renew_after_rejection(self, url: str) -> None:
        with self.cond:
            if self.target.spec.parts and url not in {p.url for p in self.target.spec.parts}:
                return  # another worker already renewed
            if self.renewals >= 5:
                raise ScoreError(
                    f"{self.target.file_name}: object store keeps refusing fresh signed URLs"
                )
            self._renew_locked()

    def _renew_locked(self) -> None:
        fresh = self.renew()
        if [(p.offset, p.partSize) for p in fresh.parts] != [
            (p.offset, p.partSize) for p in self.target.spec.parts
        ]:
            raise ScoreError(
                f"{self.target.file_name}: the object changed on the server "
                "during the download; re-run with --force"
            )
        self.target.spec = fresh
        self.renewals += 1

    def write(self, chunk: memoryview, pos: int) -> None:
        n = len(chunk)
        written = os.pwrite(self.fd, chunk, pos)
        if written != n:
            raise OSError(errno.EIO, f"short write at {pos}")
        with self.cond:
            self.written.add(pos, pos + n)
            self.unsynced.append((pos, pos + n))
            self.cond.notify_all()

    def task_done(self, error: ScoreError | None = None) -> None:
        with self.cond:
            self.pending_tasks -= 1
            if error is not None and self.error is None:
                self.error = error
            self.cond.notify_all()

    # -- durability (syncer thread) -------------------------------------------------------
    def sync(self) -> None:
        with self.io:
            with self.cond:
                spans = self.unsynced
                self.unsynced = []
            if not spans or self.fd < 0 or not self.journaled:
                return
            os.fdatasync(self.fd)
            merged = Ranges(spans)
            self.journal.append(merged.spans())
        with self.cond:
            for s, e in merged.spans():
                self.done.add(s, e)

    # -- hashing and finishing (one thread per file) --------------------------------------
    def hash_and_finish(self) -> None:
        try:
            digest = self._hash_prefix()
            if digest is None:
                return
            self.sync()
            self._verify(digest)
            os.fchmod(self.fd, data_mode())  # private while partial; then as the umask says
            os.fsync(self.fd)
            self._move_into_place()
            self.journal.remove()
            (self.state_dir / f"{self.target.object_id}.lock").unlink(missing_ok=True)
            self.events.finished(self.target, time.monotonic() - self.started_at)
        except ScoreError as exc:
            with self.cond:
                self.error = self.error or exc
        except OSError as exc:
            with self.cond:
                self.error = self.error or ScoreError(f"{self.target.file_name}: {exc}")
        finally:
            with self.cond:  # no worker may still be writing when the fd closes
                while self.pending_tasks > 0:
                    self.cond.wait(1.0)
            if self.error is not None:
                self.sync()
            self.close()
            if self.error is not None:
                self.events.failed(self.target, self.error)
            self.finished.set()

    def _move_into_place(self) -> None:
        """Rename the verified .part to its final name, through directories opened without
        following links (a link planted in the output directory is replaced, not followed)."""
        relative = self.target.final.relative_to(self.root.resolve())
        folder = open_dir(self.root, relative.parent.parts)
        try:
            os.replace(self.part_path, relative.name, dst_dir_fd=folder)
            os.fsync(folder)
        finally:
            os.close(folder)

    def _hash_prefix(self) -> str | None:
        """MD5 of the file, following the contiguous written prefix; None if the file failed."""
        md5 = hashlib.md5() if self.target.validate else None
        pos = 0
        while True:
            with self.cond:
                while True:
                    if self.error is not None:
                        return None
                    frontier = self.written.end_of_run(pos)
                    if frontier > pos or pos >= self.size:
                        break
                    if self.pending_tasks == 0 and pos < self.size:
                        self.error = ScoreError(
                            f"{self.target.file_name}: download ended with bytes {pos}.. missing"
                        )
                        return None
                    self.cond.wait(1.0)
            if pos >= self.size:
                with self.cond:
                    while self.pending_tasks > 0 and self.error is None:
                        self.cond.wait(1.0)
                    if self.error is not None:
                        return None
                return md5.hexdigest() if md5 else ""
            if md5 is None:
                pos = frontier
                continue
            while pos < frontier:
                # Hash straight from the page cache through a mapping: no copy into a buffer.
                start = pos - pos % mmap.ALLOCATIONGRANULARITY
                length = min(frontier, start + HASH_WINDOW) - start
                with mmap.mmap(self.fd, length, prot=mmap.PROT_READ, offset=start) as window:
                    window.madvise(mmap.MADV_SEQUENTIAL)
                    with memoryview(window) as mv:
                        md5.update(mv[pos - start : length])
                pos = start + length

    def _verify(self, digest: str) -> None:
        size = os.fstat(self.fd).st_size
        if size != self.size:
            raise IntegrityError(
                f"{self.target.file_name}: size {size} differs from the expected {self.size}"
            )
        expected = (self.target.spec.objectMd5 or "").lower()
        if not self.target.validate or not expected or self.target.partial:
            return
        if digest != expected:
            raise IntegrityError(
                f"{self.target.file_name}: MD5 {digest} differs from the expected {expected}"
            )

    def close(self) -> None:
        with self.io:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
            self.journal.close()
            if self.lock_fd >= 0:
                os.close(self.lock_fd)
                self.lock_fd = -1


class Downloader:
    """A pool of workers shared by every file, so many small files go at once."""

    def __init__(
        self, parallel: int, attempts: int, timeout: float, connect_timeout: float, events: Events
    ) -> None:
        self.parallel = parallel
        self.attempts = attempts
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.events = events
        self.queue: queue.Queue[Task | None] = queue.Queue()
        self.stop = threading.Event()

    # -- workers --------------------------------------------------------------------------
    def _worker(self) -> None:
        conns = Connections(self.timeout, self.connect_timeout)
        buf = memoryview(bytearray(BUFFER))
        try:
            while True:
                task = self.queue.get()
                if task is None:
                    return
                error = None
                try:
                    self._fetch(task, conns, buf)
                except ScoreError as exc:
                    error = exc
                except OSError as exc:
                    error = self._os_error(task, exc)
                task.download.task_done(error)
        finally:
            conns.close()

    def _os_error(self, task: Task, exc: OSError) -> ScoreError:
        if exc.errno == errno.ENOSPC:
            free = shutil.disk_usage(task.download.state_dir).free
            return DiskFullError(
                f"{task.download.target.file_name}: disk full; finished parts "
                f"are kept; {free:,} bytes free"
            )
        return ScoreError(f"{task.download.target.file_name}: {exc}")

    def _fetch(self, task: Task, conns: Connections, buf: memoryview) -> None:
        d = task.download
        name = d.target.file_name
        pos = task.start
        reported = task.start + task.credited
        attempt = 0
        origin = d.target.offset

        def sink(chunk: memoryview, offset: int) -> None:
            nonlocal pos, reported
            d.write(chunk, offset - origin)
            pos = offset - origin + len(chunk)
            if pos > reported:  # a part fetched again is not progress twice
                d.events.advanced(d.target, pos - reported)
                reported = pos

        while pos < task.end:
            if d.error is not None or self.stop.is_set():
                return
            if task.whole_part:
                pos = task.start  # its URL serves only the part's own Range
            url = d.url_for(task)
            try:
                get_range(
                    conns,
                    url,
                    pos + origin,
                    task.end + origin,
                    buf,
                    sink,
                    f"{name} bytes {pos}-{task.end - 1}",
                )
                attempt = 0
            except UrlRejected:
                attempt += 1
                if attempt > 3:
                    raise
                d.renew_after_rejection(url)
            except Transient as exc:
                attempt += 1
                if 0 <= self.attempts <= attempt:
                    cause = exc.__cause__
                    raise (
                        cause if isinstance(cause, ScoreError) else ScoreError(f"{name}: {cause}")
                    ) from None
                self.events.warn(f"{name}: {exc.__cause__}; retrying ({attempt}/{self.attempts})")
                time.sleep(delay(attempt))

    # -- orchestration --------------------------------------------------------------------
    def run(
        self, root: Path, targets: list[Target], renew: Callable[[Target], ObjectSpecification]
    ) -> dict[str, ScoreError | None]:
        """Fetch every target; return objectId → None (ok) or the error that stopped it."""
        results: dict[str, ScoreError | None] = {}
        workers = [
            threading.Thread(target=self._worker, name=f"download-{i}", daemon=True)
            for i in range(self.parallel)
        ]
        for w in workers:
            w.start()
        active: list[FileDownload] = []
        syncer_stop = threading.Event()
        syncer = threading.Thread(
            target=self._syncer, args=(active, syncer_stop), name="download-sync", daemon=True
        )
        syncer.start()
        try:
            for target in targets:
                while (
                    self._reap(active, results) >= self.parallel * 2
                    or self.queue.qsize() >= self.parallel * 2
                ):
                    time.sleep(0.005)
                d = FileDownload(target, root, lambda t=target: renew(t), self.events)
                try:
                    d.open()
                except ScoreError as exc:
                    d.close()
                    results[target.object_id] = exc
                    self.events.failed(target, exc)
                    continue
                self.events.started(target, d.done.total())
                tasks = d.tasks(self.parallel)
                active.append(d)
                threading.Thread(
                    target=d.hash_and_finish, name=f"hash-{target.object_id[:8]}", daemon=True
                ).start()
                for task in tasks:
                    self.queue.put(task)
            while self._reap(active, results):
                time.sleep(0.005)
        except KeyboardInterrupt:
            self.stop.set()
            raise
        finally:
            for _ in workers:
                self.queue.put(None)
            for w in workers:
                w.join(timeout=5 if self.stop.is_set() else None)
            syncer_stop.set()
            syncer.join()
            for d in list(active):
                d.sync()
        return results

    @staticmethod
    def _reap(active: list[FileDownload], results: dict[str, ScoreError | None]) -> int:
        """Move finished files to results; return how many are still active."""
        for d in list(active):
            if d.finished.is_set():
                active.remove(d)
                results[d.target.object_id] = d.error
        return len(active)

    def _syncer(self, active: list[FileDownload], stop: threading.Event) -> None:
        while not stop.wait(SYNC_SECONDS):
            for d in list(active):
                with contextlib.suppress(OSError):  # the writing worker reports disk errors
                    d.sync()
