"""htsget without a server: a request's parameters checked into a Query (or refused with
htsget's error name and status), and a region turned into pieces of a small BGZF file made in
memory, whose concatenation is always a valid stream holding exactly the bytes asked for."""

from __future__ import annotations

import gzip

import pytest

from pyscore.server.errors import ApiError
from pyscore.server.formats.bgzf import BGZF_EOF, Blocks, deflate_block
from pyscore.server.formats.indexes import BinnedIndex, CraiEntry, RefIndex
from pyscore.server.htsget.pieces import (
    CRAM_EOF_PREFIX,
    Piece,
    between,
    binned_pieces,
    coalesce,
    cram_pieces,
)
from pyscore.server.htsget.query import Query, parse_query


# -- parameters --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "params", "body", "query"),
    [
        ("reads", {}, False, Query("BAM", False, [])),
        ("variants", {}, False, Query("VCF", False, [])),
        ("reads", {"format": "cram"}, False, Query("CRAM", False, [])),
        ("variants", {"format": "BCF"}, False, Query("BCF", False, [])),
        ("reads", {"class": "header"}, False, Query("BAM", True, [])),
        ("reads", {"referenceName": "chr1"}, False, Query("BAM", False, [("chr1", None, None)])),
        (
            "reads",
            {"referenceName": "chr1", "start": "10", "end": "20"},
            False,
            Query("BAM", False, [("chr1", 10, 20)]),
        ),
        (
            "reads",
            {"referenceName": "chr1", "start": "5"},
            False,
            Query("BAM", False, [("chr1", 5, None)]),
        ),
        (
            "reads",
            {"referenceName": "chr1", "start": "7", "end": "7"},
            False,
            Query("BAM", False, [("chr1", 7, 7)]),
        ),
        ("reads", {"referenceName": "*"}, False, Query("BAM", False, [("*", None, None)])),
        (
            "reads",
            {"referenceName": "1", "start": "", "end": ""},
            False,
            Query("BAM", False, [("1", None, None)]),
        ),
        (
            "reads",
            {"referenceName": "1", "end": str(2**32 - 1)},
            False,
            Query("BAM", False, [("1", None, 2**32 - 1)]),
        ),
        (
            "reads",
            {"fields": "QNAME,FLAG,", "tags": "NM", "notags": "MD"},
            False,
            Query("BAM", False, []),
        ),
        ("reads", {"fields": ""}, False, Query("BAM", False, [])),
        # a GET has no regions list: only referenceName/start/end count
        ("reads", {"regions": [{"referenceName": "chr2"}]}, False, Query("BAM", False, [])),
        (
            "variants",
            {
                "regions": [
                    {"referenceName": "chr1", "start": 1, "end": 2},
                    {"referenceName": "chr2"},
                ]
            },
            True,
            Query("VCF", False, [("chr1", 1, 2), ("chr2", None, None)]),
        ),
        ("reads", {"fields": ["QNAME", "SEQ"], "regions": []}, True, Query("BAM", False, [])),
        (
            "reads",
            {"referenceName": "chr3", "start": 0},
            True,
            Query("BAM", False, [("chr3", 0, None)]),
        ),
    ],
)
def test_a_valid_request(kind: str, params: dict, body: bool, query: Query):
    assert parse_query(kind, dict(params), body=body) == query


