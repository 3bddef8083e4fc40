"""One retry policy for every network call, JSON or bytes: exponential backoff with full
jitter, a budget of attempts, and a bound on how often fresh signed URLs are asked for.

Transient failures (connection errors, timeouts, 5xx, 429) are retried; the caller decides what
counts as transient by raising `Transient` with the cause chained (`raise Transient() from
error`). A signed URL the store refused is renewed a few times (`Attempts.renewed`), never
forever.
"""

from __future__ import annotations

import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # nothing of typing at run time: the first request waits for every import
    from collections.abc import Callable
    from typing import NoReturn, Optional, TypeVar

    T = TypeVar("T")

BASE_DELAY = 0.2
MAX_DELAY = 15.0
MAX_RENEWALS = 3  # refused signed URLs renewed in a row before giving up


class Transient(Exception):
    """A failure worth trying again; wraps the cause."""


def delay(attempt: int, base: float = BASE_DELAY, cap: float = MAX_DELAY) -> float:
    """Full-jitter backoff (AWS architecture blog): uniform in [0, min(cap, base·2^attempt)]."""
    import random

    return random.uniform(0, min(cap, base * (2**attempt))) + base / 2


def cause_of(exc: BaseException) -> BaseException:
    """What a Transient wraps (itself if nothing)."""
    return exc.__cause__ or exc


class Attempts:
    """The retry budget of one call or transfer. `failed(exc)` after a Transient: raises its
    cause once `limit` tries are used (negative: never), else reports and sleeps the backoff;
    `renewed()` before asking for fresh signed URLs: False once MAX_RENEWALS were used in a
    row; `succeeded()` after progress resets both counts."""

    def __init__(
        self,
        limit: int,
        on_retry: Optional[Callable[[int, BaseException], None]] = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limit = limit
        self.on_retry = on_retry
        self.sleep = sleep
        self.count = 0
        self.renewals = 0

    def failed(self, exc: Transient) -> None:
        self.count += 1
        if 0 <= self.limit <= self.count:
            self.give_up(exc)
        if self.on_retry is not None:
            self.on_retry(self.count, cause_of(exc))
        self.sleep(delay(self.count))

    @staticmethod
    def give_up(exc: Transient) -> NoReturn:
        raise cause_of(exc) from None

    def renewed(self) -> bool:
        self.renewals += 1
        return self.renewals <= MAX_RENEWALS

    def succeeded(self) -> None:
        self.count = 0
        self.renewals = 0


def retrying(
    call: Callable[[], T],
    attempts: int,
    on_retry: Optional[Callable[[int, BaseException], None]] = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `call`; on Transient, wait and retry, up to `attempts` tries (negative: forever)."""
    budget = Attempts(attempts, on_retry, sleep)
    while True:
        try:
            return call()
        except Transient as exc:
            budget.failed(exc)
