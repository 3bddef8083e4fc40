"""Manifests as text: the download TSV in its three dialects (ARGO, ICGC 25K, GDC) and Song's
upload manifest, read into rows or refused with one line that names the line (and column) at
fault; what the server writes the client reads back. And the one rule that pairs an index
file with its data file by name."""

from __future__ import annotations

import pytest

from pyscore.wire.files import find_index, index_names, is_index
from pyscore.wire.manifest import (
    ARGO_COLUMNS,
    ManifestError,
    ManifestRow,
    format_argo,
    parse_download,
    parse_upload,
)

ID1 = "11111111-1111-4111-8111-111111111111"
ID2 = "22222222-2222-4222-8222-222222222222"
ID3 = "33333333-3333-4333-8333-333333333333"
MD5 = "0123456789abcdef0123456789abcdef"
ARGO_HEADER = "\t".join(ARGO_COLUMNS)
ICGC_HEADER = (
    "repo_code\tfile_id\tobject_id\tfile_format\tfile_name\tfile_size\tmd5_sum\t"
    "index_object_id\tdonor_id/donor_count\tproject_id/project_count\tstudy"
)
GDC_HEADER = "id\tfilename\tmd5\tsize\tstate"


def tsv(*lines: str) -> str:
    return "\n".join(lines) + "\n"


def argo_row(object_id: str = ID1, size: str = "10", index: str = ID2, **cells: str) -> str:
    values = {
        "repository_code": "collab",
        "analysis_id": "AN1",
        "object_id": object_id,
        "file_type": "BAM",
        "file_name": "a.bam",
        "file_size": size,
        "md5sum": MD5.upper(),
        "index_object_id": index,
        "donor_id": "DO1",
        "sample_id(s)": "SA1",
        "program_id": "CASEA",
        **cells,
    }
    return "\t".join(values[c] for c in ARGO_COLUMNS)


def refusal(text: str, source: str = "m.tsv") -> str:
    with pytest.raises(ManifestError) as caught:
        parse_download(text, source)
    message = str(caught.value)
    assert "\n" not in message
    return message


# -- download manifests ----------------------------------------------------------------------
def test_an_argo_manifest():
    text = tsv(ARGO_HEADER, argo_row(), "", argo_row(ID3, size="", index="", file_name="b.tsv"))
    assert parse_download(text, "m.tsv") == [
        ManifestRow(ID1, "a.bam", 10, MD5, "AN1", ID2, "CASEA", line=2),
        ManifestRow(ID3, "b.tsv", None, MD5, "AN1", None, "CASEA", line=4),
    ]


def test_windows_line_ends_and_padded_cells_are_read():
    row = argo_row().replace("\t", " \t ")
    (parsed,) = parse_download(ARGO_HEADER + "\r\n" + row + "\r\n", "m.tsv")
    assert (parsed.objectId, parsed.fileName, parsed.studyId) == (ID1, "a.bam", "CASEA")


def test_object_ids_are_normalised():
    (row,) = parse_download(
        tsv(ARGO_HEADER, argo_row(ID1.upper(), index=ID2.replace("-", ""))), "m"
    )
    assert (row.objectId, row.indexObjectId) == (ID1, ID2)


def test_an_icgc_25k_manifest():
    line = "\t".join(
        ["collaboratory", "FI1", ID1, "BAM", "x.bam", "5", MD5, ID2, "DO1", "P", "PCAWG"]
    )
    (row,) = parse_download(tsv(ICGC_HEADER, line), "icgc.tsv")
    assert (row.objectId, row.fileName, row.fileSize) == (ID1, "x.bam", 5)
    assert (row.fileMd5sum, row.indexObjectId, row.line) == (MD5, ID2, 2)


def test_a_gdc_manifest_in_any_column_order():
    text = tsv("state\tMD5\tsize\tfilename\tid", f"released\t{MD5.upper()}\t7\tg.bam\t{ID1}")
    assert parse_download(text, "gdc.txt") == [ManifestRow(ID1, "g.bam", 7, MD5, line=2)]


