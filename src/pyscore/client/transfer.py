"""The download engine: parallel ranged GETs into a preallocated `.part` file, crash-safe, with
the MD5 computed as the finished prefix grows, verified before an atomic rename.

Threads, not asyncio: the byte path is `readinto` + `pwrite` + `md5.update`, all of which drop
the GIL, so N worker threads and one hasher per file keep both cores busy.

On disk, beside the output (same filesystem, so the final rename is atomic):
  <output-dir>/.score-client/<objectId>.part     the data, at its final offsets
  <output-dir>/.score-client/<objectId>.journal   ranges known durable (fdatasync'ed)
A syncer thread makes written ranges durable and journals them every `SYNC_SECONDS`, so a
`kill -9` at any moment loses at most what was written since the last sync.

A small file (up to SMALL_FILE: nothing worth resuming inside it) has none of that: its
worker opens the .part (flock on the .part itself, no lock file, no preallocation), hashes
the bytes as they arrive (one request) or after, and hands it to the `Settler`, which makes
many such files durable at once before renaming them. Killed, it is fetched again whole.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol

from pyscore.client.digest import file_md5, md5_mapped
from pyscore.client.errors import DiskFullError, IntegrityError, ScoreError, UsageError
from pyscore.client.httpio import (
    SMALL_BODY,
    Buffer,
    Connections,
    UrlRejected,
    binds_range,
    buffer_cap,
    get_range,
    stale,
)
from pyscore.client.ranges import Journal, Ranges
from pyscore.client.retry import Attempts, Transient
from pyscore.client.safefiles import (
    data_mode,
    open_dir,
    open_private,
    private_dir,
    private_dir_fd,
    sync_filesystem,
)
from pyscore.wire.score import ObjectSpecification

STATE_DIR = ".score-client"
SYNC_SECONDS = 0.5
MIN_PIECE = 8 * 1024 * 1024
MAX_PIECE = 32 * 1024 * 1024
HASH_STEP = 16 * 1024 * 1024  # the prefix the MD5 thread waits for before hashing on
HASH_POLL = 0.02  # how often it looks (writes do not wake it: thousands a second)
SMALL_FILE = MIN_PIECE  # one request: nothing worth resuming inside it
SMALL_SLOTS = 32  # small (latency-bound) requests at once, whatever --parallel says
ABORT_SECONDS = 1.0  # interrupted: how long aborted reads may take to write what they had


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
    retried: bool = False  # fetched again from scratch after failing verification

    @property
    def size(self) -> int:
        return self.spec.objectSize


class Events(Protocol):
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
    md5: Any = None  # a small file's MD5 of [0, hashed), fed as its bytes arrive in order
    hashed: int = 0

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
        # A small file is fetched again rather than resumed: no journal, no periodic syncs,
        # no lock file, no preallocation; it is made durable and renamed in batches
        # (`Settler`). With thousands of small files that work, not the network, sets the pace.
        self.small = self.target.size <= SMALL_FILE

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
        done = self.journal.load() if not self.small and self.part_path.exists() else Ranges()
        self.fd = open_private(self.part_path, os.O_RDWR | os.O_CREAT)
        if os.fstat(self.fd).st_size != self.size:
            done = Ranges() if os.fstat(self.fd).st_size > self.size else done
            self._preallocate(done)
        self.done = Ranges(done.spans())
        self.written = Ranges(done.spans())
        if not self.small:
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

    def open_small(self, state_fd: int) -> None:
        """A small file's .part, empty, locked by flock on itself (it never outlives the
        run that renames it, so it needs no lock file of its own)."""
        name = self.part_path.name
        for _ in range(3):
            try:
                fd = open_private(name, os.O_RDWR | os.O_CREAT | os.O_EXCL, state_fd)
                fresh = True
            except FileExistsError:  # left by a run that stopped, or another one's, or a link
                fd = open_private(name, os.O_RDWR, state_fd, self.part_path)
                fresh = False
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise UsageError(
                    f"{self.target.file_name}: another score-client is downloading "
                    f"object {self.target.object_id} into this directory"
                ) from None
            if fresh or _same_file(fd, name, state_fd):
                break
            os.close(fd)  # renamed into place by the run that held it: start again
        else:
            raise ScoreError(
                f"{self.part_path} keeps being replaced; is another score-client downloading here?"
            )
        if not fresh:
            os.ftruncate(fd, 0)
        self.fd = fd

    def tasks(self, parallel: int) -> list[Task]:
        """Pieces still missing, within part bounds, sized so even one file fills the pool.
        A part whose URL binds its Range (binds_range) is one task, fetched whole even when
        only some of it is missing."""
        # Pieces in offset order, `parallel` at a time; the MD5 follows the contiguous prefix,
        # so what is written beyond it waits to be hashed: at most `parallel` pieces. Capped
        # pieces bound that backlog, and small ones at the end leave little of it for after
        # the last byte arrives (hashing 1 GiB takes ~1.5 s of a core).
        piece = min(MAX_PIECE, max(MIN_PIECE, -(-self.size // (parallel * 4))))
        tail = self.size - 2 * parallel * MIN_PIECE
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
                s = gap_start
                while s < gap_end:
                    e = min(gap_end, s + (piece if s < tail else MIN_PIECE))
                    out.append(Task(self, index, s, e))
                    s = e
        self.pending_tasks = len(out)
        return out

    # -- data path (worker threads) -------------------------------------------------------
    def url_for(self, task: Task) -> str:
        with self.cond:
            part = self.target.spec.parts[task.part_index]
            if stale(part.url or ""):
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
        with self.cond:  # no notify: the MD5 thread looks every HASH_POLL (see _hash_prefix)
            self.written.add(pos, pos + n)
            self.unsynced.append((pos, pos + n))

    def write_small(self, chunk: memoryview, pos: int) -> None:
        """A small file's bytes: written, and hashed at once while they come in order."""
        n = len(chunk)
        written = os.pwrite(self.fd, chunk, pos)
        if written != n:
            raise OSError(errno.EIO, f"short write at {pos}")
        if self.md5 is not None:
            if pos == self.hashed:
                self.md5.update(chunk)
                self.hashed += n
            else:  # bytes written again (a part fetched anew): hash the file at the end
                self.md5 = None

    def task_done(self, error: ScoreError | None = None) -> bool:
        """Count a task finished (or failed); True if it was the file's last."""
        with self.cond:
            self.pending_tasks -= 1
            if error is not None and self.error is None:
                self.error = error
            self.cond.notify_all()
            return self.pending_tasks == 0

    # -- durability (syncer thread) -------------------------------------------------------
    def sync(self) -> None:
        with self.io:
            with self.cond:
                spans = self.unsynced
                self.unsynced = []
            if not spans or self.fd < 0 or self.small:
                return
            os.fdatasync(self.fd)
            merged = Ranges(spans)
            self.journal.append(merged.spans())
        with self.cond:
            for s, e in merged.spans():
                self.done.add(s, e)

    # -- hashing and finishing (one thread per file) --------------------------------------
    def verify_small(self, mode: int) -> None:
        """A small file's size and MD5 checked (hashed as it came, else read back now); its
        mode then as the umask says. Making it durable and renaming it is the Settler's."""
        digest = ""
        expected = self.target.spec.objectMd5
        if self.target.validate and expected and not self.target.partial:
            if self.md5 is not None and self.hashed == self.size:
                digest = self.md5.hexdigest()
            else:
                digest = file_md5(self.fd, self.size)
        self._verify(digest)
        os.fchmod(self.fd, mode)  # private while partial; then as the umask says

    def hash_and_finish(self, mode: int) -> None:
        try:
            digest = self._hash_prefix()
            if digest is None:
                return
            self.sync()
            self._verify(digest)
            os.fchmod(self.fd, mode)  # private while partial; then as the umask says
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
                    # a window's worth at a time (one mapping, few wake-ups), or what is left
                    enough = frontier >= min(pos + HASH_STEP, self.size)
                    if (frontier > pos and (enough or self.pending_tasks == 0)) or (
                        pos >= self.size
                    ):
                        break
                    if self.pending_tasks == 0 and pos < self.size:
                        self.error = ScoreError(
                            f"{self.target.file_name}: download ended with bytes {pos}.. missing"
                        )
                        return None
                    self.cond.wait(HASH_POLL)
            if pos >= self.size:
                with self.cond:
                    while self.pending_tasks > 0 and self.error is None:
                        self.cond.wait(1.0)
                    if self.error is not None:
                        return None
                return md5.hexdigest() if md5 else ""
            if md5 is not None:
                md5_mapped(md5, self.fd, pos, frontier)
            pos = frontier

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


