"""Snakemake storage plugin for Song/Score platforms: `storage.score("score://...")` inputs.

    rule count:
        input: storage.score("score://DEMO/<analysis id>/DONOR-1-N.bam")
        ...

Queries are `score://<study>/<analysis>/<file name>` or `score://<object id>` (read-only).
Files arrive through pyscore's download pipeline (resumed, size and MD5 checked); exists,
size, mtime (the publish time: published files never change) and checksum come from the
metadata, an analysis's files asked once for all of them. Settings are score-client's
(profile, environment, conf files), overridden by `--storage-score-profile`,
`--storage-score-metadata-url`, `--storage-score-storage-url` and the token
(`SNAKEMAKE_STORAGE_SCORE_TOKEN`, or ACCESSTOKEN as for score-client).

Installed with pyscore (`pip install pyscore[snakemake]` adds the interface; Python >= 3.11).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional

from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_storage_plugins.common import Operation
from snakemake_interface_storage_plugins.io import IOCacheStorageInterface, Mtime
from snakemake_interface_storage_plugins.settings import StorageProviderSettingsBase
from snakemake_interface_storage_plugins.storage_object import StorageObjectRead
from snakemake_interface_storage_plugins.storage_provider import (
    ExampleQuery,
    QueryType,
    StorageProviderBase,
    StorageQueryValidationResult,
)

from pyscore.client.errors import NotFoundError, ScoreError
from pyscore.library.client import Client
from pyscore.library.records import FileInfo

PREFIX = "score://"


@dataclass
class StorageProviderSettings(StorageProviderSettingsBase):  # type: ignore[misc]
    profile: Optional[str] = field(
        default=None,
        metadata={"help": "score-client settings profile (application-<profile>.properties)"},
    )
    metadata_url: Optional[str] = field(
        default=None, metadata={"help": "the metadata service (Song API) URL"}
    )
    storage_url: Optional[str] = field(
        default=None, metadata={"help": "the storage service (Score API) URL"}
    )
    token: Optional[str] = field(
        default=None,
        metadata={"help": "access token (else ACCESSTOKEN)", "env_var": True, "required": False},
    )


def parse(query: str) -> Optional[list[str]]:
    """The query's parts: [study, analysis, name] or [object id]; None if it is neither."""
    if not query.startswith(PREFIX):
        return None
    parts = query[len(PREFIX) :].split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    if len(parts) == 3:
        return parts
    if len(parts) == 1:
        try:
            return [str(uuid.UUID(parts[0]))]
        except ValueError:
            return None
    return None


class StorageProvider(StorageProviderBase):  # type: ignore[misc]
    def __post_init__(self) -> None:
        s = self.settings
        self.client = Client(
            getattr(s, "profile", None),
            token=getattr(s, "token", None),
            metadata_url=getattr(s, "metadata_url", None),
            storage_url=getattr(s, "storage_url", None),
        )

    @classmethod
    def example_queries(cls) -> list[ExampleQuery]:
        return [
            ExampleQuery(
                query="score://DEMO/<analysis id>/DONOR-1-N.bam",
                description="a file by study, analysis and name",
                type=QueryType.INPUT,
            ),
            ExampleQuery(
                query="score://3b63bd70-9286-5521-8753-a2ae61181fae",
                description="a file by object id",
                type=QueryType.INPUT,
            ),
        ]

    def rate_limiter_key(self, query: str, operation: Operation) -> Any:
        return self.client.settings.metadata_url

    def default_max_requests_per_second(self) -> float:
        return 100.0

    def use_rate_limiter(self) -> bool:
        return False  # metadata is asked once per analysis; transfers pace themselves

    @classmethod
    def is_valid_query(cls, query: str) -> StorageQueryValidationResult:
        if parse(query) is None:
            return StorageQueryValidationResult(
                query=query,
                valid=False,
                reason="expected score://<study>/<analysis>/<file name> or score://<object id>",
            )
        return StorageQueryValidationResult(query=query, valid=True)

    def safe_print(self, query: str) -> str:
        return query


class StorageObject(StorageObjectRead):  # type: ignore[misc]
    def __post_init__(self) -> None:
        self.parts = parse(self.query) or []
        self._info: Optional[FileInfo] = None
        self._missing = False

    @property
    def client(self) -> Client:
        client: Client = self.provider.client
        return client

    def _file(self) -> Optional[FileInfo]:
        """What the metadata says of the file; None if it has no such file."""
        if self._info is None and not self._missing:
            try:
                if len(self.parts) == 1:
                    self._info = self.client.file(self.parts[0])
                else:
                    study, analysis, name = self.parts
                    found = self.client.files(study=study, analysis=analysis)
                    self._info = next((f for f in found if f.name == name), None)
                    self._missing = self._info is None
            except NotFoundError:
                self._missing = True
            except ScoreError as exc:
                raise WorkflowError(f"{self.query}: {exc}") from None
        return self._info

    async def inventory(self, cache: IOCacheStorageInterface) -> None:
        """Every file of the query's analysis into the cache at once (one request)."""
        if self.cache_key() in cache.exists_in_storage:
            return
        info = self._file()
        if info is None:
            cache.exists_in_storage[self.cache_key()] = False
            return
        siblings = self.client.analysis(info.study, info.analysis).files
        for f in siblings if len(self.parts) == 3 else [info]:
            suffix = f"{f.study}/{f.analysis}/{f.name}" if len(self.parts) == 3 else f.object_id
            key = self.cache_key(suffix)
            cache.exists_in_storage[key] = True
            cache.mtime[key] = Mtime(storage=self._published(info))
            cache.size[key] = f.size

    def _published(self, info: FileInfo) -> float:
        stamp = self.client.analysis(info.study, info.analysis).published_at
        try:
            return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return 0.0

    def get_inventory_parent(self) -> Optional[str]:
        return None

    def local_suffix(self) -> str:
        return "/".join(self.parts)

    def cleanup(self) -> None:
        pass

    def exists(self) -> bool:
        return self._file() is not None

    def mtime(self) -> float:
        info = self._file()
        return self._published(info) if info is not None else 0.0

    def size(self) -> int:
        info = self._file()
        return info.size if info is not None else 0

    def checksum(self) -> Optional[str]:
        info = self._file()
        return f"md5:{info.md5}" if info is not None and info.md5 else None

    def retrieve_object(self) -> None:
        """Download into local_path() with the client's resume and MD5 checks."""
        info = self._file()
        if info is None:
            raise WorkflowError(f"{self.query}: no such file")
        target = self.local_path()
        layout = "id" if len(self.parts) == 1 else "filename"
        try:
            paths = self.client.download(
                info.object_id, output_dir=target.parent, layout=layout, index=False
            )
        except ScoreError as exc:
            raise WorkflowError(f"{self.query}: {exc}") from None
        if [p.resolve() for p in paths] != [target.resolve()]:
            raise WorkflowError(f"{self.query}: downloaded as {paths}, not {target}")
