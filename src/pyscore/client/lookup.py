"""Many metadata and storage lookups at once: the latency-bound half of a transfer.

Over a long link every request that waits for the one before it costs a round trip, so the
lookups of a cohort (entities, index files, download specifications) run LOOKUP_THREADS at
once on the API client's keep-alive connections, and their answers are used as they come:
`ordered()` hands each item's resolution on in input order (so names are decided the same way
every run) while the items after it are already in flight.

Each lookup is a future (`entity`, `spec`, `index_of`), and the same object asked twice in a
run is asked once. Where the server offers batch lookups (pyscore's extension, learned from
the first answer each service gives: see wire/batch.py), entities and specifications go in
batches instead: each kind's `Batcher` sends one request per object only until the service
has answered once (a few probes, which are useful lookups themselves), then queues the rest
into batches of growing size (BATCH_SIZES), BATCHES_IN_FLIGHT at once, the earliest first;
`prefetch()` queues a whole cohort's lookups ahead of the items that will wait on them
(at most LOOKAHEAD ahead), so the first files' bytes move while later batches are being
asked. Against a server that does not offer batches (the original, an older pyscore) every
lookup is one request, LOOKUP_THREADS at once, as before.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Optional, TypeVar, Union

from pyscore.client.api import Api, NotOffered
from pyscore.client.errors import ScoreError
from pyscore.wire.files import find_index
from pyscore.wire.score import ObjectSpecification
from pyscore.wire.song import Entity

T = TypeVar("T")
R = TypeVar("R")
LOOKUP_THREADS = 48  # API requests in flight at once
RESOLVE_WINDOW = 64  # items being resolved at once (each waits on its lookups)
PROBES = 8  # one-object requests in flight before a service has said whether it batches
BATCH_SIZES = (25, 50, 100, 200)  # ids per batch request: the first small (the first bytes
# move sooner), then larger; never more than the server offers
BATCHES_IN_FLIGHT = 4  # batch requests of one kind at once
LOOKAHEAD = 2000  # items prefetched beyond the consumer's, at most (signed URLs age)


class Batcher:
    """One kind of lookup (specifications, or entities) towards one service: each lookup is
    a single request while the service is not known to offer batches, else a place in the
    next batch request. A batch goes as soon as none of its kind is in flight, or as soon as
    a full one can be made (so lookups trickling in make few, not tiny, requests)."""

    def __init__(
        self,
        api: Api,
        base: str,
        pool: ThreadPoolExecutor,
        single: Callable[[Any], Any],
        batch: Callable[[list[Any]], Sequence[Any]],
    ) -> None:
        self.api, self.base, self.pool = api, base, pool
        self.single, self.batch = single, batch
        self.lock = threading.Lock()
        self.decided = threading.Condition(self.lock)
        self.mode = "unknown"  # then "single" or "batch"
        self.max_ids = 0
        self.probes = 0
        self.held: list[tuple[Any, Future[Any]]] = []
        self.queue: deque[tuple[Any, Future[Any]]] = deque()
        self.flying = 0
        self.sent = 0
        self.requests = 0  # batch requests made (for tests and --verbose accounting)

    # -- deciding --------------------------------------------------------------------------
    def _decide(self) -> None:
        """Under the lock: settle the mode once the service has answered anything."""
        if self.mode != "unknown":
            return
        known, max_ids = self.api.batch_offer(self.base)
        if not known:
            return
        self.mode = "batch" if max_ids else "single"
        self.max_ids = max_ids or 0
        held, self.held = self.held, []
        for key, future in held:
            self._route(key, future)
        self.decided.notify_all()

    def wait_decided(self, stop: threading.Event) -> str:
        """Block until the mode is known (or `stop`): what prefetching waits for."""
        with self.lock:
            while self.mode == "unknown" and not stop.is_set():
                self._decide()
                if self.mode == "unknown":
                    self.decided.wait(0.05)
            return self.mode

    # -- asking ----------------------------------------------------------------------------
    def ask(self, key: Any, future: Future[Any]) -> None:
        with self.lock:
            self._decide()
            self._route(key, future)

    def _route(self, key: Any, future: Future[Any]) -> None:
        if self.mode == "batch":
            self.queue.append((key, future))
            self._dispatch()
        elif self.mode == "single":
            self._submit_single(key, future, probe=False)
        elif self.probes < PROBES:
            self.probes += 1
            self._submit_single(key, future, probe=True)
        else:
            self.held.append((key, future))

    def _submit_single(self, key: Any, future: Future[Any], probe: bool) -> None:
        def run() -> None:
            try:
                future.set_result(self.single(key))
            except BaseException as exc:
                future.set_exception(exc)
            finally:
                if probe:
                    self._probed()

        self.pool.submit(run)

    def _probed(self) -> None:
        with self.lock:
            self.probes -= 1
            self._decide()
            if self.mode == "unknown" and self.probes == 0:
                # every probe failed without an answer (unreachable, 5xx): ask one by one
                self.api.no_batches(self.base)
                self._decide()

    # -- batches ---------------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Under the lock: send what is queued, in order, within BATCHES_IN_FLIGHT."""
        while self.queue and self.flying < BATCHES_IN_FLIGHT:
            size = min(self.max_ids, BATCH_SIZES[min(self.sent, len(BATCH_SIZES) - 1)])
            if self.flying and len(self.queue) < size:
                return  # a fuller batch when one comes back
            take = [self.queue.popleft() for _ in range(min(size, len(self.queue)))]
            self.flying += 1
            self.sent += 1
            self.requests += 1
            self.pool.submit(self._send, take)

    def _send(self, take: list[tuple[Any, Future[Any]]]) -> None:
        try:
            results: Sequence[Any] = self.batch([key for key, _ in take])
        except ScoreError as exc:
            if isinstance(exc, NotOffered):
                # offered but not answered (a proxy routes it elsewhere): one by one from now
                with self.lock:
                    self.api.no_batches(self.base)
                    self.mode = "single"
                    self.flying -= 1
                    again = take + list(self.queue)
                    self.queue.clear()
                    for key, future in again:
                        self._submit_single(key, future, probe=False)
                return
            results = [exc] * len(take)
        except BaseException as exc:
            results = [exc] * len(take)
        for (_, future), result in zip(take, results):
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        with self.lock:
            self.flying -= 1
            self._dispatch()


