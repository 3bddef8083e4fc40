"""Genomic index files (BAI, CSI, TBI, CRAI), read just enough to turn a region into the
byte ranges of a file that hold its records.

Formats: SAM/BAM spec §4.2 (BAI), CSI v1 spec, Tabix spec, CRAM 3 spec §12 (CRAI).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from pyscore.server.formats.bgzf import FormatError, inflate_all


# -- binning -------------------------------------------------------------------------------
def reg2bins(beg: int, end: int, min_shift: int = 14, depth: int = 5) -> list[int]:
    """Bins that may hold records overlapping [beg, end) (0-based, half-open)."""
    end -= 1
    bins: list[int] = []
    s = min_shift + depth * 3
    t = 0
    for level in range(depth + 1):
        b = t + (beg >> s)
        e = t + (end >> s)
        bins.extend(range(b, e + 1))
        s -= 3
        t += 1 << (level * 3)
    return bins


@dataclass
class RefIndex:
    bins: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    linear: list[int] = field(default_factory=list)  # BAI/TBI: min voffset per 16 kb window
    loffsets: dict[int, int] = field(default_factory=dict)  # CSI: min voffset per bin


@dataclass
class BinnedIndex:
    refs: list[RefIndex]
    min_shift: int = 14
    depth: int = 5
    names: list[str] = field(default_factory=list)  # TBI (and CSI with tabix meta)
    n_no_coor: int | None = None

    def chunks(self, ref: int, beg: int, end: int) -> list[tuple[int, int]]:
        """Merged voffset chunks that hold every record overlapping [beg, end), trimmed, as
        htslib's iterator does, to the linear index: nothing before the first record that
        can overlap `beg`, nothing after the first record that starts past `end`."""
        if not 0 <= ref < len(self.refs):
            return []
        idx = self.refs[ref]
        end = min(end, 1 << (self.min_shift + self.depth * 3))
        if end <= beg:
            return []
        min_off = 0
        if idx.linear:
            min_off = idx.linear[min(beg >> self.min_shift, len(idx.linear) - 1)]
        max_off = self._max_offset(idx, end)
        found = []
        for b in reg2bins(beg, end, self.min_shift, self.depth):
            for cbeg, cend in idx.bins.get(b, ()):
                if cend <= min_off or cend <= idx.loffsets.get(b, 0):
                    continue
                if max_off is not None and cbeg >= max_off:
                    continue
                found.append((max(cbeg, min_off), cend if max_off is None else min(cend, max_off)))
        return merge(found)

    def _max_offset(self, idx: RefIndex, end: int) -> int | None:
        """Where the first record starting right of `end` sits: htslib's search for an
        extant bin to the right, climbing to the parent at each first child."""
        first_leaf = ((1 << (3 * self.depth)) - 1) // 7
        n_bins = ((1 << (3 * (self.depth + 1))) - 1) // 7
        b = first_leaf + ((end - 1) >> self.min_shift) + 1
        if b >= n_bins:
            b = 0
        while True:
            while b % 8 == 1:
                b = (b - 1) >> 3
            if b == 0:
                return None
            chunks = idx.bins.get(b)
            if chunks:
                return min(c for c, _ in chunks)
            b += 1

    def last_offset(self) -> int:
        """Where placed records end: unplaced unmapped reads start at or after this."""
        ends = [cend for ref in self.refs for chunks in ref.bins.values() for _, cend in chunks]
        return max(ends, default=0)


PSEUDO_BIN_BAI = 37450


def merge(chunks: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for cbeg, cend in sorted(chunks):
        if out and cbeg <= out[-1][1]:
            out[-1][1] = max(out[-1][1], cend)
        else:
            out.append([cbeg, cend])
    return [(a, b) for a, b in out]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str) -> tuple:
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return values

    def one(self, fmt: str) -> int:
        return self.take(fmt)[0]

    def raw(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk


def _bins(r: _Reader, csi: bool, pseudo: int) -> tuple[dict, dict]:
    bins: dict[int, list[tuple[int, int]]] = {}
    loffsets: dict[int, int] = {}
    for _ in range(r.one("<i")):
        b = r.one("<I")
        if csi:
            loffsets[b] = r.one("<Q")
        chunks = [r.take("<QQ") for _ in range(r.one("<i"))]
        if b != pseudo:
            bins[b] = chunks
    return bins, loffsets


def parse_bai(data: bytes) -> BinnedIndex:
    try:
        r = _Reader(data)
        if r.raw(4) != b"BAI\x01":
            raise FormatError("not a BAI index")
        refs = []
        for _ in range(r.one("<i")):
            bins, _ = _bins(r, False, PSEUDO_BIN_BAI)
            linear = [r.one("<Q") for _ in range(r.one("<i"))]
            refs.append(RefIndex(bins, linear))
        n_no_coor = r.one("<Q") if r.pos + 8 <= len(data) else None
        return BinnedIndex(refs, n_no_coor=n_no_coor)
    except struct.error:
        raise FormatError("truncated BAI index") from None


def _tabix_names(r: _Reader) -> list[str]:
    r.take("<6i")  # format, col_seq, col_beg, col_end, meta, skip
    l_nm = r.one("<i")
    return [n.decode() for n in r.raw(l_nm).split(b"\x00") if n]


def parse_tbi(data: bytes) -> BinnedIndex:
    raw = inflate_all(data)
    try:
        r = _Reader(raw)
        if r.raw(4) != b"TBI\x01":
            raise FormatError("not a tabix (.tbi) index")
        n_ref = r.one("<i")
        names = _tabix_names(r)
        refs = []
        for _ in range(n_ref):
            bins, _ = _bins(r, False, PSEUDO_BIN_BAI)
            linear = [r.one("<Q") for _ in range(r.one("<i"))]
            refs.append(RefIndex(bins, linear))
        return BinnedIndex(refs, names=names)
    except struct.error:
        raise FormatError("truncated TBI index") from None


def parse_csi(data: bytes) -> BinnedIndex:
    raw = inflate_all(data)
    try:
        r = _Reader(raw)
        if r.raw(4) != b"CSI\x01":
            raise FormatError("not a CSI index")
        min_shift, depth, l_aux = r.take("<iii")
        aux = r.raw(l_aux)
        names = _tabix_names(_Reader(aux)) if l_aux >= 28 else []
        pseudo = ((1 << ((depth + 1) * 3)) - 1) // 7 + 1
        refs = []
        for _ in range(r.one("<i")):
            bins, loffsets = _bins(r, True, pseudo)
            refs.append(RefIndex(bins, loffsets=loffsets))
        return BinnedIndex(refs, min_shift, depth, names)
    except struct.error:
        raise FormatError("truncated CSI index") from None


# -- CRAI ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CraiEntry:
    ref: int  # -1: unmapped
    start: int  # 1-based alignment start
    span: int
    container: int  # byte offset of the container
    slice_offset: int
    slice_size: int


def parse_crai(data: bytes) -> list[CraiEntry]:
    try:
        text = inflate_all(data).decode("ascii")
    except UnicodeDecodeError:
        raise FormatError("not a CRAM index (.crai)") from None
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        cells = line.split("\t")
        if len(cells) != 6:
            raise FormatError(f"CRAM index line {number} has {len(cells)} fields, not 6")
        try:
            entries.append(CraiEntry(*(int(c) for c in cells)))
        except ValueError:
            raise FormatError(f"CRAM index line {number} has a field that is no number") from None
    return entries


def crai_containers(
    entries: list[CraiEntry], ref: int, beg: int | None, end: int | None
) -> list[int]:
    """Offsets of containers with slices overlapping ref:[beg, end) (0-based, half-open);
    ref -1 means the unmapped reads."""
    wanted = set()
    for e in entries:
        if e.ref != ref:
            continue
        if ref >= 0 and beg is not None and end is not None:
            s0 = e.start - 1
            if s0 >= end or s0 + max(e.span, 1) <= beg:
                continue
        wanted.add(e.container)
    return sorted(wanted)