def _same_file(fd: int, name: str, folder: int) -> bool:
    """Whether `name` in `folder` is still the file open as `fd`."""
    try:
        here = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return False
    there = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


class Settler:
    """Moves verified small files into place, many at a time, in one thread: a batch is made
    durable with one `sync_filesystem` (else one fsync a file), and only then is each file
    renamed to its final name (through directories opened without following links); those
    renames become durable with the next batch's sync, or `flush`'s (else with one fsync a
    directory a batch). Batches form by themselves: whatever was verified while the last
    one was being settled. So nothing is ever under a final name before its bytes are
    durable, and a thousand files cost tens of journal commits, not two thousand."""

    def __init__(
        self,
        root: Path,
        state_fd: Callable[[], int],
        settled: Callable[[FileDownload, Optional[ScoreError]], None],
    ) -> None:
        self.root = root
        self.resolved = root.resolve()
        self.state_fd = state_fd
        self.settled = settled
        self.cond = threading.Condition()
        self.queue: list[FileDownload] = []
        self.busy = False
        self.stopping = False
        self.dropping = False
        self.unsynced: set[tuple[str, ...]] = set()  # directories renamed into, not synced
        self.thread = threading.Thread(target=self._run, name="download-settle", daemon=True)
        self.thread.start()

    def put(self, d: FileDownload) -> None:
        with self.cond:
            self.queue.append(d)
            self.cond.notify_all()

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.queue and not self.stopping:
                    self.cond.wait()
                batch, self.queue = self.queue, []
                if not batch or self.dropping:
                    for d in batch:
                        d.close()  # interrupted: left as .part files, fetched again next run
                    if self.stopping:
                        return
                    continue
                self.busy = True
            try:
                self._settle(batch)
            finally:
                with self.cond:
                    self.busy = False
                    self.cond.notify_all()

    def _settle(self, batch: list[FileDownload]) -> None:
        errors: dict[int, ScoreError] = {}
        try:
            self._place(batch, errors)
        except Exception as exc:  # whatever it was, each file gets an answer: finish() waits
            for i, d in enumerate(batch):
                errors.setdefault(i, ScoreError(f"{d.target.file_name}: {exc}"))
        for i, d in enumerate(batch):
            d.close()
            self.settled(d, errors.get(i))

    def _place(self, batch: list[FileDownload], errors: dict[int, ScoreError]) -> None:
        """Make the batch durable, then rename each file; `errors`: index → why not."""
        synced = sync_filesystem(self.state_fd())
        if synced:
            self.unsynced.clear()  # that sync also made the earlier renames durable
        else:
            for i, d in enumerate(batch):
                try:
                    os.fsync(d.fd)
                except OSError as exc:
                    errors[i] = ScoreError(f"{d.target.file_name}: {exc}")
        folders: dict[tuple[str, ...], int] = {}
        try:
            for i, d in enumerate(batch):
                if i in errors:
                    continue
                try:
                    relative = d.target.final.relative_to(self.resolved)
                    where = relative.parent.parts
                    folder = folders.get(where)
                    if folder is None:
                        folder = folders[where] = open_dir(self.root, where)
                    os.replace(
                        d.part_path.name,
                        relative.name,
                        src_dir_fd=self.state_fd(),
                        dst_dir_fd=folder,
                    )
                    self.unsynced.add(where)
                except ScoreError as exc:
                    errors[i] = exc
                except OSError as exc:
                    errors[i] = ScoreError(f"{d.target.file_name}: {exc}")
            if not synced:
                for where, folder in folders.items():
                    os.fsync(folder)
                    self.unsynced.discard(where)
        finally:
            for folder in folders.values():
                os.close(folder)

    def flush(self) -> None:
        """Wait until everything handed in is settled; make the last renames durable."""
        with self.cond:
            while self.queue or self.busy:
                self.cond.wait(0.5)
            if not self.unsynced:
                return
            if not sync_filesystem(self.state_fd()):
                for where in sorted(self.unsynced):
                    folder = open_dir(self.root, where)
                    try:
                        os.fsync(folder)
                    finally:
                        os.close(folder)
            self.unsynced.clear()

    def close(self, interrupted: bool) -> None:
        with self.cond:
            self.stopping = True
            self.dropping = interrupted
            self.cond.notify_all()
        self.thread.join(None if not interrupted else 5.0)


