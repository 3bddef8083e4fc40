"""One retry policy for every network call: exponential backoff with full jitter.

Transient failures (connection errors, timeouts, 5xx, 429) are retried; the caller decides what
counts as transient by raising `Transient`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

BASE_DELAY = 0.2
MAX_DELAY = 15.0


class Transient(Exception):
    """A failure worth trying again; wraps the cause."""


def delay(attempt: int, base: float = BASE_DELAY, cap: float = MAX_DELAY) -> float:
    """Full-jitter backoff (AWS architecture blog): uniform in [0, min(cap, base·2^attempt)]."""
    return random.uniform(0, min(cap, base * (2**attempt))) + base / 2


def retrying(
    call: Callable[[], T],
    attempts: int,
    on_retry: Callable[[int, Exception], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `call`; on Transient, wait and retry, up to `attempts` tries (negative: forever)."""
    attempt = 0
    while True:
        try:
            return call()
        except Transient as exc:
            attempt += 1
            if 0 <= attempts <= attempt:
                cause = exc.__cause__ or exc
                raise cause from None
            if on_retry:
                on_retry(attempt, exc)
            sleep(delay(attempt))
