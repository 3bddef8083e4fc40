"""Object stores: where the bytes live. Metadata about objects lives in the database."""

from __future__ import annotations

from pyscore.server.settings import Settings
from pyscore.server.store.base import ObjectStore


def open_store(settings: Settings, secret: bytes) -> ObjectStore:
    if settings.store == "local":
        from pyscore.server.store.local import LocalStore

        return LocalStore(settings.objects_dir, secret)
    if settings.store.startswith("s3://"):
        from pyscore.server.store.s3 import S3Store

        return S3Store.from_settings(settings)
    raise ValueError(f"unknown store {settings.store!r}: use 'local' or 's3://bucket[/prefix]'")