class _Worker(threading.local):
    """What each worker thread keeps between requests: its keep-alive connections and its
    receive buffer."""

    conns: Optional[Connections] = None
    buffer: Optional[Buffer] = None


class Downloader:
    """The engine: files are handed in one at a time (`submit`, as lookups resolve them) and
    fetched at once by two pools shared by every file: `parallel` connections for big bodies
    (bandwidth-bound), SMALL_SLOTS more for small requests (latency-bound: many small files
    move side by side whatever --parallel says). A file that fails verification is fetched
    again once from scratch. `finish()` waits for everything and returns objectId → None (ok)
    or the error that stopped it.

        with Downloader(...) as engine:
            for target in targets: engine.submit(target)
            results = engine.finish()
    """

    def __init__(
        self,
        parallel: int,
        attempts: int,
        timeout: float,
        connect_timeout: float,
        events: Events,
        root: Path,
        renew: Callable[[Target], ObjectSpecification],
        forget: Callable[[Target], None] = lambda target: None,
    ) -> None:
        self.parallel = parallel
        self.attempts = attempts
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.events = events
        self.root = root
        self.renew = renew
        self.forget = forget
        self.wide = ThreadPoolExecutor(parallel, thread_name_prefix="download")
        self.narrow = ThreadPoolExecutor(SMALL_SLOTS, thread_name_prefix="fetch")
        self.wide_cap = buffer_cap(parallel)
        self.local = _Worker()
        self.all_conns: list[Connections] = []
        self.max_active = 2 * (parallel + SMALL_SLOTS)
        self.active: list[FileDownload] = []
        self.results: dict[str, ScoreError | None] = {}
        self.working = 0  # tasks being fetched now
        self.cond = threading.Condition()
        self.stop = threading.Event()
        self.syncer_stop = threading.Event()
        self.syncer = threading.Thread(target=self._syncer, name="download-sync", daemon=True)
        self.syncer.start()
        self.mode = data_mode()  # of finished files: read once, not once a file
        self.state_lock = threading.Lock()
        self.state_fd_ = -1
        self.settler = Settler(root, self.state_fd, self._settled)
        self.closed = False

    def __enter__(self) -> Downloader:
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if kind is not None:
            self.stop.set()
        self.close()

    # -- handing files in -----------------------------------------------------------------
    def submit(self, target: Target) -> None:
        """Start fetching a file; waits while too many files are already under way."""
        with self.cond:
            while len(self.active) >= self.max_active and not self.stop.is_set():
                self.cond.wait(0.5)
        self._start(target)

    def state_fd(self) -> int:
        """The state directory, checked and opened once (made on first use)."""
        with self.state_lock:
            if self.state_fd_ < 0:
                self.state_fd_ = private_dir_fd(self.root / STATE_DIR)
            return self.state_fd_

    def _start(self, target: Target) -> None:
        d = FileDownload(target, self.root, lambda: self.renew(target), self.events)
        if d.small:
            self._start_small(d)
            return
        try:
            d.open()
        except ScoreError as exc:
            d.close()
            self._record(target, exc)
            return
        except OSError as exc:
            d.close()
            self._record(target, self._os_error(d, exc))
            return
        self.events.started(target, d.done.total())
        tasks = d.tasks(self.parallel)
        with self.cond:
            self.active.append(d)
        if not tasks:  # all there already (resumed): verify and finish
            self._finish_file(d)
            return
        # hash as the bytes arrive, beside the transfer
        threading.Thread(
            target=self._finish_file, args=(d,), name=f"hash-{target.object_id[:8]}", daemon=True
        ).start()
        self._submit(tasks)

    def _submit(self, tasks: list[Task]) -> None:
        """Small requests to the many narrow workers, big bodies to the `parallel` wide ones."""
        for task in tasks:
            if task.end - task.start <= SMALL_BODY:
                self.narrow.submit(self._run, task, SMALL_BODY)
            else:
                self.wide.submit(self._run, task, self.wide_cap)

    def _start_small(self, d: FileDownload) -> None:
        """A small file is opened by the worker that fetches it (or the first of them), not
        here: this thread is the one placing the next files."""
        tasks = d.tasks(self.parallel)
        if len(tasks) == 1 and d.target.validate:
            d.md5 = hashlib.md5()
        self.events.started(d.target, 0)
        with self.cond:
            self.active.append(d)
        if not tasks:  # an empty file
            self._finish_small(d)
            return
        self._submit(tasks)

    def finish(self) -> dict[str, ScoreError | None]:
        """Wait for every file handed in; objectId → None or its error."""
        with self.cond:
            while self.active:
                self.cond.wait(0.5)
        self.settler.flush()
        with self.cond:
            return dict(self.results)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.wide.shutdown(wait=not self.stop.is_set(), cancel_futures=self.stop.is_set())
        self.narrow.shutdown(wait=not self.stop.is_set(), cancel_futures=self.stop.is_set())
        if self.stop.is_set():
            self._abort()
        self.syncer_stop.set()
        self.syncer.join()
        self.settler.close(interrupted=self.stop.is_set())
        with self.cond:
            active = list(self.active)
        for d in active:
            with contextlib.suppress(OSError):
                d.sync()
        if not self.stop.is_set():  # else their threads may still be in them: theirs to close
            for conns in self.all_conns:
                conns.close()
        with self.state_lock:
            if self.state_fd_ >= 0:
                os.close(self.state_fd_)
                self.state_fd_ = -1

    def _abort(self) -> None:
        """Interrupted: end the reads under way (a stalled server's too) and give their
        workers a moment to write what they had received, so the journal keeps it."""
        for conns in list(self.all_conns):
            conns.abort()
        deadline = time.monotonic() + ABORT_SECONDS
        with self.cond:
            while self.working and time.monotonic() < deadline:
                self.cond.wait(max(deadline - time.monotonic(), 0.0))

    def run(self, targets: list[Target]) -> dict[str, ScoreError | None]:
        """Fetch these targets; objectId → None (ok) or the error that stopped it."""
        try:
            for target in targets:
                self.submit(target)
            return self.finish()
        except KeyboardInterrupt:
            self.stop.set()
            raise

    # -- settling a file ------------------------------------------------------------------
    def _finish_file(self, d: FileDownload) -> None:
        """Verify and move a file into place (or settle its failure)."""
        d.hash_and_finish(self.mode)
        self._conclude(d)

    def _finish_small(self, d: FileDownload) -> None:
        """A small file fetched (in the worker that fetched its last bytes): verified here,
        then handed to the settler, which makes it durable and renames it."""
        error = d.error
        if error is None:
            try:
                self._open_small(d)  # an empty file had nothing to fetch, so is not open
                d.verify_small(self.mode)
            except ScoreError as exc:
                error = exc
            except OSError as exc:
                error = self._os_error(d, exc)
        if error is None:
            self.settler.put(d)
            return
        d.error = error
        d.close()
        self._conclude(d)

    def _settled(self, d: FileDownload, error: Optional[ScoreError]) -> None:
        """The settler is done with a small file: it is in place, or failed on the way."""
        if error is None:
            self.events.finished(d.target, time.monotonic() - d.started_at)
        self._record(d.target, error)
        self._release(d)

    def _open_small(self, d: FileDownload) -> None:
        with d.cond:
            if d.fd < 0 and d.error is None:
                d.open_small(self.state_fd())

    def _conclude(self, d: FileDownload) -> None:
        """A file verified and in place, or failed: one that failed verification is fetched
        once more from scratch, else its result is recorded."""
        error = d.error
        try:
            if (
                isinstance(error, IntegrityError)
                and not d.target.retried
                and not self.stop.is_set()
            ):
                self.events.warn(f"{error}; retrying it from scratch")
                d.target.retried = True
                try:
                    self.forget(d.target)
                    d.target.spec = self.renew(d.target)
                except ScoreError as exc:
                    self._record(d.target, exc)
                else:
                    self._start(d.target)
            else:
                self._record(d.target, error)
        finally:
            self._release(d)  # last: finish() returns once nothing is active

    def _release(self, d: FileDownload) -> None:
        """A file no longer under way. Wakes the waiters (submit, finish) only when what they
        wait for may have come: room for a file, or none left (not once a file each)."""
        with self.cond:
            if d in self.active:
                self.active.remove(d)
            left = len(self.active)
            if left == 0 or left == self.max_active - 1:
                self.cond.notify_all()

    def _record(self, target: Target, error: ScoreError | None) -> None:
        if error is not None and not self.stop.is_set():  # interrupted: nothing more is said
            self.events.failed(target, error)
        with self.cond:
            self.results[target.object_id] = error

    # -- workers --------------------------------------------------------------------------
    def _run(self, task: Task, cap: int) -> None:
        local = self.local
        if local.conns is None or local.buffer is None:
            local.conns = Connections(self.timeout, self.connect_timeout)
            local.buffer = Buffer(cap)
            with self.cond:
                self.all_conns.append(local.conns)
        error = None
        d = task.download
        with self.cond:
            self.working += 1
        try:
            if d.small:
                self._open_small(d)
            self._fetch(task, local.conns, local.buffer)
        except ScoreError as exc:
            error = exc
        except OSError as exc:
            error = self._os_error(d, exc)
        finally:
            with self.cond:
                self.working -= 1
                self.cond.notify_all()
        if d.task_done(error) and d.small:
            self._finish_small(d)  # small: verified by this worker, then settled

    @staticmethod
    def _os_error(d: FileDownload, exc: OSError) -> ScoreError:
        if exc.errno == errno.ENOSPC:
            free = shutil.disk_usage(d.state_dir).free
            return DiskFullError(
                f"{d.target.file_name}: disk full; finished parts are kept; {free:,} bytes free"
            )
        return ScoreError(f"{d.target.file_name}: {exc}")

    def _fetch(self, task: Task, conns: Connections, buffer: Buffer) -> None:
        d = task.download
        name = d.target.file_name
        pos = task.start
        reported = task.start + task.credited
        origin = d.target.offset

        def retrying(n: int, cause: BaseException) -> None:
            if not self.stop.is_set():
                self.events.warn(f"{name}: {cause}; retrying ({n}/{self.attempts})")

        budget = Attempts(self.attempts, retrying)

        write = d.write_small if d.small else d.write

        def sink(chunk: memoryview, offset: int) -> None:
            nonlocal pos, reported
            write(chunk, offset - origin)
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
                    buffer.view(task.end - pos),
                    sink,
                    f"{name} bytes {pos}-{task.end - 1}",
                    whole=pos == 0 and origin == 0 and task.end == d.size and not binds_range(url),
                )
            except UrlRejected:
                if self.stop.is_set():
                    return
                if not budget.renewed():
                    raise
                d.renew_after_rejection(url)
            except Transient as exc:
                if self.stop.is_set():  # interrupted (its connection aborted): no retry
                    return
                budget.failed(exc)

    def _syncer(self) -> None:
        while not self.syncer_stop.wait(SYNC_SECONDS):
            with self.cond:
                active = list(self.active)
            for d in active:
                if not d.small:
                    with contextlib.suppress(OSError):  # the writing worker reports disk errors
                        d.sync()
