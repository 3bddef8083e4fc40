"""The platform one server process serves: settings, database, object store and signing keys,
built once per process from the settings. Nothing a second process would need lives only here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyscore.server import audit, capacity, keys
from pyscore.server.db import Database
from pyscore.server.identity import Identity
from pyscore.server.settings import Settings
from pyscore.server.store import ObjectStore, open_store
from pyscore.server.tokencache import TokenCache


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
        return cls(
            settings,
            db,
            open_store(settings, ring),
            TokenCache(settings.token_cache_seconds),
            Identity.from_settings(settings.identity),
        )
