"""Verified tokens, believed for a few seconds.

Every API request names its token; looking it up costs a database query, as much as the rest
of a download specification. A process therefore keeps each token it verified for
`token_cache_seconds` (5 by default; never past the token's own expiry), so a token revoked
in the database (`score-server token revoke`, on any host) is refused by every process within
that many seconds, not at once. Bounded: at most MAX_ENTRIES tokens, the oldest dropped first.
Refusals (unknown, revoked, expired tokens) are never kept: they are asked again each time.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Generic, Optional, TypeVar

from pyscore.server.scopes import Principal

MAX_ENTRIES = 10_000


V = TypeVar("V")


class Expiring(Generic[V]):
    """Values by key, each until its deadline (on `clock`, time.monotonic unless a test
    moves time itself); at most `max_entries`, the least recently used dropped first.
    Thread-safe. Keys are meant to be hashes of secrets."""

    def __init__(
        self, max_entries: int = MAX_ENTRIES, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_entries = max(1, max_entries)
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Optional[V]:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            until, value = entry
            if self.clock() >= until:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return value

    def put(self, key: str, value: V, until: float) -> None:
        with self._lock:
            self._entries[key] = (until, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class TokenCache:
    def __init__(self, seconds: float, max_entries: int = MAX_ENTRIES) -> None:
        self.seconds = max(0.0, seconds)
        self._entries: Expiring[Principal] = Expiring(max_entries)

    @staticmethod
    def _key(authorization: str) -> str:
        # the secret itself is not kept as a key, only its hash
        return hashlib.sha256(authorization.strip().encode()).hexdigest()

    def get(self, authorization: str) -> Optional[Principal]:
        """The principal a token was verified as within the last `seconds`, else None."""
        if not self.seconds:
            return None
        return self._entries.get(self._key(authorization))

    def put(self, authorization: str, principal: Principal, expires_at: Optional[datetime]) -> None:
        """Believe a verified token for `seconds`, or until it expires if that is sooner."""
        if not self.seconds:
            return
        ttl = self.seconds
        if expires_at is not None:
            ttl = min(ttl, expires_at.timestamp() - time.time())
        if ttl > 0:
            self._entries.put(self._key(authorization), principal, time.monotonic() + ttl)

    def clear(self) -> None:
        self._entries.clear()
