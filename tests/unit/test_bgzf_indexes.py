"""BGZF blocks and genomic index files (BAI, TBI, CSI, CRAI) built byte by byte in memory:
what parses, which bins a region touches, how chunks merge and trim, and that truncated or
garbage input is a FormatError (which htsget answers as InvalidInput), never a struct.error,
zlib.error or bare ValueError (which would be a 500)."""

from __future__ import annotations

import gzip
import struct

import pytest

from pyscore.server.formats.bgzf import (
    BGZF_EOF,
    Blocks,
    FormatError,
    block_size,
    deflate_block,
    inflate_all,
    inflate_block,
    split,
)
from pyscore.server.formats.indexes import (
    BinnedIndex,
    CraiEntry,
    RefIndex,
    merge,
    parse_bai,
    parse_crai,
    parse_csi,
    parse_tbi,
    reg2bins,
)

PSEUDO_BIN = 37450


# -- BGZF ----------------------------------------------------------------------------------
@pytest.mark.parametrize("data", [b"", b"a", b"hello " * 1000, bytes(range(256)) * 128])
def test_a_block_round_trips_and_knows_its_size(data: bytes):
    block = deflate_block(data)
    assert block_size(block[:18]) == len(block) == block_size(block + b"next block")
    assert inflate_block(block) == data
    assert gzip.decompress(block) == data  # a BGZF block is a gzip member


def test_the_empty_block_is_the_eof_marker():
    assert deflate_block(b"") == BGZF_EOF


def test_split_a_virtual_offset():
    assert split(0) == (0, 0)
    assert split(123 << 16 | 45) == (123, 45)
    assert split((2**48 - 1) << 16 | 0xFFFF) == (2**48 - 1, 0xFFFF)


def bgzf_head(extra: bytes) -> bytes:
    return b"\x1f\x8b\x08\x04" + b"\0" * 6 + struct.pack("<H", len(extra)) + extra


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (b"", "not a BGZF block"),
        (BGZF_EOF[:17], "not a BGZF block"),
        (b"\x1f\x8b\x08\x00" + BGZF_EOF[4:], "not a BGZF block"),  # plain gzip, no extra field
        (b"PK\x03\x04" + b"\0" * 24, "not a BGZF block"),
        (bgzf_head(b"XY\x02\x00\x10\x00") + b"\0" * 8, "without a BSIZE field"),
        (bgzf_head(b"BC\x04\x00\x10\x00\x00\x00") + b"\0" * 8, "without a BSIZE field"),
    ],
)
def test_what_is_not_a_bgzf_block_is_a_format_error(head: bytes, message: str):
    with pytest.raises(FormatError, match=message):
        block_size(head)


def test_an_extra_field_longer_than_the_header_is_a_format_error():
    with pytest.raises(FormatError):
        block_size(b"\x1f\x8b\x08\x04" + b"\0" * 6 + struct.pack("<H", 100) + b"\0" * 6)


@pytest.mark.parametrize(
    "block",
    [
        deflate_block(b"hello" * 100)[:30],
        deflate_block(b"hello")[:18] + b"\xff" * 20,
    ],
)
def test_a_corrupt_block_is_a_format_error(block: bytes):
    with pytest.raises(FormatError):
        Blocks(lambda offset, length: block[offset : offset + length], len(block)).inflated(0)


def test_inflate_all_reads_several_members_and_refuses_truncation():
    data = deflate_block(b"ab") + deflate_block(b"cd") + BGZF_EOF
    assert inflate_all(data) == b"abcd"
    with pytest.raises(FormatError, match="cannot decompress index"):
        inflate_all(data[:-10])
    with pytest.raises(FormatError, match="cannot decompress index"):
        inflate_all(b"BAI\x01 not compressed")


def test_a_corrupt_gzip_stream_is_a_format_error():
    with pytest.raises(FormatError):
        inflate_all(b"\x1f\x8b\x08\x00" + b"\0" * 6 + b"\xff" * 20)


# -- bins ------------------------------------------------------------------------------------
LEVELS = [0, 1, 9, 73, 585, 4681]  # the first bin of each level (BAI: min_shift 14, depth 5)


