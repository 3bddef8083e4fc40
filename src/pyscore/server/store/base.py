"""The ObjectStore protocol: what the storage API needs of any backend.

Clients move bytes to and from URLs the store signs; the server only hands the URLs out, so with
S3 no object byte passes through Python.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable


def content_disposition(filename: str) -> str:
    """`attachment` with the name both plain (ASCII fallback) and RFC 5987-encoded."""
    from urllib.parse import quote

    plain = "".join(
        c if c.isascii() and c not in '"\\;' and c.isprintable() else "_" for c in filename
    )
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(filename)}"


@dataclass(frozen=True)
class ObjectStat:
    size: int
    last_modified: datetime


class ObjectStore(Protocol):
    kind: str
    signs_ranges: bool  # does a GET URL bind a byte range? (if not, one URL serves all parts)

    def prepare(self) -> None:
        """Create what the store needs (directories, the bucket); safe to repeat."""
        ...

    def write_meta(self, object_id: str, spec: dict) -> None:
        """Record a finished object's specification beside it (Score's `data/<id>.meta`)."""
        ...

    def url_for_get(
        self,
        object_id: str,
        *,
        base_url: str,
        expires_in: int,
        offset: int | None = None,
        length: int | None = None,
        filename: str | None = None,
    ) -> str:
        """A signed GET URL for the whole object, or only for [offset, offset+length);
        with `filename`, browsers save it under that name."""
        ...

    def stat(self, object_id: str) -> ObjectStat | None: ...

    def read_range(self, object_id: str, offset: int, length: int) -> bytes:
        """A few bytes of an object (index files, BGZF block headers), read by the server."""
        ...

    def put_bytes(self, object_id: str, data: bytes) -> None:
        """Store a small object in one go (the ping sentinel)."""
        ...

    def put_file(self, object_id: str, path: Path) -> None:
        """Store a local file as an object in one go (operator import, demo data)."""
        ...

    def delete(self, object_id: str) -> None: ...

    def initiate(self, object_id: str, size: int) -> str:
        """Start a multipart upload; return the store's upload id."""
        ...

    def url_for_part(
        self,
        object_id: str,
        upload_id: str,
        part_number: int,
        offset: int,
        size: int,
        *,
        base_url: str,
        expires_in: int,
    ) -> str: ...

    def list_parts(self, object_id: str, upload_id: str) -> dict[int, str] | None:
        """Parts the store holds for an upload: partNumber → ETag (the part's MD5 in hex);
        None once the store no longer holds the upload (completed or aborted)."""
        ...

    def complete(self, object_id: str, upload_id: str, etags: dict[int, str]) -> None:
        """Make the object of these parts. Asked again once done (its answer, or the
        platform's record of it, lost), it answers as the first time if the object is
        these parts, and refuses otherwise."""
        ...

    def abort(self, object_id: str, upload_id: str) -> None: ...


@runtime_checkable
class ServesItsUrls(Protocol):
    """A store whose signed URLs this server answers (the local store; S3 answers its own):
    the app mounts `web/signed.py`'s routes for it."""

    def verify(self, method: str, path: str, query: dict[str, str]) -> str:
        """Check a signed request; return the signed byte range ('' for none)."""
        ...

    def path(self, object_id: str) -> Path:
        """Where a finished object's bytes are."""
        ...

    async def receive_part(
        self,
        upload_id: str,
        part_number: int,
        rng: str,
        chunks: AsyncIterator[bytes],
        finalized: Callable[[str, int], bool],
    ) -> str:
        """Take a part's body; return its MD5."""
        ...
