"""BGZF, the blocked gzip of BAM, BCF and tabix-indexed VCF (SAM/BAM spec §4.1): block
sizes, inflating and deflating single blocks, and reading a stored object block by block.
Virtual file offsets are (compressed block offset << 16 | offset within the block).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Callable, Iterator


class FormatError(ValueError):
    """A file (or index) that is not what its name says."""


BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
MAX_BLOCK = 65536
MAX_HEADER = 64 * 1024 * 1024  # the most of a stream's start read to find its header


def split(voffset: int) -> tuple[int, int]:
    return voffset >> 16, voffset & 0xFFFF


def block_size(head: bytes) -> int:
    """Total size of the BGZF block whose first bytes are `head` (needs ≥ 18 bytes)."""
    if len(head) < 18 or head[:4] != b"\x1f\x8b\x08\x04":
        raise FormatError("not a BGZF block")
    try:
        xlen = struct.unpack_from("<H", head, 10)[0]
        pos = 12
        while pos < 12 + xlen:
            si1, si2, slen = head[pos], head[pos + 1], struct.unpack_from("<H", head, pos + 2)[0]
            if si1 == 66 and si2 == 67 and slen == 2:
                return int(struct.unpack_from("<H", head, pos + 4)[0]) + 1
            pos += 4 + slen
    except (struct.error, IndexError):  # an extra field longer than the bytes given
        raise FormatError("truncated BGZF block header") from None
    raise FormatError("BGZF block without a BSIZE field")


def inflate_block(block: bytes) -> bytes:
    """The data of one BGZF block; a truncated or corrupt block is a FormatError."""
    try:
        xlen = struct.unpack_from("<H", block, 10)[0]
        return zlib.decompress(block[12 + xlen : -8], -15)
    except (struct.error, zlib.error) as exc:
        raise FormatError(f"corrupt BGZF block: {exc}") from None


def deflate_block(data: bytes) -> bytes:
    """One BGZF block holding `data` (< 64 KiB)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    payload = compressor.compress(data) + compressor.flush()
    bsize = 18 + len(payload) + 8 - 1
    head = (
        b"\x1f\x8b\x08\x04" + b"\x00" * 4 + b"\x00\xff" + struct.pack("<HBBHH", 6, 66, 67, 2, bsize)
    )
    return head + payload + struct.pack("<II", zlib.crc32(data), len(data))


def inflate_all(data: bytes) -> bytes:
    """A whole gzip/BGZF stream (index files are small)."""
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise FormatError(f"cannot decompress index: {exc}") from None


class Blocks:
    """The BGZF blocks of one stored object, read on demand through `read(offset, length)`
    and kept: a ticket touches the few blocks around a region's ends."""

    def __init__(self, read: Callable[[int, int], bytes], size: int) -> None:
        self.read, self.size = read, size
        self.cache: dict[int, bytes] = {}

    def at(self, offset: int) -> bytes:
        if offset not in self.cache:
            head = self.read(offset, MAX_BLOCK + 64)
            self.cache[offset] = head[: block_size(head)]
        return self.cache[offset]

    def inflated(self, offset: int) -> bytes:
        return inflate_block(self.at(offset))

    def voffset_of(self, position: int) -> int:
        """Virtual offset of an uncompressed stream position, walking blocks from the start."""
        coffset, before = 0, 0
        while coffset < self.size:
            data = self.inflated(coffset)
            if position < before + len(data):
                return coffset << 16 | (position - before)
            before += len(data)
            coffset += len(self.at(coffset))
        return coffset << 16

    def prefix(self, limit: int = MAX_HEADER) -> Iterator[bytes]:
        """The uncompressed stream from the start, block by block."""
        coffset, total = 0, 0
        while coffset < self.size and total < limit:
            data = self.inflated(coffset)
            yield data
            total += len(data)
            coffset += len(self.at(coffset))

    def eof_voffset(self) -> int:
        """Where the records end: before the EOF marker block, if there is one."""
        tail = self.read(max(self.size - 28, 0), 28)
        end = self.size - 28 if tail == BGZF_EOF else self.size
        return end << 16