@pytest.mark.parametrize(
    ("beg", "end", "bins"),
    [
        (0, 1, [0, 1, 9, 73, 585, 4681]),
        (0, 1 << 14, [0, 1, 9, 73, 585, 4681]),  # exactly one 16 kb window
        (16383, 16385, [0, 1, 9, 73, 585, 4681, 4682]),  # across a window boundary
        (1 << 14, (1 << 14) + 1, [0, 1, 9, 73, 585, 4682]),
        (1 << 26, (1 << 26) + 1, [0, 2, 17, 137, 1097, 8777]),  # the second level-1 bin
        ((1 << 29) - 1, 1 << 29, [0, 8, 72, 584, 4680, 37448]),  # the last bin of each level
    ],
)
def test_reg2bins(beg: int, end: int, bins: list[int]):
    assert reg2bins(beg, end) == bins


def test_the_whole_range_touches_every_bin_once():
    assert reg2bins(0, 1 << 29) == list(range(37449))


def test_reg2bins_for_csi_depths():
    assert reg2bins(0, 1, min_shift=14, depth=6) == [*LEVELS, 37449]
    assert reg2bins(0, 1, min_shift=12, depth=0) == [0]


@pytest.mark.parametrize(
    ("chunks", "merged"),
    [
        ([], []),
        ([(5, 10)], [(5, 10)]),
        ([(5, 10), (10, 20)], [(5, 20)]),  # touching
        ([(5, 10), (8, 20)], [(5, 20)]),  # overlapping
        ([(5, 30), (8, 20)], [(5, 30)]),  # contained
        ([(20, 30), (5, 10)], [(5, 10), (20, 30)]),  # unsorted in, sorted out
        ([(5, 10), (11, 20)], [(5, 10), (11, 20)]),  # a gap
        ([(1, 2), (3, 4), (2, 3), (0, 1)], [(0, 4)]),
    ],
)
def test_merge(chunks: list, merged: list):
    assert merge(chunks) == merged


# One reference: a record of the first 16 kb window in bin 4681, one of the second in 4682, and
# a long one in bin 0; the linear index says where each window's first record starts.
REF = RefIndex(bins={0: [(50, 500)], 4681: [(100, 200)], 4682: [(300, 400)]}, linear=[150, 350])


@pytest.mark.parametrize(
    ("ref", "beg", "end", "chunks"),
    [
        (0, 0, 100, [(150, 300)]),  # from the window's first record to the next bin's first
        (0, 16384, 16385, [(350, 500)]),  # nothing before the second window's first record
        (0, 0, 1 << 20, [(150, 500)]),
        (1, 0, 100, []),  # no such reference
        (-1, 0, 100, []),
        (0, 100, 100, []),  # an empty region
        (0, 100, 50, []),
    ],
)
def test_binned_chunks_are_trimmed_to_the_linear_index(ref: int, beg: int, end: int, chunks):
    assert BinnedIndex([REF]).chunks(ref, beg, end) == chunks


def test_csi_chunks_before_a_bins_loffset_are_skipped():
    ref = RefIndex(bins={4681: [(100, 200), (300, 400)]}, loffsets={4681: 250})
    assert BinnedIndex([ref]).chunks(0, 0, 10) == [(300, 400)]


def test_last_offset_is_where_placed_records_end():
    assert BinnedIndex([REF, RefIndex(bins={4681: [(600, 700)]})]).last_offset() == 700
    assert BinnedIndex([]).last_offset() == 0


# -- index files --------------------------------------------------------------------------------
def i32(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}i", *values)


def u64(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}Q", *values)


def binned_refs(csi: bool = False) -> bytes:
    """One reference: bin 4681 with one chunk, the pseudo-bin (dropped), a linear index."""
    loffset = u64(7) if csi else b""
    body = i32(2)
    body += struct.pack("<I", 4681) + loffset + i32(1) + u64(100, 200)
    # the pseudo-bin: BAI's, and CSI's at depth 5
    body += struct.pack("<I", PSEUDO_BIN) + loffset + i32(2) + u64(1, 2, 3, 4)
    if not csi:
        body += i32(2) + u64(100, 150)
    return i32(1) + body


BAI = b"BAI\x01" + binned_refs() + u64(5)
TABIX_META = i32(2, 1, 2, 0, ord("#"), 0) + i32(10) + b"chr1\0chr2\0"
TBI_RAW = b"TBI\x01" + i32(1) + TABIX_META + binned_refs()[4:]
CSI_RAW = b"CSI\x01" + i32(14, 5, len(TABIX_META)) + TABIX_META + binned_refs(csi=True)


