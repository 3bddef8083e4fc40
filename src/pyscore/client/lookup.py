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
has answered once (at most PROBES, useful lookups themselves: `prefetch()` spends them on the
first PROBE_ITEMS items entire, so their bytes move while the batches are asked), then queues
the rest, cohort order first, into batches of growing size (BATCH_SIZES),
BATCHES_IN_FLIGHT at once (what a batch's answer leaves out, when the server's answer is full,
is queued again); `prefetch()` queues a whole cohort's lookups ahead of the items
that will wait on them (at most LOOKAHEAD items ahead). Against a server that does not offer
batches (the original, an older pyscore) every lookup is one request, LOOKUP_THREADS at
once, as before.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
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


Ask = tuple[Any, "Future[Any]", int]  # (what to look up, its future, its priority)
Queued = tuple[int, int, Any, "Future[Any]"]  # (priority, order asked, what, its future)


def settle(future: Future[Any], outcome: Any) -> None:
    """Give a lookup's future its result (or exception); one cancelled because the run
    stopped (`Lookups.close`) takes neither."""
    with contextlib.suppress(InvalidStateError):
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


class Batcher:
    """One kind of lookup (specifications, or entities) towards one service: each lookup is
    a single request while the service is not known to offer batches, else a place in a
    batch request. Queued lookups go lowest priority first (the cohort's order: what the
    first files wait for goes first), in batches of growing size, BATCHES_IN_FLIGHT at once;
    lookups asked together (`ask_many`) are batched together."""

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
        self.held: list[Ask] = []
        self.queue: list[Queued] = []  # a heap
        self.order = itertools.count()
        self.flying = 0
        self.sent = 0

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
        for ask in held:
            self._route(ask)
        self._dispatch(flush=True)
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
    def ask_many(self, asks: Iterable[Ask], flush: bool) -> None:
        """Route lookups; `flush`: they are all there is for now, so send even a short
        batch (else a short one waits while one of its kind is in flight, for more)."""
        with self.lock:
            self._decide()
            for ask in asks:
                self._route(ask)
            self._dispatch(flush)

    def _route(self, ask: Ask) -> None:
        """Under the lock: a single request, a place in the queue, or held until decided."""
        key, future, priority = ask
        if self.mode == "batch":
            heapq.heappush(self.queue, (priority, next(self.order), key, future))
        elif self.mode == "single":
            self._submit_single(key, future, probe=False)
        elif self.probes < PROBES:
            self.probes += 1
            self._submit_single(key, future, probe=True)
        else:
            self.held.append(ask)

    def _submit_single(self, key: Any, future: Future[Any], probe: bool) -> None:
        def run() -> None:
            try:
                settle(future, self.single(key))
            except BaseException as exc:
                settle(future, exc)
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
    def _dispatch(self, flush: bool = False) -> None:
        """Under the lock: send what is queued, first things first, within
        BATCHES_IN_FLIGHT; the first batches small (the first files start sooner). Lookups
        trickling in one by one make few batches, not many tiny ones: a short batch waits
        while another is in flight, unless `flush`."""
        while self.queue and self.flying < BATCHES_IN_FLIGHT:
            size = min(self.max_ids, BATCH_SIZES[min(self.sent, len(BATCH_SIZES) - 1)])
            if self.flying and len(self.queue) < size and not flush:
                return
            take = [heapq.heappop(self.queue) for _ in range(min(size, len(self.queue)))]
            self.flying += 1
            self.sent += 1
            self.pool.submit(self._send, take)

    def _send(self, take: list[Queued]) -> None:
        """One batch request; the lookups its answer leaves out (a server whose answer was
        full answers the first ones only) go back into the queue."""
        try:
            results: Sequence[Any] = self.batch([key for _, _, key, _ in take])
        except NotOffered:
            # offered but not answered as a batch (a proxy routes it elsewhere): one by one
            with self.lock:
                self.api.no_batches(self.base)
                self.mode = "single"
                self.flying -= 1
                again, self.queue = take + self.queue, []
                for _, _, key, future in again:
                    self._submit_single(key, future, probe=False)
            return
        except BaseException as exc:
            results = [exc] * len(take)
        for (_, _, _, future), result in zip(take, results):
            settle(future, result)
        with self.lock:
            self.flying -= 1
            for left in take[len(results) :]:
                heapq.heappush(self.queue, left)
            self._dispatch(flush=len(results) < len(take))