def test_a_gdc_manifest_without_size_or_md5():
    assert parse_download(tsv("id\tfilename", f"{ID1}\tg.bam"), "gdc.txt") == [
        ManifestRow(ID1, "g.bam", line=2)
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "Manifest 'm.tsv' is empty"),
        (ARGO_HEADER + "\n", "Manifest 'm.tsv' is empty"),
        (ARGO_HEADER + "\n\n  \n", "Manifest 'm.tsv' is empty"),
        ("<?xml version='1.0'?><ResultSet/>", "looks like a GNOS-format XML manifest"),
        (
            tsv(ARGO_HEADER, argo_row(), "a\tb"),
            "m.tsv line 3: expected 11 tab-separated columns, found 2",
        ),
        (
            tsv(ARGO_HEADER, argo_row() + "\textra"),
            "m.tsv line 2: expected 11 tab-separated columns, found 12",
        ),
        (
            tsv(ARGO_HEADER, "", argo_row("not-a-uuid")),
            "m.tsv line 3 column 3 (object_id): 'not-a-uuid' is not an object id (a UUID)",
        ),
        (
            tsv(ARGO_HEADER, argo_row(index="FI123")),
            "m.tsv line 2 column 8 (index_object_id): 'FI123' is not an object id (a UUID)",
        ),
        (
            tsv(ARGO_HEADER, argo_row(size="10 MB")),
            "m.tsv line 2 column 6 (file_size): file size '10 MB' is not a whole number",
        ),
        (
            tsv(ARGO_HEADER, argo_row(size="1.5")),
            "m.tsv line 2 column 6 (file_size): file size '1.5' is not a whole number",
        ),
        (
            tsv(GDC_HEADER, f"{ID1}\tg.bam\t{MD5}\t7"),
            "m.tsv line 2: expected 5 tab-separated columns, found 4",
        ),
        (
            tsv(GDC_HEADER, f"x\tg.bam\t{MD5}\t7\treleased"),
            "m.tsv line 2 column 1 (id): 'x' is not an object id (a UUID)",
        ),
        (
            tsv("filename\tid", f"g.bam\t{ID1}", f"g.bam\t{ID1[:-1]}"),
            f"m.tsv line 3 column 2 (id): '{ID1[:-1]}' is not an object id (a UUID)",
        ),
        (tsv(GDC_HEADER, f"{ID1}\tg.bam\t{MD5}\tbig\treleased"), "m.tsv line 2"),
    ],
)
def test_a_bad_download_manifest_is_one_line_naming_the_line(text: str, message: str):
    assert message in refusal(text)


def test_an_xml_name_is_refused_whatever_it_holds():
    assert "GNOS-format XML" in refusal(tsv(ARGO_HEADER, argo_row()), "manifest.XML")


# -- what the server writes, the client reads ---------------------------------------------------
def test_format_argo_round_trips_through_parse_download():
    rows = [
        {
            "repository_code": "pyscore",
            "analysis_id": "AN1",
            "object_id": ID1,
            "file_type": "BAM",
            "file_name": "a b.bam",
            "file_size": 123,
            "md5sum": MD5,
            "index_object_id": ID2,
            "donor_id": "DO1|DO2",
            "sample_id(s)": "SA1",
            "program_id": "CASEA",
        },
        {"object_id": ID3, "file_name": "notes.txt", "file_size": 0},  # the rest absent
    ]
    text = format_argo(rows)
    assert text.splitlines()[0].split("\t") == list(ARGO_COLUMNS)
    assert parse_download(text, "m.tsv") == [
        ManifestRow(ID1, "a b.bam", 123, MD5, "AN1", ID2, "CASEA", line=2),
        ManifestRow(ID3, "notes.txt", 0, line=3),
    ]


def test_tabs_and_newlines_in_a_cell_cannot_break_a_row():
    name = "a\tb\nc\rd\x1ce\u2028f.bam"  # every line break splitlines() honours, escaped
    text = format_argo([{"object_id": ID1, "file_name": name, "program_id": "X\nY"}])
    (row,) = parse_download(text, "m.tsv")
    assert (row.objectId, row.studyId, row.line) == (ID1, "X\\nY", 2)
    assert row.fileName == "a\\tb\\nc\\rd\\x1ce\\u2028f.bam"


@pytest.mark.parametrize(
    "value, written",
    [
        ("=HYPERLINK(1)", "'=HYPERLINK(1)"),
        ("-SUM(A1).bam", "'-SUM(A1).bam"),
        ("+1+1", "'+1+1"),
        ("@x", "'@x"),
        ("'=x", "''=x"),  # a quote of its own survives the round trip
        ("-1", "-1"),  # plain numbers are read as numbers, not formulas
        ("+2.5e3", "+2.5e3"),
        ("'1", "'1"),
        ("a=b", "a=b"),
    ],
)
def test_formula_starters_are_guarded_and_read_back(value, written):
    text = format_argo([{"object_id": ID1, "file_name": value, "program_id": value}])
    assert text.splitlines()[1].split("\t")[4] == written
    (row,) = parse_download(text, "m.tsv")
    assert (row.fileName, row.studyId) == (value, value)


HOSTILE = [
    None,
    "",
    0,
    -1,
    12345,
    "plain.bam",
    "=x",
    "'=x",
    "''@y",
    "'1",
    "a=b",
    "-SUM(A1)",
    "+2.5e3",
    "a\tb",
    "x\ny",
    "\u202eevil",
    "\x1b[31m",
    "\u00a0nbsp",
    "caf\u00e9",
    "\U0001f600",
]


