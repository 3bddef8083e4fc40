"""Many metadata and storage lookups at once: the latency-bound half of a transfer.

Over a long link every request that waits for the one before it costs a round trip, so the
lookups of a cohort (entities, index files, download specifications) run LOOKUP_THREADS at
once on the API client's keep-alive connections, and their answers are used as they come:
`ordered()` hands each item's resolution on in input order (so names are decided the same way
every run) while the items after it are already in flight.

Each lookup is a future (`entity`, `spec`, `index_of`), and the same object asked twice in a
run is asked once. A batch source (many ids in one request, when a server offers it) plugs in
behind the same calls: `entities(ids)` takes many ids and yields results as they come.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar, Union

from pyscore.client.api import Api
from pyscore.client.errors import ScoreError
from pyscore.wire.files import find_index
from pyscore.wire.score import ObjectSpecification
from pyscore.wire.song import Entity

T = TypeVar("T")
R = TypeVar("R")
LOOKUP_THREADS = 48  # API requests in flight at once
RESOLVE_WINDOW = 64  # items being resolved at once (each waits on its lookups)


class Lookups:
    """Futures of lookups, LOOKUP_THREADS requests at a time, each object asked once."""

    def __init__(self, api: Api, threads: int = LOOKUP_THREADS) -> None:
        self.api = api
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="lookup")
        self.lock = threading.Lock()
        self.memo: dict[tuple[str, ...], Future[Any]] = {}

    def _once(self, key: tuple[str, ...], call: Callable[[], Any]) -> Future[Any]:
        with self.lock:
            future = self.memo.get(key)
            if future is None:
                future = self.memo[key] = self.pool.submit(call)
            return future

    def entity(self, object_id: str) -> Future[Entity]:
        return self._once(("entity", object_id), lambda: self.api.entity(object_id))

    def spec(
        self, object_id: str, offset: int = 0, length: int = -1
    ) -> Future[ObjectSpecification]:
        return self._once(
            ("spec", object_id, str(offset), str(length)),
            lambda: self.api.download_spec(object_id, offset, length),
        )

    def siblings(self, analysis_id: str) -> Future[dict[str, Entity]]:
        """An analysis's files by lower-cased name (listed once per run)."""
        return self._once(
            ("siblings", analysis_id),
            lambda: {e.fileName.lower(): e for e in self.api.entities(gnosId=analysis_id)},
        )

    def index_of(self, data: Entity) -> Entity | None:
        """The index file beside a data file (same analysis, <file>.bai/...): waits."""
        found = find_index(data.fileName, self.siblings(data.gnosId).result())
        return found if found is not None and found.id != data.id else None

    def entities(self, ids: Iterable[str]) -> Iterator[tuple[str, Union[Entity, ScoreError]]]:
        """Entities of many ids, yielded as they come (the shape a batch source has)."""
        futures: list[tuple[str, Future[Entity]]] = [(i, self.entity(i)) for i in ids]
        found = as_they_come(futures)
        return found

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def as_they_come(
    keyed: Sequence[tuple[str, Future[T]]],
) -> Iterator[tuple[str, Union[T, ScoreError]]]:
    """(key, result or the ScoreError raised) for each future, in the order they finish."""
    from concurrent.futures import as_completed

    key_of = {id(f): k for k, f in keyed}
    for future in as_completed([f for _, f in keyed]):
        try:
            yield key_of[id(future)], future.result()
        except ScoreError as exc:
            yield key_of[id(future)], exc


def ordered(
    fn: Callable[[T], R], items: Iterable[T], window: int = RESOLVE_WINDOW
) -> Iterator[tuple[T, Union[R, ScoreError]]]:
    """fn over items, `window` at once, each (item, result or ScoreError) in input order as
    soon as it and all before it are done. Stops the rest when the consumer stops."""

    def safe(item: T) -> Union[R, ScoreError]:
        try:
            return fn(item)
        except ScoreError as exc:
            return exc

    pool = ThreadPoolExecutor(window, thread_name_prefix="resolve")
    pending: deque[tuple[T, Future[Union[R, ScoreError]]]] = deque()
    source = iter(items)
    try:
        while True:
            while len(pending) < 2 * window:
                item = next(source, _END)
                if item is _END:
                    break
                pending.append((item, pool.submit(safe, item)))
            if not pending:
                return
            item, future = pending.popleft()
            yield item, future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


_END: Any = object()