class Lookups:
    """Futures of lookups, LOOKUP_THREADS requests at a time, each object asked once;
    in batches where the server offers them."""

    def __init__(self, api: Api, threads: int = LOOKUP_THREADS) -> None:
        self.api = api
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="lookup")
        self.lock = threading.Lock()
        self.memo: dict[tuple[str, ...], Future[Any]] = {}
        self.specs = Batcher(
            api,
            api.settings.storage_url,
            self.pool,
            lambda key: api.download_spec(*key),
            api.download_specs,
        )
        self.entity_batcher = Batcher(
            api, api.settings.metadata_url, self.pool, api.entity, api.entities_batch
        )
        self.stop = threading.Event()
        self.ahead = threading.Condition(self.lock)
        self.progress = 0  # items of `prefetch` the consumer is done with
        self.feeder: Optional[threading.Thread] = None

    def _once(self, key: tuple[str, ...], call: Callable[[], Any]) -> Future[Any]:
        with self.lock:
            future = self.memo.get(key)
            if future is None:
                future = self.memo[key] = self.pool.submit(call)
            return future

    def _batched(self, key: tuple[str, ...], batcher: Batcher, arg: Hashable) -> Future[Any]:
        with self.lock:
            future = self.memo.get(key)
            if future is not None:
                return future
            future = self.memo[key] = Future()
        batcher.ask(arg, future)
        return future

    def entity(self, object_id: str) -> Future[Entity]:
        return self._batched(("entity", object_id), self.entity_batcher, object_id)

    def spec(
        self, object_id: str, offset: int = 0, length: int = -1
    ) -> Future[ObjectSpecification]:
        key = ("spec", object_id, str(offset), str(length))
        return self._batched(key, self.specs, (object_id, offset, length))

    def prefetch(self, items: Sequence[tuple[list[tuple[str, int, int]], list[str]]]) -> None:
        """Queue a cohort's lookups into batches in the background, item by item in the
        order they will be waited for (each item: the specifications and the entities it
        needs), at most LOOKAHEAD items beyond the last one `reached`; once the services
        are known to offer batches, and not otherwise (each lookup is then asked when first
        needed, one request each)."""

        def feed() -> None:
            modes = (
                self.specs.wait_decided(self.stop),
                self.entity_batcher.wait_decided(self.stop),
            )
            if "batch" not in modes:
                return
            for number, (specs, entities) in enumerate(items):
                with self.lock:
                    while number - self.progress >= LOOKAHEAD and not self.stop.is_set():
                        self.ahead.wait(0.1)
                if self.stop.is_set():
                    return
                if modes[0] == "batch":
                    for object_id, offset, length in specs:
                        self.spec(object_id, offset, length)
                if modes[1] == "batch":
                    for object_id in entities:
                        self.entity(object_id)

        self.feeder = threading.Thread(target=feed, name="prefetch", daemon=True)
        self.feeder.start()

    def reached(self, number: int) -> None:
        """The consumer is done with the first `number` items given to `prefetch`."""
        with self.lock:
            self.progress = max(self.progress, number)
            self.ahead.notify_all()

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
        """Entities of many ids, yielded as they come (in batches where offered)."""
        futures: list[tuple[str, Future[Entity]]] = [(i, self.entity(i)) for i in ids]
        found = as_they_come(futures)
        return found

    def close(self) -> None:
        self.stop.set()
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
