"""A remote object as a seekable, read-only binary file: reads go through the client's block
cache (blockcache.py: ranged GETs on signed URLs renewed as they age, read-ahead once a
reader proves sequential), so nothing here fetches bytes of its own."""

from __future__ import annotations

import io
import os
from typing import Any

from pyscore.client.blockcache import BlockStore, Readahead, RemoteObject


class ObjectFile(io.RawIOBase):
    """`Client.open(object_id)`: read, seek and tell like a local file opened "rb"."""

    def __init__(self, blocks: BlockStore, obj: RemoteObject, name: str) -> None:
        super().__init__()
        self._blocks, self._obj, self._name = blocks, obj, name
        self._pos = 0
        self._ahead = Readahead()

    @property
    def name(self) -> str:
        """The file's name in its analysis (the object id when opened by id alone)."""
        return self._name

    @property
    def size(self) -> int:
        return self._obj.size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def tell(self) -> int:
        self._check_closed()
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._check_closed()
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._obj.size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        self._check_closed()
        left = max(self._obj.size - self._pos, 0)
        size = left if size is None or size < 0 else min(size, left)
        if size == 0:
            return b""
        data = self._blocks.read(self._obj, self._pos, size, self._ahead.advise(self._pos, size))
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def _check_closed(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")

    def __repr__(self) -> str:
        return f"<ObjectFile {self._name!r} object {self._obj.object_id} size {self.size}>"