@pytest.mark.parametrize(
    ("kind", "params", "body", "error", "status", "says"),
    [
        ("reads", {"format": "VCF"}, False, "UnsupportedFormat", 400, "format VCF is not one of"),
        ("variants", {"format": "bam"}, False, "UnsupportedFormat", 400, "format BAM"),
        ("reads", {"class": "body"}, False, "InvalidInput", 400, "class must be 'header'"),
        (
            "reads",
            {"fields": "QNAME,COLOR"},
            False,
            "InvalidInput",
            400,
            "unknown fields ['COLOR']",
        ),
        ("reads", {"fields": "qname"}, False, "InvalidInput", 400, "unknown fields ['qname']"),
        ("reads", {"tags": "NM,MD", "notags": "MD"}, False, "InvalidInput", 400, "overlap"),
        ("reads", {"start": "1"}, False, "InvalidInput", 400, "start and end need referenceName"),
        ("reads", {"end": "1"}, False, "InvalidInput", 400, "need referenceName"),
        ("reads", {"referenceName": ""}, False, "InvalidInput", 400, "needs a referenceName"),
        (
            "reads",
            {"referenceName": "*", "start": "1"},
            False,
            "InvalidInput",
            400,
            "referenceName=*",
        ),
        (
            "reads",
            {"referenceName": "1", "start": "9", "end": "8"},
            False,
            "InvalidRange",
            400,
            "start 9 is greater than end 8",
        ),
        (
            "reads",
            {"referenceName": "1", "start": "x"},
            False,
            "InvalidInput",
            400,
            "start must be an integer, not 'x'",
        ),
        (
            "reads",
            {"referenceName": "1", "end": "1.5"},
            False,
            "InvalidInput",
            400,
            "end must be an integer",
        ),
        (
            "reads",
            {"referenceName": "1", "start": "-1"},
            False,
            "InvalidRange",
            400,
            "start -1 is out of range",
        ),
        (
            "reads",
            {"referenceName": "1", "end": str(2**32)},
            False,
            "InvalidRange",
            400,
            "out of range",
        ),
        (
            "reads",
            {"class": "header", "referenceName": "1"},
            False,
            "InvalidInput",
            400,
            "class=header cannot",
        ),
        ("reads", {"regions": [{"start": 1}]}, True, "InvalidInput", 400, "needs a referenceName"),
        ("reads", {"regions": ["chr1"]}, True, "InvalidInput", 400, "needs a referenceName"),
        ("reads", {"regions": "chr1"}, True, "InvalidInput", 400, "regions must be a list"),
        (
            "reads",
            {"regions": [{"referenceName": "1", "start": [1]}]},
            True,
            "InvalidInput",
            400,
            "start must be an integer",
        ),
        (
            "reads",
            {"class": "header", "regions": [{"referenceName": "1"}]},
            True,
            "InvalidInput",
            400,
            "class=header",
        ),
    ],
)
def test_an_invalid_request(kind, params, body, error, status, says):
    with pytest.raises(ApiError) as caught:
        parse_query(kind, dict(params), body=body)
    assert (caught.value.error_id, caught.value.status) == (error, status)
    assert says in caught.value.message


@pytest.mark.parametrize(
    "params", [{"fields": 5}, {"tags": 5, "notags": ["NM"]}, {"tags": [["NM"]], "notags": [["NM"]]}]
)
def test_a_post_body_of_the_wrong_shape_is_invalid_input(params: dict):
    with pytest.raises(ApiError) as caught:
        parse_query("reads", dict(params), body=True)
    assert caught.value.status == 400


# -- a small BGZF file --------------------------------------------------------------------------
HEADER = b"H" * 100
R1 = bytes(range(256)) * 4  # 1024 bytes
R2 = b"s" * 1000
BLOCKS = [deflate_block(HEADER), deflate_block(R1), deflate_block(R2)]
C1 = len(BLOCKS[0])
C2 = C1 + len(BLOCKS[1])
C_EOF = C2 + len(BLOCKS[2])
DATA = b"".join(BLOCKS) + BGZF_EOF
STREAM = HEADER + R1 + R2


def blocks(data: bytes = DATA) -> Blocks:
    return Blocks(lambda offset, length: data[offset : offset + length], len(data))


def assemble(pieces: list[Piece], data: bytes = DATA) -> bytes:
    """What a client would fetch and concatenate: the ranges of the file and inline bytes."""
    return b"".join(p.data if p.data is not None else data[p.start : p.end] for p in pieces)


def voffset(position: int) -> int:
    """The virtual offset of a position of the uncompressed stream, by hand."""
    for coffset, before, length in ((0, 0, 100), (C1, 100, 1024), (C2, 1124, 1000)):
        if position < before + length:
            return coffset << 16 | (position - before)
    return C_EOF << 16


@pytest.mark.parametrize(
    ("begin", "end"),
    [
        (0, 50),  # inside one block
        (10, 90),
        (0, 100),  # one whole block: a plain range
        (100, 1124),
        (0, 2124),
        (50, 2000),  # starts and ends inside blocks: inline ends around a range
        (99, 1125),
        (150, 1200),  # inside two neighbouring blocks
        (1124, 2124),
        (2123, 2124),
    ],
)
def test_between_is_exactly_the_bytes_between_two_virtual_offsets(begin: int, end: int):
    pieces = between(blocks(), voffset(begin), voffset(end))
    assert gzip.decompress(assemble(pieces)) == STREAM[begin:end]
    for p in pieces:
        assert p.klass == "body"
        if p.data is None:
            assert p.start in (0, C1, C2) and p.end in (C1, C2, C_EOF)  # whole blocks


