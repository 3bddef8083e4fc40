"""The platform one server process serves: settings, database, object store and signing keys,
built once per process from the settings. Nothing a second process would need lives only here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

from sqlalchemy import select

from pyscore.server import audit, capacity, keys
from pyscore.server.db import Database
from pyscore.server.identity import Identity
from pyscore.server.settings import Settings
from pyscore.server.store import ObjectStore, open_store
from pyscore.server.tables import StoredObject
from pyscore.server.tokencache import Expiring, TokenCache


@dataclass
class Platform:
    settings: Settings
    db: Database
    store: ObjectStore
    tokens: TokenCache = field(default_factory=lambda: TokenCache(0))  # verified tokens
    identity: Identity = field(default_factory=Identity)  # bearers of other issuers
    trail: audit.Writer | None = None  # the audit trail's writer (server processes)

    @classmethod
    def open(cls, settings: Settings) -> Platform:
        db = Database(settings.database_url, capacity.pool_size(settings.max_concurrent_requests))
        with db.session() as session:
            keys.ensure(session)  # made at init; carried over from a single legacy key

        def load() -> list[dict]:
            with db.session() as session:
                return keys.load_ring(session)

        ring = keys.KeyRing(load, settings.url_signing_pepper)
        store = open_store(settings, ring)
        if getattr(store, "partitions", 0):
            store.locate = relocated(db)  # type: ignore[attr-defined]
        return cls(
            settings,
            db,
            store,
            TokenCache(settings.token_cache_seconds),
            Identity.from_settings(settings.identity),
        )


RELOCATED_SECONDS = 60.0


def relocated(db: Database) -> Callable[[str], Optional[str]]:
    """The bucket Score left an object in outside its partition (`objects.bucket`), asked of
    the database at most once a minute per object."""
    seen: Expiring[str] = Expiring(100_000)

    def locate(object_id: str) -> Optional[str]:
        bucket = seen.get(object_id)
        if bucket is None:
            with db.reading() as conn:
                found = conn.scalar(
                    select(StoredObject.bucket).where(StoredObject.object_id == object_id)
                )
            bucket = found or ""
            seen.put(object_id, bucket, time.monotonic() + RELOCATED_SECONDS)
        return bucket or None

    return locate