def test_parse_bai():
    index = parse_bai(BAI)
    (ref,) = index.refs
    assert ref.bins == {4681: [(100, 200)]} and ref.linear == [100, 150]
    assert (index.min_shift, index.depth, index.n_no_coor, index.names) == (14, 5, 5, [])
    assert parse_bai(BAI[:-8]).n_no_coor is None  # the count of unplaced reads is optional


def test_parse_tbi():
    index = parse_tbi(gzip.compress(TBI_RAW))
    assert index.names == ["chr1", "chr2"]
    assert index.refs[0].bins == {4681: [(100, 200)]} and index.refs[0].linear == [100, 150]


def test_parse_csi():
    index = parse_csi(deflate_block(CSI_RAW) + BGZF_EOF)
    assert (index.min_shift, index.depth, index.names) == (14, 5, ["chr1", "chr2"])
    assert index.refs[0].bins == {4681: [(100, 200)]} and index.refs[0].loffsets[4681] == 7


def test_parse_csi_without_tabix_meta_has_no_names():
    raw = b"CSI\x01" + i32(14, 5, 0) + binned_refs(csi=True)
    assert parse_csi(gzip.compress(raw)).names == []


@pytest.mark.parametrize("cut", range(len(BAI) - 8))
def test_a_truncated_bai_is_a_format_error(cut: int):
    with pytest.raises(FormatError, match=r"not a BAI index|truncated BAI index"):
        parse_bai(BAI[:cut])


@pytest.mark.parametrize("cut", range(0, len(TBI_RAW), 3))
def test_a_truncated_tbi_is_a_format_error(cut: int):
    with pytest.raises(FormatError, match=r"tabix|TBI"):
        parse_tbi(gzip.compress(TBI_RAW[:cut]))


@pytest.mark.parametrize("cut", range(0, len(CSI_RAW), 3))
def test_a_truncated_csi_is_a_format_error(cut: int):
    with pytest.raises(FormatError, match="CSI"):
        parse_csi(gzip.compress(CSI_RAW[:cut]))


@pytest.mark.parametrize(
    ("parse", "data"),
    [
        (parse_bai, b"BAM\x01" + BAI[4:]),
        (parse_bai, gzip.compress(BAI)),  # a BAI is not compressed
        (parse_tbi, gzip.compress(CSI_RAW)),
        (parse_csi, gzip.compress(TBI_RAW)),
        (parse_tbi, TBI_RAW),  # not compressed
        (parse_csi, b""),
        (parse_crai, b"1\t1\t1\t1\t1\t1\n"),  # not compressed
        (parse_crai, gzip.compress(b"1\t1\t1\t1\t1\n")),  # five fields
        (parse_crai, gzip.compress(b"\xff\xfe\t1\n")),
    ],
)
def test_the_wrong_kind_of_file_is_a_format_error(parse, data: bytes):
    with pytest.raises(FormatError):
        parse(data)


def test_parse_crai():
    text = b"0\t1\t1000\t100\t10\t50\n-1\t0\t0\t800\t5\t20\n"
    assert parse_crai(gzip.compress(text)) == [
        CraiEntry(0, 1, 1000, 100, 10, 50),
        CraiEntry(-1, 0, 0, 800, 5, 20),
    ]
    assert parse_crai(gzip.compress(b"")) == []


def test_a_crai_line_of_the_wrong_width_is_named():
    text = b"0\t1\t1000\t100\t10\t50\n0\t1\t1000\t100\t10\n"
    with pytest.raises(FormatError, match="CRAM index line 2 has 5 fields, not 6"):
        parse_crai(gzip.compress(text))


def test_a_crai_cell_that_is_not_a_number_is_a_format_error():
    with pytest.raises(FormatError):
        parse_crai(gzip.compress(b"0\t1\tlots\t100\t10\t50\n"))


@pytest.mark.parametrize("parse", [parse_tbi, parse_csi, parse_crai])
def test_garbage_in_a_compressed_index_is_a_format_error(parse):
    with pytest.raises(FormatError):
        parse(b"\x1f\x8b\x08\x00" + b"\0" * 6 + b"\xff" * 20)