@pytest.mark.parametrize(("begin", "end"), [(0, 100), (100, 2124), (100, 1124)])
def test_whole_blocks_are_ranges_not_inline_copies(begin: int, end: int):
    pieces = between(blocks(), voffset(begin), voffset(end), "header")
    assert all(p.data is None and p.klass == "header" for p in pieces)


@pytest.mark.parametrize(("begin", "end"), [(0, 0), (50, 50), (60, 50), (2124, 2124)])
def test_an_empty_or_backward_span_is_no_pieces(begin: int, end: int):
    assert between(blocks(), voffset(begin), voffset(end)) == []


def test_blocks_find_virtual_offsets_and_the_eof_marker():
    b = blocks()
    assert [b.voffset_of(p) for p in (0, 99, 100, 1123, 1124, 2123)] == [
        voffset(p) for p in (0, 99, 100, 1123, 1124, 2123)
    ]
    assert b.eof_voffset() == C_EOF << 16
    without_eof = DATA[: -len(BGZF_EOF)]
    assert blocks(without_eof).eof_voffset() == len(without_eof) << 16
    assert b"".join(b.prefix()) == STREAM


# -- whole answers: BAM/VCF by a binned index, CRAM by containers ------------------------------
INDEX = BinnedIndex([RefIndex(bins={4681: [(voffset(110), voffset(1500))]})])


def pieces_for(query: Query, index: BinnedIndex = INDEX) -> list[Piece]:
    return binned_pieces(blocks(), query, index, len(HEADER), ["chr1", "chr2"])


@pytest.mark.parametrize(
    ("query", "body"),
    [
        (Query("BAM", True, []), b""),
        (Query("BAM", False, []), R1 + R2),
        (Query("BAM", False, [("chr1", 0, 100)]), STREAM[110:1500]),
        (Query("BAM", False, [("chr1", None, None)]), STREAM[110:1500]),
        (Query("BAM", False, [("chr2", 0, 100)]), b""),  # no records there
        (Query("BAM", False, [("*", None, None)]), STREAM[1500:]),  # after all placed records
        (Query("BAM", False, [("chr1", 0, 10), ("chr1", 5, 50)]), STREAM[110:1500]),  # merged
    ],
)
def test_binned_pieces_are_the_header_then_the_records_then_eof(query: Query, body: bytes):
    pieces = pieces_for(query)
    assert gzip.decompress(assemble(pieces)) == HEADER + body
    assert pieces[0] == Piece(0, C1, klass="header")
    assert pieces[-1].data == BGZF_EOF
    assert {p.klass for p in pieces[1:-1]} <= ({"header"} if query.header_only else {"body"})


def test_a_reference_not_in_the_file_is_404():
    with pytest.raises(ApiError) as caught:
        pieces_for(Query("BAM", False, [("chrX", None, None)]))
    assert (caught.value.status, caught.value.error_id) == (404, "NotFound")
    assert "'chrX'" in caught.value.message


CRAM_SIZE = 1000
CRAM_EOF_AT = CRAM_SIZE - 38
CRAI = [
    CraiEntry(ref=0, start=1, span=1000, container=100, slice_offset=0, slice_size=1),
    CraiEntry(ref=0, start=1001, span=1000, container=400, slice_offset=0, slice_size=1),
    CraiEntry(ref=1, start=1, span=500, container=700, slice_offset=0, slice_size=1),
    CraiEntry(ref=-1, start=0, span=0, container=800, slice_offset=0, slice_size=1),
]


def cram(with_eof: bool = True) -> bytes:
    body = bytearray(CRAM_SIZE)
    if with_eof:
        body[CRAM_EOF_AT : CRAM_EOF_AT + len(CRAM_EOF_PREFIX)] = CRAM_EOF_PREFIX
    return bytes(body)


