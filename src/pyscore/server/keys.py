"""Keys that sign the local store's URLs, with rotation.

The database holds the key ring (shared by every server process): a list of
`{id, secret, created}`, newest last. The newest key signs; every key on the ring verifies the
URLs that name it (`kid`), so a rotation breaks no URL already handed out. A key retired by a
rotation is dropped from the ring at a later rotation once `max_url_lifetime_seconds` have
passed, when nothing it signed can still be valid; `rotate(drop_old=True)` drops the old keys
at once (a leak: every URL handed out stops working within `REFRESH` seconds).

What signs is not the secret in the database alone but HMAC(pepper, secret), the pepper being
`url_signing_pepper` in server.json (mode 0600): a copy of the database (a dump, a backup, a
replica) is not enough to forge a URL.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable

from sqlalchemy.orm import Session

from pyscore.server.tables import Setting

RING = "url_signing_keys"
LEGACY = "url_signing_secret"  # one key, before rotation existed
REFRESH = 10.0  # seconds a process trusts its copy of the ring


def load_ring(session: Session) -> list[dict]:
    row = session.get(Setting, RING)
    if row is not None:
        return json.loads(row.value)
    legacy = session.get(Setting, LEGACY)
    if legacy is not None:
        return [{"id": "k0", "secret": legacy.value, "created": 0}]
    return []


def save_ring(session: Session, ring: list[dict]) -> None:
    row = session.get(Setting, RING)
    if row is None:
        session.add(Setting(key=RING, value=json.dumps(ring)))
    else:
        row.value = json.dumps(ring)
    legacy = session.get(Setting, LEGACY)
    if legacy is not None:
        session.delete(legacy)


def new_key(now: float | None = None) -> dict:
    return {
        "id": secrets.token_hex(4),
        "secret": secrets.token_hex(32),
        "created": now or time.time(),
    }


def ensure(session: Session) -> list[dict]:
    """The ring, made (or carried over from the single legacy key) if need be."""
    ring = load_ring(session)
    if not ring or session.get(Setting, RING) is None:
        ring = ring or [new_key()]
        save_ring(session, ring)
        session.flush()
    return ring


def rotate(session: Session, max_lifetime: int, drop_old: bool = False) -> dict:
    """Add a new signing key; drop keys nothing valid can name any more (or all old ones)."""
    now = time.time()
    ring = ensure(session)
    fresh = new_key(now)
    kept = []
    if not drop_old:
        for i, key in enumerate(ring):
            # a key stops signing when the next one is made; its URLs live max_lifetime more
            retired = ring[i + 1]["created"] if i + 1 < len(ring) else now
            if retired + max_lifetime > now:
                kept.append(key)
    save_ring(session, [*kept, fresh])
    return fresh


class KeyRing:
    """A process's view of the ring: reloaded every REFRESH seconds, and at once (at most
    every few seconds) when a URL names a key it does not know."""

    def __init__(self, load: Callable[[], list[dict]], pepper: str = "") -> None:
        self._load = load
        self._pepper = bytes.fromhex(pepper) if pepper else b""
        self._keys: dict[str, bytes] = {}
        self._current = ""
        self._loaded = 0.0
        self._lock = threading.Lock()

    @classmethod
    def static(cls, secret: bytes, pepper: str = "") -> KeyRing:
        """One fixed key (for a store that only prepares directories, and for tests)."""
        return cls(lambda: [{"id": "k0", "secret": secret.hex(), "created": 0}], pepper)

    def _derive(self, secret_hex: str) -> bytes:
        secret = bytes.fromhex(secret_hex)
        if not self._pepper:
            return secret
        return hmac.new(self._pepper, secret, hashlib.sha256).digest()

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if self._keys and now - self._loaded < (2.0 if force else REFRESH):
                return
            ring = self._load()
            if ring:
                self._keys = {k["id"]: self._derive(k["secret"]) for k in ring}
                self._current = ring[-1]["id"]
            self._loaded = now

    def current(self) -> tuple[str, bytes]:
        self._refresh()
        return self._current, self._keys[self._current]

    def get(self, kid: str) -> bytes | None:
        self._refresh()
        if kid not in self._keys:
            self._refresh(force=True)
        return self._keys.get(kid)