def test_a_row_is_its_cells_whatever_they_hold():
    """`row` skips the cell-by-cell work for rows needing no escape or guard: every mix of
    hostile and plain cells comes out exactly as `cell` makes each one."""
    from pyscore.wire.tsv import cell, row

    for first in HOSTILE:
        for second in HOSTILE:
            values = ["id-1", first, 7, second, None]
            assert row(values) == "\t".join(cell(v) for v in values), values


def test_an_empty_format_is_only_a_header():
    assert format_argo([]) == ARGO_HEADER + "\n"


# -- upload manifests ------------------------------------------------------------------------
def test_an_upload_manifest():
    text = tsv("AN1\t\t", f"{ID1.upper()}\t/data/a.bam\t{MD5.upper()}", "", f"{ID2}\tb.bai\t{MD5}")
    assert parse_upload(text, "up.txt") == (
        "AN1",
        [(ID1, "/data/a.bam", MD5), (ID2, "b.bai", MD5)],
    )


def test_an_upload_manifest_with_a_header_names_no_analysis():
    text = tsv("object_id\tfile_path\tmd5", f"{ID1}\ta.bam\t{MD5}")
    assert parse_upload(text, "up.txt") == (None, [(ID1, "a.bam", MD5)])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "Upload manifest 'up.txt' is empty"),
        ("AN1\t\t\n", "Upload manifest 'up.txt' lists no files"),
        ("AN1\t\t\n\n\n", "Upload manifest 'up.txt' lists no files"),
        (
            tsv("AN1\t\t", f"{ID1}\ta.bam"),
            "up.txt line 2: expected 3 tab-separated columns (object id, path, md5), found 2",
        ),
        (
            tsv("AN1\t\t", f"{ID1}\ta.bam\t{MD5}", f"nope\tb.bam\t{MD5}"),
            "up.txt line 3 column 1: 'nope' is not an object id (a UUID)",
        ),
        (
            tsv("AN1\t\t", f"{ID1}\ta.bam\t{MD5[:-1]}"),
            f"up.txt line 2 column 3: '{MD5[:-1]}' is not an MD5 (32 hex digits)",
        ),
        (
            tsv("AN1\t\t", f"{ID1}\ta.bam\t{MD5[:-1]}g"),
            "is not an MD5 (32 hex digits)",
        ),
    ],
)
def test_a_bad_upload_manifest_is_one_line_naming_the_line(text: str, message: str):
    with pytest.raises(ManifestError) as caught:
        parse_upload(text, "up.txt")
    assert message in str(caught.value) and "\n" not in str(caught.value)


# -- the index-pairing rule --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "index"),
    [
        ("a.bai", True),
        ("A.BAM.BAI", True),
        ("a.cram.crai", True),
        ("v.vcf.gz.tbi", True),
        ("v.vcf.gz.csi", True),
        ("v.vcf.idx", True),
        ("ref.fa.fai", True),
        ("a.bam", False),
        ("a.bai.txt", False),
        ("bai", False),
        ("a.vcf.gz", False),
    ],
)
def test_is_index(name: str, index: bool):
    assert is_index(name) is index


@pytest.mark.parametrize(
    ("data", "files", "found"),
    [
        ("a.bam", ["a.bam.bai", "a.bai"], "a.bam.bai"),
        ("a.bam", ["a.bai"], "a.bai"),
        ("A.Bam", ["a.bam.bai"], "a.bam.bai"),
        ("a.bam", ["b.bam.bai", "a.bam2.bai", "aa.bai", "a.bam.bai.bak"], None),
        ("a.bam", [], None),
        ("reads", ["reads.bai"], "reads.bai"),  # no extension: the name plus a suffix only
        ("reads", ["read.bai", "reads.bam.bai"], None),
        ("v.vcf.gz", ["v.vcf.gz.csi", "v.vcf.gz.tbi"], "v.vcf.gz.tbi"),  # .tbi first
        ("x.cram", ["x.cram.crai"], "x.cram.crai"),
    ],
)
def test_find_index(data: str, files: list[str], found: str):
    assert find_index(data, {f: f for f in files}) == found


def test_index_names_are_lower_case_and_never_the_data_file():
    for data in ("A.BAM", "v.vcf.gz", "reads"):
        names = index_names(data)
        assert all(n == n.lower() and is_index(n) for n in names)
        assert data.lower() not in names
        assert len(names) == len(set(names))


def test_a_cram_does_not_pair_with_a_bam_index():
    files = {f: f for f in ("a.bam", "a.bai", "a.cram", "a.crai")}
    assert find_index("a.bam", files) == "a.bai"
    assert find_index("a.cram", files) == "a.crai"
