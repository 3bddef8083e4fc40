"""Remote objects as random-access files: fixed-size blocks fetched by ranged GET on signed
URLs, kept in a bounded LRU cache (memory, optionally also disk), with parallel read-ahead
for sequential readers. Used by the FUSE mount; knows nothing of FUSE.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pyscore.client.httpio import Connections, UrlRejected, get_range, stale
from pyscore.client.retry import Attempts, Transient
from pyscore.client.safefiles import private_dir, write_private

if TYPE_CHECKING:
    from pyscore.client.api import Api

BLOCK = 256 * 1024
READAHEAD_MIN = 1024 * 1024
READAHEAD_MAX = 32 * 1024 * 1024
FETCH_MAX = 4 * 1024 * 1024  # one ranged GET fetches at most this much


class MemoryLRU:
    """Blocks in memory, least recently used evicted first, bounded in bytes."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0
        self.items: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[str, int]) -> bytes | None:
        with self.lock:
            data = self.items.get(key)
            if data is not None:
                self.items.move_to_end(key)
            return data

    def put(self, key: tuple[str, int], data: bytes) -> None:
        with self.lock:
            if key in self.items:
                return
            self.items[key] = data
            self.used += len(data)
            while self.used > self.limit and self.items:
                _, old = self.items.popitem(last=False)
                self.used -= len(old)


class DiskLRU:
    """Blocks as files under a directory, bounded in bytes for this session."""

    def __init__(self, root: Path, limit: int) -> None:
        self.root, self.limit, self.used = root, limit, 0
        private_dir(self.root, "cached blocks")  # controlled data: ours alone
        self.order: OrderedDict[tuple[str, int], int] = OrderedDict()
        self.lock = threading.Lock()

    def _path(self, key: tuple[str, int]) -> Path:
        return self.root / key[0] / f"{key[1]:08x}"

    def get(self, key: tuple[str, int]) -> bytes | None:
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        with self.lock:
            if key in self.order:
                self.order.move_to_end(key)
        return data

    def put(self, key: tuple[str, int], data: bytes) -> None:
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
        self.memory = MemoryLRU(memory_limit)
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

    def _fetch(self, obj: RemoteObject, first: int, count: int) -> dict[int, bytes]:
        """Blocks first..first+count-1 in one ranged GET, retried; stored in the caches."""
        start = first * BLOCK
        end = min(obj.size, (first + count) * BLOCK)
        view = memoryview(bytearray(end - start))
        got = 0

        def sink(chunk: memoryview, offset: int) -> None:
            nonlocal got  # the bytes were read straight into place: just count them
            got = offset - start + len(chunk)

        budget = Attempts(self.attempts)
        while got < end - start:
            try:
                get_range(
                    self._conns(),
                    self.url(obj),
                    start + got,
                    end,
                    view[got:],
                    sink,
                    f"{obj.object_id} bytes {start + got}-{end - 1}",
                )
            except UrlRejected:
                if not budget.renewed():
                    raise
                self.url(obj, force=True)
            except Transient as exc:
                budget.failed(exc)
        with self.lock:
            self.stats.requests += 1
            self.stats.bytes += end - start
        blocks = {}
        for i in range(count):
            lo = i * BLOCK
            if start + lo >= end:
                break
            data = bytes(view[lo : min(lo + BLOCK, end - start)])
            blocks[first + i] = data
            self.memory.put((obj.object_id, first + i), data)
            if self.disk is not None:
                self.disk.put((obj.object_id, first + i), data)
        return blocks

    def _cached(self, obj: RemoteObject, index: int) -> bytes | None:
        key = (obj.object_id, index)
        data = self.memory.get(key)
        if data is None and self.disk is not None:
            data = self.disk.get(key)
            if data is not None:
                self.memory.put(key, data)
        return data

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
                if self._cached(obj, index) is not None:
                    continue
                run.append(index)
                if len(run) * BLOCK >= FETCH_MAX:
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
            data = self._cached(obj, index)
            if data is None:
                with self.lock:
                    self.stats.misses += 1
                for future in self._schedule(obj, index, last - index + 1):
                    future.result()
                data = self._cached(obj, index)
                if data is None:  # evicted already: fetch just this block synchronously
                    data = self._fetch(obj, index, 1)[index]
            else:
                with self.lock:
                    self.stats.hits += 1
            parts.append(data)
        if readahead:
            ahead = -(-readahead // BLOCK)
            self._schedule(obj, last + 1, ahead)
        lo = offset - first * BLOCK
        if len(parts) == 1:  # the usual case: one copy, no join
            return parts[0][lo : lo + (end - offset)]
        return b"".join(parts)[lo : lo + (end - offset)]


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
