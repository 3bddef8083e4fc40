"""The delivery loop. Every server process runs a thread per sink; the one that holds the
sink's lease (a row of `event_sinks`, taken and renewed with a conditional UPDATE, so one
process at a time among several workers or hosts) sends what follows the sink's position, in
order, and moves the position past what the sink took. A sink that fails is tried again
after a pause that doubles each time (`events_retry_seconds` up to
`events_retry_max_seconds`); its events wait in the outbox meanwhile, and nothing a request
does waits for them. Each sink has its own thread, lease and position: a slow one holds no
other back.

A lease rather than a row lock (SELECT ... FOR UPDATE): a lock is held by an open transaction,
and a delivery (a Kafka acknowledgement, a webhook's answer) must not keep one open. The lease
ends when its holder stops cleanly, or a lease's length (Worker.lease, from LEASE_SECONDS)
after its last renewal when it dies; its holder renews it well before then, and begins no
delivery past a batch's deadline.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any, Optional

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pyscore.server.events import outbox
from pyscore.server.events.sinks import Outgoing, Sink, encode, from_settings

Sessions = Callable[[], AbstractContextManager[Session]]

LEASE_SECONDS = 60.0
POLL_SECONDS = 1.0  # how often a holder looks for events committed by other processes
BATCH = 100
BATCH_SECONDS = 10.0  # no new delivery of a batch begins after this
PRUNE_FIRST, PRUNE_SECONDS = 60.0, 3600.0  # old events are forgotten this long after a
# start, then this often


def say(text: str) -> None:
    print(f"pyscore events: {text}", file=sys.stderr, flush=True)


class Worker(threading.Thread):
    """Delivers to one sink while this process holds its lease."""

    def __init__(self, delivery: Delivery, sink: Sink) -> None:
        super().__init__(name=f"events-{sink.name}", daemon=True)
        self.delivery, self.sink = delivery, sink
        # renewed every third of it; a round (a batch's deadline, then its last call) takes
        # less than a third: the lease never runs out while its holder works
        self.lease = max(LEASE_SECONDS, 3 * (BATCH_SECONDS + 2 * sink.timeout))
        self.flag = outbox.waiter()
        self.position: Optional[int] = None  # while the lease is ours
        self.renew_at = 0.0
        self.failures = 0

    def wait(self, seconds: float) -> None:
        self.flag.wait(seconds)
        self.flag.clear()

    def run(self) -> None:
        d = self.delivery
        pause = d.retry_seconds
        while not d.stopping.is_set():
            try:
                progressed, error = self.step()
            except Exception as exc:  # the database is away, most likely: try again later
                first = (str(exc).splitlines() or [""])[0]
                progressed, error = False, f"{type(exc).__name__}: {first}"
                self.position = None
            if error:
                self.failed(error)
                d.stopping.wait(pause)  # new events do not cut a pause short
                pause = d.retry_seconds if progressed else min(pause * 2, d.retry_max_seconds)
            elif progressed:
                self.recovered()
                pause = d.retry_seconds
            elif self.position is None:
                self.wait(LEASE_SECONDS / 4)  # another process delivers; be ready to take over
            else:
                self.wait(POLL_SECONDS)
        self.sink.close()

    def step(self) -> tuple[bool, str]:
        """One round: hold the lease, send the next batch, note the outcome. (Whether events
        were taken, and why the sink stopped short.)"""
        d, name = self.delivery, self.sink.name
        if self.position is None or time.monotonic() >= self.renew_at:
            with d.sessions() as s:
                self.position = outbox.take_lease(s, name, d.owner, self.lease)
            self.renew_at = time.monotonic() + self.lease / 3
        if self.position is None:
            return False, ""
        with d.sessions() as s:
            batch = [
                Outgoing(
                    e.seq or 0,
                    e.analysis_id,
                    e.study_id,
                    e.state,
                    encode(e.message(d.song_server_id)),
                )
                for e in outbox.pending(s, name, self.position, BATCH)
            ]
        if not batch:
            return False, ""
        count, error = self.sink.send(batch, time.monotonic() + BATCH_SECONDS)
        position = batch[count - 1].seq if count else self.position
        with d.sessions() as s:
            held = outbox.delivered(s, name, d.owner, position, count, error)
        self.position = position if held else None
        return count > 0, error

    def failed(self, error: str) -> None:
        self.failures += 1
        if self.failures in (1, 10) or self.failures % 100 == 0:
            say(
                f"sink {self.sink.name!r} failed ({self.failures} time(s) in a row): "
                f"{error[:300]}; its events wait and are sent again"
            )

    def recovered(self) -> None:
        if self.failures:
            say(f"sink {self.sink.name!r} takes events again after {self.failures} failure(s)")
        self.failures = 0


class Delivery:
    """This process's share of delivery: a Worker per sink, and the pruning of old events."""

    def __init__(
        self,
        sessions: Sessions,
        sinks: list[Sink],
        song_server_id: str,
        retry_seconds: float = 1.0,
        retry_max_seconds: float = 60.0,
        keep_days: float = 7,
    ) -> None:
        self.sessions, self.sinks = sessions, sinks
        self.song_server_id = song_server_id
        self.retry_seconds = max(retry_seconds, 0.01)
        self.retry_max_seconds = max(retry_max_seconds, self.retry_seconds)
        self.keep = timedelta(days=keep_days)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"[:128]
        self.stopping = threading.Event()
        self.workers = [Worker(self, sink) for sink in sinks]
        self.housekeeper = threading.Thread(target=self.prune, name="events-prune", daemon=True)

    @classmethod
    def from_settings(cls, sessions: Sessions, settings: Any) -> Delivery:
        return cls(
            sessions,
            from_settings(settings.events, settings.song_server_id),
            settings.song_server_id,
            settings.events_retry_seconds,
            settings.events_retry_max_seconds,
            settings.events_keep_days,
        )

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sinks]

    def start(self) -> None:
        """Make each new sink's row first (its position: the events after this start), so
        that nothing a request commits from now on can come before it."""
        for name in self.names:
            try:
                with self.sessions() as s:
                    outbox.ensure_sink(s, name)
            except IntegrityError:  # another process made it at the same moment
                pass
        for worker in self.workers:
            worker.start()
        self.housekeeper.start()

    def prune(self) -> None:
        wait = PRUNE_FIRST
        while not self.stopping.wait(wait):
            wait = PRUNE_SECONDS
            try:
                with self.sessions() as s:
                    outbox.prune(s, self.names, self.keep)
            except Exception as exc:
                say(f"cannot forget old events yet: {type(exc).__name__}: {exc}"[:300])

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the threads, waiting `timeout` at most (a stopping server has a few seconds,
        and the audit trail's last records come after this); hand back the lease of each
        that ended, so another process takes over without waiting for it to run out."""
        self.stopping.set()
        outbox.wake()
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        try:
            with self.sessions() as s:
                for worker in self.workers:
                    if not worker.is_alive():  # one still sending keeps its lease to the end
                        outbox.release(s, worker.sink.name, self.owner)
        except Exception:  # the database is away: the leases run out by themselves
            pass
