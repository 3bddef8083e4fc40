"""A region as pieces of the stored file: byte ranges clients fetch, and inline BGZF blocks
where a range would start or end inside a block, so their concatenation is a valid file."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pyscore.server.formats import indexes
from pyscore.server.formats.bgzf import BGZF_EOF, Blocks, deflate_block, split
from pyscore.server.htsget.query import Query, invalid

CRAM_EOF_PREFIX = bytes.fromhex("0f000000ffffffff0fe0454f46")


@dataclass(frozen=True)
class Piece:
    """Either a byte range [start, end) of the object or inline bytes."""

    start: int = 0
    end: int = 0
    data: bytes | None = None
    klass: str = "body"


def inline(data: bytes, klass: str) -> list[Piece]:
    """Bytes as BGZF blocks small enough that even incompressible data fits a block."""
    return [
        Piece(data=deflate_block(data[i : i + 32768]), klass=klass)
        for i in range(0, len(data), 32768)
    ]


def between(blocks: Blocks, vbeg: int, vend: int, klass: str = "body") -> list[Piece]:
    """The exact bytes between two virtual offsets as ranges plus inline boundary blocks."""
    cb, ub = split(vbeg)
    ce, ue = split(vend)
    if (cb, ub) >= (ce, ue):
        return []
    if cb == ce:
        return inline(blocks.inflated(cb)[ub:ue], klass)
    pieces: list[Piece] = []
    start = cb
    if ub:
        pieces += inline(blocks.inflated(cb)[ub:], klass)
        start = cb + len(blocks.at(cb))
    if ce > start:
        pieces.append(Piece(start, ce, klass=klass))
    if ue:
        pieces += inline(blocks.inflated(ce)[:ue], klass)
    return pieces


def _names_check(names: list[str], wanted: str) -> int:
    try:
        return names.index(wanted)
    except ValueError:
        raise invalid("NotFound", f"reference {wanted!r} is not in this file", 404) from None


def binned_pieces(
    blocks: Blocks, q: Query, index: indexes.BinnedIndex, header_len: int, names: list[str]
) -> list[Piece]:
    head_end = blocks.voffset_of(header_len)
    pieces = between(blocks, 0, head_end, "header")
    if q.header_only:  # with an EOF marker, so readers do not warn of truncation
        return [*pieces, Piece(data=BGZF_EOF, klass="header")]
    end = blocks.eof_voffset()
    chunks: list[tuple[int, int]] = []
    if not q.regions:
        chunks = [(head_end, end)]
    for name, start, stop in q.regions:
        if name == "*":
            chunks.append((max(index.last_offset(), head_end), end))
            continue
        ref = _names_check(names, name)
        chunks += index.chunks(ref, start or 0, stop if stop is not None else 2**31 - 1)
    for vbeg, vend in indexes.merge(chunks):
        pieces += between(blocks, max(vbeg, head_end), vend)
    return [*pieces, Piece(data=BGZF_EOF, klass="body")]


def cram_pieces(
    read: Callable[[int, int], bytes],
    size: int,
    q: Query,
    crai: list[indexes.CraiEntry],
    names: list[str],
) -> list[Piece]:
    containers = sorted({e.container for e in crai})
    tail = read(max(size - 38, 0), 38)
    eof_at = size - 38 if tail.startswith(CRAM_EOF_PREFIX) else size
    first = containers[0] if containers else eof_at
    pieces = [Piece(0, first, klass="header")]
    if q.header_only:
        return [*pieces, Piece(eof_at, size, klass="header")] if eof_at < size else pieces
    chosen: set[int] = set()
    if not q.regions:
        chosen = set(containers)
    for name, start, stop in q.regions:
        ref = -1 if name == "*" else _names_check(names, name)
        chosen.update(indexes.crai_containers(crai, ref, start, stop))
    bounds = [*containers, eof_at]
    for offset in sorted(chosen):
        nxt = bounds[bounds.index(offset) + 1]
        pieces.append(Piece(offset, nxt))
    if eof_at < size:
        pieces.append(Piece(eof_at, size))
    return pieces


def coalesce(pieces: list[Piece]) -> list[Piece]:
    out: list[Piece] = []
    for p in pieces:
        prev = out[-1] if out else None
        if (
            prev
            and p.data is None
            and prev.data is None
            and prev.end == p.start
            and prev.klass == p.klass
        ):
            out[-1] = Piece(prev.start, p.end, klass=p.klass)
        elif prev and p.data is not None and prev.data is not None and prev.klass == p.klass:
            out[-1] = Piece(data=prev.data + p.data, klass=p.klass)
        else:
            out.append(p)
    return out