def ranges(pieces: list[Piece]) -> list[tuple[int, int]]:
    assert all(p.data is None for p in pieces)
    return [(p.start, p.end) for p in pieces]


EOF_PIECE = (CRAM_EOF_AT, CRAM_SIZE)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (Query("CRAM", True, []), [(0, 100), EOF_PIECE]),
        (
            Query("CRAM", False, []),
            [(0, 100), (100, 400), (400, 700), (700, 800), (800, 962), EOF_PIECE],
        ),
        (Query("CRAM", False, [("chr1", 0, 500)]), [(0, 100), (100, 400), EOF_PIECE]),
        (
            Query("CRAM", False, [("chr1", 999, 1001)]),
            [(0, 100), (100, 400), (400, 700), EOF_PIECE],
        ),
        # half-open: a slice covering [0, 1000) and one from 1000 (0-based) touch, not overlap
        (Query("CRAM", False, [("chr1", 500, 1000)]), [(0, 100), (100, 400), EOF_PIECE]),
        (Query("CRAM", False, [("chr1", 1000, 1500)]), [(0, 100), (400, 700), EOF_PIECE]),
        (
            Query("CRAM", False, [("chr1", None, None)]),
            [(0, 100), (100, 400), (400, 700), EOF_PIECE],
        ),
        (Query("CRAM", False, [("chr2", 600, 700)]), [(0, 100), EOF_PIECE]),
        (Query("CRAM", False, [("*", None, None)]), [(0, 100), (800, 962), EOF_PIECE]),
    ],
)
def test_cram_pieces_are_whole_containers(query: Query, expected: list):
    data = cram()
    read = lambda offset, length: data[offset : offset + length]  # noqa: E731
    assert ranges(cram_pieces(read, CRAM_SIZE, query, CRAI, ["chr1", "chr2"])) == expected


def test_a_cram_without_an_eof_container_ends_at_its_size():
    data = cram(with_eof=False)
    read = lambda offset, length: data[offset : offset + length]  # noqa: E731
    got = ranges(
        cram_pieces(
            read, CRAM_SIZE, Query("CRAM", False, [("chr2", None, None)]), CRAI, ["chr1", "chr2"]
        )
    )
    assert got == [(0, 100), (700, 800)]
    header = cram_pieces(read, CRAM_SIZE, Query("CRAM", True, []), CRAI, [])
    assert ranges(header) == [(0, 100)]


# -- coalescing ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pieces", "coalesced"),
    [
        ([], []),
        ([Piece(0, 10), Piece(10, 20)], [Piece(0, 20)]),
        ([Piece(0, 10), Piece(10, 20), Piece(20, 25)], [Piece(0, 25)]),
        ([Piece(0, 10), Piece(11, 20)], [Piece(0, 10), Piece(11, 20)]),  # a gap
        ([Piece(10, 20), Piece(0, 10)], [Piece(10, 20), Piece(0, 10)]),  # order is kept
        (
            [Piece(0, 10, klass="header"), Piece(10, 20)],
            [Piece(0, 10, klass="header"), Piece(10, 20)],
        ),
        ([Piece(data=b"a"), Piece(data=b"b")], [Piece(data=b"ab")]),
        (
            [Piece(data=b"a", klass="header"), Piece(data=b"b")],
            [Piece(data=b"a", klass="header"), Piece(data=b"b")],
        ),
        (
            [Piece(0, 10), Piece(data=b"x"), Piece(10, 20)],
            [Piece(0, 10), Piece(data=b"x"), Piece(10, 20)],
        ),
        (
            [Piece(data=b"a"), Piece(0, 5), Piece(5, 9), Piece(data=b"b"), Piece(data=b"c")],
            [Piece(data=b"a"), Piece(0, 9), Piece(data=b"bc")],
        ),
    ],
)
def test_coalesce_joins_neighbours_of_one_kind_and_class(pieces: list, coalesced: list):
    assert coalesce(pieces) == coalesced


def test_coalescing_changes_no_byte_a_client_fetches():
    pieces = between(blocks(), voffset(50), voffset(150))  # two inline ends, no range
    pieces += pieces_for(Query("BAM", False, [("chr1", 0, 100), ("*", None, None)]))
    assert assemble(coalesce(pieces)) == assemble(pieces)
    assert len(coalesce(pieces)) < len(pieces)
