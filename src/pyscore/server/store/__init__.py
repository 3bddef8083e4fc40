"""Object stores: where the bytes live. Metadata about objects lives in the database."""

from __future__ import annotations

from typing import Any

from pyscore.server.settings import Settings
from pyscore.server.store.base import ObjectStore


def open_store(settings: Settings, keys: Any) -> ObjectStore:
    """`keys`: the KeyRing (or a fixed key, as bytes) the local store signs its URLs with."""
    if settings.store == "local":
        from pyscore.server.store.local import LocalStore

        return LocalStore(settings.objects_dir, keys, settings.max_url_lifetime_seconds)
    if settings.store.startswith("s3://"):
        from pyscore.server.store.s3 import S3Store

        return S3Store.from_settings(settings)
    raise ValueError(f"unknown store {settings.store!r}: use 'local' or 's3://bucket[/prefix]'")
