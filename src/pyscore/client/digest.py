"""MD5 of a file's bytes straight from the page cache, through a read-only mapping that slides
along the file: no copy into Python buffers, at most HASH_WINDOW mapped at a time. One helper
for the download's verification and the upload's whole-file check."""

from __future__ import annotations

import hashlib
import mmap
from typing import Any, Optional

HASH_WINDOW = 16 * 1024 * 1024  # a multiple of mmap.ALLOCATIONGRANULARITY


def md5_mapped(md5: Any, fd: int, start: int, end: int) -> None:
    """Feed bytes [start, end) of the open file `fd` to `md5` (any hashlib object)."""
    pos = start
    while pos < end:
        base = pos - pos % mmap.ALLOCATIONGRANULARITY
        length = min(end, base + HASH_WINDOW) - base
        with mmap.mmap(fd, length, prot=mmap.PROT_READ, offset=base) as window:
            window.madvise(mmap.MADV_SEQUENTIAL)
            with memoryview(window) as view:
                md5.update(view[pos - base : length])
        pos = base + length


def file_md5(fd: int, size: int, md5: Optional[Any] = None) -> str:
    """The hex MD5 of the first `size` bytes of `fd`."""
    h = md5 if md5 is not None else hashlib.md5()
    md5_mapped(h, fd, 0, size)
    return str(h.hexdigest())
