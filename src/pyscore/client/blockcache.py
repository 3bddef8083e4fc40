"""Remote objects as random-access files: fixed-size blocks fetched by ranged GET on signed
URLs, kept in a bounded LRU cache (memory, optionally also disk), with parallel read-ahead
for sequential readers. Used by the FUSE mount; knows nothing of FUSE.

The memory cache is one anonymous mapping cut into block-sized slots: a page is resident
only once a slot using it has been filled, slots are reused in place, and no block is a
Python object of its own, so the process holds what the cache holds (per-block `bytes` of
256 KiB, freed and allocated from eight threads, had glibc's heap grow to about twice the
cache). Blocks a sequential reader has read past are given back at once: the kernel's page
cache has them, and read-ahead needs the room.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pyscore.client.errors import ScoreError
from pyscore.client.httpio import BUFFER, Connections, UrlRejected, get_range, stale
from pyscore.client.retry import Attempts, Transient
from pyscore.client.safefiles import private_dir, write_private

if TYPE_CHECKING:
    from pyscore.client.api import Api

BLOCK = 256 * 1024
READAHEAD_MIN = 1024 * 1024
READAHEAD_MAX = 32 * 1024 * 1024
FETCH_MAX = 4 * 1024 * 1024  # one ranged GET fetches at most this much


class MemoryLRU:
    """Blocks in the slots of one mapping, least recently used evicted first, bounded in
    bytes (see the module's docstring)."""

    def __init__(self, limit: int) -> None:
        self.slots = max(limit // BLOCK, 1)
        self.limit = self.slots * BLOCK
        self.arena = mmap.mmap(-1, self.limit)
        self.view = memoryview(self.arena)
        self.where: OrderedDict[tuple[str, int], tuple[int, int]] = OrderedDict()  # slot, size
        self.free: list[int] = []  # given back: resident already, so used first
        self.fresh = 0  # slots from here on were never used
        self.lock = threading.Lock()

    @property
    def used(self) -> int:
        with self.lock:
            return sum(n for _, n in self.where.values())

    def __contains__(self, key: tuple[str, int]) -> bool:
        with self.lock:
            return key in self.where

    def get(self, key: tuple[str, int], lo: int = 0, hi: int = BLOCK) -> bytes | None:
        """Bytes [lo, hi) of a block (a copy), None if it is not held."""
        with self.lock:
            found = self.where.get(key)
            if found is None:
                return None
            self.where.move_to_end(key)
            slot, size = found
            base = slot * BLOCK
            return bytes(self.view[base + min(lo, size) : base + min(hi, size)])

    def take(self) -> int:
        """A slot to fill (not findable until `keep`): a free one, else a new one, else the
        least recently used block's."""
        with self.lock:
            if self.free:
                return self.free.pop()
            if self.fresh < self.slots:
                self.fresh += 1
                return self.fresh - 1
            if not self.where:
                raise RuntimeError("every slot is being filled")
            _, (slot, _) = self.where.popitem(last=False)
            return slot

    def keep(self, key: tuple[str, int], slot: int, size: int) -> None:
        """A filled slot, findable from now on (given back if the block is there already)."""
        with self.lock:
            if key in self.where:
                self.free.append(slot)
            else:
                self.where[key] = (slot, size)

    def give_back(self, slot: int) -> None:
        with self.lock:
            self.free.append(slot)

    def put(self, key: tuple[str, int], data: bytes) -> None:
        if key in self:
            return
        slot = self.take()
        self.view[slot * BLOCK : slot * BLOCK + len(data)] = data
        self.keep(key, slot, len(data))

    def drop(self, key: tuple[str, int]) -> None:
        with self.lock:
            found = self.where.pop(key, None)
            if found is not None:
                self.free.append(found[0])


class DiskLRU:
    """Blocks as files under a directory, bounded in bytes for this session."""

    def __init__(self, root: Path, limit: int) -> None:
        self.root, self.limit, self.used = root, limit, 0
        private_dir(self.root, "cached blocks")  # controlled data: ours alone
        self.order: OrderedDict[tuple[str, int], int] = OrderedDict()
        self.lock = threading.Lock()

    def _path(self, key: tuple[str, int]) -> Path:
        return self.root / key[0] / f"{key[1]:08x}"

    def has(self, key: tuple[str, int]) -> bool:
        with self.lock:
            return key in self.order

    def get(self, key: tuple[str, int]) -> bytes | None:
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        with self.lock:
            if key in self.order:
                self.order.move_to_end(key)
        return data

    def put(self, key: tuple[str, int], data: bytes | memoryview) -> None:
        path = self._path(key)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        write_private(path, data)
        with self.lock:
            if key not in self.order:
                self.order[key] = len(data)
                self.used += len(data)
            while self.used > self.limit and self.order:
                old, size = self.order.popitem(last=False)
                self.used -= size
                self._path(old).unlink(missing_ok=True)


@dataclass
class RemoteObject:
    object_id: str
    size: int
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Stats:
    requests: int = 0
    bytes: int = 0
    hits: int = 0
    misses: int = 0


class BlockStore:
    """Reads byte ranges of remote objects through the block cache."""

    def __init__(
        self,
        sign: Callable[[str], str],
        memory_limit: int = 256 * 1024 * 1024,
        disk: DiskLRU | None = None,
        parallel: int = 8,
        attempts: int = 5,
        timeout: float = 30.0,
    ) -> None:
        self.sign = sign  # objectId → fresh signed whole-object URL
        # at least two slots per fetching thread; and what fetches fill at once (their
        # runs, read-ahead) at most half of them, so a slot to fill is always there
        self.memory = MemoryLRU(max(memory_limit, 2 * parallel * BLOCK))
        self.run_max = max(1, min(FETCH_MAX // BLOCK, self.memory.slots // (2 * parallel)))
        self.ahead_max = self.memory.slots // 2
        self.disk = disk
        self.attempts, self.timeout = attempts, timeout
        self.pool = ThreadPoolExecutor(parallel, thread_name_prefix="fetch")
        self.inflight: dict[tuple[str, int], Future] = {}
        self.lock = threading.Lock()
        self.local = threading.local()
        self.stats = Stats()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- URLs -----------------------------------------------------------------------------
    def url(self, obj: RemoteObject, force: bool = False) -> str:
        with obj.lock:
            if force or not obj.url or stale(obj.url):
                obj.url = self.sign(obj.object_id)
            return obj.url

    # -- fetching -------------------------------------------------------------------------
    def _conns(self) -> Connections:
        conns = getattr(self.local, "conns", None)
        if conns is None:
            conns = self.local.conns = Connections(self.timeout)
        return conns

    def _buffer(self) -> memoryview:
        buf = getattr(self.local, "buffer", None)
        if buf is None:
            buf = self.local.buffer = memoryview(bytearray(BUFFER))
        return buf

    def _fetch(self, obj: RemoteObject, first: int, count: int) -> None:
        """Blocks first..first+count-1 in one ranged GET, retried, straight into slots of
        the memory cache (and the disk cache's files)."""
        start = first * BLOCK
        end = min(obj.size, (first + count) * BLOCK)
        slots = [self.memory.take() for _ in range(-(-(end - start) // BLOCK))]
        arena = self.memory.view
        got = 0

        def sink(chunk: memoryview, offset: int) -> None:
            nonlocal got
            pos, at = offset - start, 0
            while at < len(chunk):
                index, within = divmod(pos + at, BLOCK)
                n = min(len(chunk) - at, BLOCK - within)
                base = slots[index] * BLOCK + within
                arena[base : base + n] = chunk[at : at + n]
                at += n
            got = pos + len(chunk)

        budget = Attempts(self.attempts)
        try:
            while got < end - start:
                try:
                    get_range(
                        self._conns(),
                        self.url(obj),
                        start + got,
                        end,
                        self._buffer(),
                        sink,
                        f"{obj.object_id} bytes {start + got}-{end - 1}",
                    )
                except UrlRejected:
                    if not budget.renewed():
                        raise
                    self.url(obj, force=True)
                except Transient as exc:
                    budget.failed(exc)
        except BaseException:
            for slot in slots:
                self.memory.give_back(slot)
            raise
        with self.lock:
            self.stats.requests += 1
            self.stats.bytes += end - start
        for i, slot in enumerate(slots):
            size = min(BLOCK, end - start - i * BLOCK)
            if self.disk is not None:
                self.disk.put((obj.object_id, first + i), arena[slot * BLOCK : slot * BLOCK + size])
            self.memory.keep((obj.object_id, first + i), slot, size)

    def _cached(self, obj: RemoteObject, index: int, lo: int = 0, hi: int = BLOCK) -> bytes | None:
        """Bytes [lo, hi) of a block if a cache holds it."""
        key = (obj.object_id, index)
        data = self.memory.get(key, lo, hi)
        if data is None and self.disk is not None:
            whole = self.disk.get(key)
            if whole is not None:
                self.memory.put(key, whole)
                data = whole[lo:hi]
        return data

    def _held(self, obj: RemoteObject, index: int) -> bool:
        key = (obj.object_id, index)
        return key in self.memory or (self.disk is not None and self.disk.has(key))

    def _schedule(self, obj: RemoteObject, first: int, count: int) -> list[Future]:
        """Futures for blocks first..first+count-1, fetching only what nobody fetches yet.
        Consecutive missing blocks go in one request of at most FETCH_MAX bytes."""
        futures: list[Future] = []
        last = min(first + count, -(-obj.size // BLOCK))
        with self.lock:
            run: list[int] = []
            for index in range(first, last):
                key = (obj.object_id, index)
                if key in self.inflight:
                    futures.append(self.inflight[key])
                    continue
                if self._held(obj, index):
                    continue
                run.append(index)
                if len(run) >= self.run_max:
                    futures.append(self._submit(obj, run))
                    run = []
            if run:
                futures.append(self._submit(obj, run))
        return futures

    def _submit(self, obj: RemoteObject, run: list[int]) -> Future:
        future = self.pool.submit(self._fetch, obj, run[0], len(run))
        for index in run:
            self.inflight[(obj.object_id, index)] = future

        def done(_: Future, keys=[(obj.object_id, i) for i in run]) -> None:  # noqa: B006
            with self.lock:
                for key in keys:
                    if self.inflight.get(key) is future:
                        del self.inflight[key]

        future.add_done_callback(done)
        return future

    # -- the one public read --------------------------------------------------------------
    def read(self, obj: RemoteObject, offset: int, size: int, readahead: int = 0) -> bytes:
        """Bytes [offset, offset+size) of the object (short at EOF); starts read-ahead of
        `readahead` bytes after it. Raises ScoreError if the bytes cannot be had."""
        if offset >= obj.size or size <= 0:
            return b""
        end = min(obj.size, offset + size)
        first, last = offset // BLOCK, (end - 1) // BLOCK
        parts: list[bytes] = []
        for index in range(first, last + 1):
            lo = max(offset - index * BLOCK, 0)
            hi = min(end - index * BLOCK, BLOCK)
            data = self._cached(obj, index, lo, hi)
            if data is None:
                with self.lock:
                    self.stats.misses += 1
                for _ in range(3):  # a block may be evicted before it is read (small caches)
                    for future in self._schedule(obj, index, last - index + 1):
                        future.result()
                    data = self._cached(obj, index, lo, hi)
                    if data is not None:
                        break
                if data is None:
                    raise ScoreError(f"{obj.object_id}: the memory cache is too small to read")
            else:
                with self.lock:
                    self.stats.hits += 1
            parts.append(data)
        if readahead:
            # A sequential reader is past these: the room is needed (the kernel's cache has
            # them). Not the block just before: the kernel's reads of it may still be out.
            span = last - first + 1  # as many blocks as this read moves on
            for index in range(max(first - 1 - span, 0), first - 1):
                self.memory.drop((obj.object_id, index))
            ahead = min(-(-readahead // BLOCK), self.ahead_max)
            self._schedule(obj, last + 1, ahead)
        return parts[0] if len(parts) == 1 else b"".join(parts)


def block_store(api: Api, memory_limit: int, disk: DiskLRU | None = None) -> BlockStore:
    """A BlockStore over a client's services: signed URLs from the storage API, the
    settings' parallelism and attempts (the mount's and the library's)."""
    return BlockStore(
        api.signed_url,
        memory_limit,
        disk,
        parallel=api.settings.parallel,
        attempts=max(api.settings.int("storage.retryNumber"), 1),
    )


class Readahead:
    """Per open file: read ahead only once a reader has proven sequential, and then about as
    far as it has already read in a row (so one small read never pulls a whole object)."""

    def __init__(self) -> None:
        self.next_offset = -1
        self.run = 0  # bytes read back to back so far

    def advise(self, offset: int, size: int) -> int:
        self.run = self.run + size if offset == self.next_offset else size
        self.next_offset = offset + size
        if self.run < READAHEAD_MIN:
            return 0
        return min(READAHEAD_MAX, self.run)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "score-client" / "blocks"