PROBE_ITEMS = 3  # items of a prefetched cohort looked up at once, before any answer
LATER = 1 << 62  # the priority of lookups no cohort order names


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
        self.priority: dict[tuple[str, ...], int] = {}  # a cohort's order, from prefetch
        self.feeder: Optional[threading.Thread] = None

    def _once(self, key: tuple[str, ...], call: Callable[[], Any]) -> Future[Any]:
        with self.lock:
            future = self.memo.get(key)
            if future is None:
                future = self.memo[key] = self.pool.submit(call)
            return future

    def _batched(
        self, batcher: Batcher, wanted: Sequence[tuple[tuple[str, ...], Hashable]]
    ) -> list[Future[Any]]:
        """The futures of lookups (memo key, what to ask), the new ones asked together."""
        futures, asks = [], []
        with self.lock:
            for key, arg in wanted:
                future = self.memo.get(key)
                if future is None:
                    future = self.memo[key] = Future()
                    asks.append((arg, future, self.priority.get(key, LATER)))
                futures.append(future)
        if asks:
            batcher.ask_many(asks, flush=len(wanted) > 1)
        return futures

    @staticmethod
    def _spec_key(object_id: str, offset: int, length: int) -> tuple[str, ...]:
        return ("spec", object_id, str(offset), str(length))

    def entity(self, object_id: str) -> Future[Entity]:
        return self._batched(self.entity_batcher, [(("entity", object_id), object_id)])[0]

    def spec(
        self, object_id: str, offset: int = 0, length: int = -1
    ) -> Future[ObjectSpecification]:
        key = self._spec_key(object_id, offset, length)
        return self._batched(self.specs, [(key, (object_id, offset, length))])[0]

    def prefetch(self, items: Sequence[tuple[list[tuple[str, int, int]], list[str]]]) -> None:
        """Ask a cohort's lookups ahead of need, item by item in the order they will be
        waited for (each item: the specifications and the entities it needs): the first
        PROBE_ITEMS at once (one request each, until the services have answered), the rest
        in the background once the services are known to offer batches, at most LOOKAHEAD
        items beyond the last one `reached`. Where no batches are offered the rest are asked
        when first needed, one request each, as without prefetching."""

        def wanted(chunk: Sequence[tuple[list[tuple[str, int, int]], list[str]]]) -> tuple:
            specs = [(self._spec_key(*s), s) for item in chunk for s in item[0]]
            entities = [(("entity", e), e) for item in chunk for e in item[1]]
            return specs, entities

        with self.lock:
            for number, (specs, entities) in enumerate(items):
                for s in specs:
                    self.priority.setdefault(self._spec_key(*s), number)
                for e in entities:
                    self.priority.setdefault(("entity", e), number)
        first_specs, first_entities = wanted(items[:PROBE_ITEMS])
        self._batched(self.specs, first_specs)
        self._batched(self.entity_batcher, first_entities)

        def feed() -> None:
            modes = (
                self.specs.wait_decided(self.stop),
                self.entity_batcher.wait_decided(self.stop),
            )
            if "batch" not in modes:
                return
            step = max(BATCH_SIZES)
            for start in range(PROBE_ITEMS, len(items), step):
                with self.lock:
                    while start - self.progress >= LOOKAHEAD and not self.stop.is_set():
                        self.ahead.wait(0.1)
                if self.stop.is_set():
                    return
                specs, entities = wanted(items[start : start + step])
                if modes[0] == "batch":
                    self._batched(self.specs, specs)
                if modes[1] == "batch":
                    self._batched(self.entity_batcher, entities)

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
        ids = list(ids)
        futures = self._batched(self.entity_batcher, [(("entity", i), i) for i in ids])
        return as_they_come(list(zip(ids, futures)))

    def close(self) -> None:
        """Stop: nothing more is asked, and whoever still waits on a lookup that will now
        never be answered (a resolver thread) stops waiting, so the process can end."""
        self.stop.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
        with self.lock:
            waiting = [f for f in self.memo.values() if not f.done()]
        for future in waiting:
            future.cancel()


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
