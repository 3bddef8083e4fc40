"""Where downloads land, beyond tests/unit/test_download_planning.py: every id or name a
manifest or server supplies that could leave the output directory is refused, in each layout,
naming what was refused; odd but plain names stay inside; symbolic links are not followed out;
and however names collide, no two objects of a run are given one path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyscore.client.errors import UsageError
from pyscore.client.layout import Names, safe_name, target_path

ESCAPES = [
    "/etc/passwd",
    "/",
    "../x",
    "x/..",
    "a\\b",
    "..\\x",
    "C:\\x",
    "a\nb",
    "\t",
    "x\x1f",
    "x" * 256,
    "é" * 128,  # 128 characters but 256 bytes: too long for a file system
]


@pytest.mark.parametrize("name", ESCAPES)
def test_file_names_that_are_not_plain_are_refused(tmp_path: Path, name: str):
    for layout in ("filename", "bundle"):
        with pytest.raises(UsageError) as caught:
            target_path(tmp_path, layout, "OID", name, "AN")
        assert f"Refusing file name {name!r}" in str(caught.value)
    target_path(tmp_path, "id", "OID", name, "AN")  # the id layout never uses the file name


@pytest.mark.parametrize("object_id", ["..", ".", "/abs", "../x", "a/b", "a\x00", "", "a\\b"])
def test_the_id_layout_refuses_object_ids_that_are_not_plain(tmp_path: Path, object_id: str):
    with pytest.raises(UsageError, match="Refusing object id"):
        target_path(tmp_path, "id", object_id, "f.bam", "AN")
    target_path(tmp_path, "filename", object_id, "f.bam", "AN")  # unused there


@pytest.mark.parametrize("analysis_id", ["..", ".", "/tmp", "../x", "a/b", "", "a\nb"])
def test_the_bundle_layout_refuses_analysis_ids_that_are_not_plain(tmp_path, analysis_id):
    with pytest.raises(UsageError, match="Refusing analysis id"):
        target_path(tmp_path, "bundle", "OID", "f.bam", analysis_id)


@pytest.mark.parametrize(
    "name", ["...", "..a", "a..", ".hidden", " .bam", "-rf", "ñ.bam", "x" * 255, "é" * 127, "a:b"]
)
@pytest.mark.parametrize("layout", ["filename", "bundle", "id"])
def test_odd_but_plain_names_stay_inside(tmp_path: Path, layout: str, name: str):
    path = target_path(tmp_path, layout, name, name, name)
    root = tmp_path.resolve()
    assert path.name == name
    assert path.parent == (root / name if layout == "bundle" else root)


def test_safe_name_returns_the_name_unchanged():
    assert safe_name("a.bam", "file name") == "a.bam"


def test_an_unknown_layout_is_refused_naming_the_choices(tmp_path: Path):
    with pytest.raises(
        UsageError, match="Unknown output layout 'flat'; use one of filename, bundle"
    ):
        target_path(tmp_path, "flat", "OID", "f.bam", "AN")


def test_a_bundle_folder_that_is_a_symbolic_link_is_refused(tmp_path: Path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    os.symlink(elsewhere, out / "AN")
    with pytest.raises(UsageError, match="is a symbolic link and could lead outside"):
        target_path(out, "bundle", "OID", "f.bam", "AN")
    assert target_path(out, "bundle", "OID", "f.bam", "AN2") == out.resolve() / "AN2" / "f.bam"


def test_an_output_dir_reached_through_a_link_is_fine(tmp_path: Path):
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "link")
    assert target_path(tmp_path / "link", "filename", "O", "f.bam", "A") == real / "f.bam"


# -- collisions ------------------------------------------------------------------------------
def test_an_index_whose_data_file_kept_its_name_takes_the_data_files_id(tmp_path: Path):
    names = Names(tmp_path, "filename")
    names.claim("X", "a.bam.bai", "AN0")  # some other object has the index's name
    assert names.claim("D", "a.bam", "AN1") == (tmp_path.resolve() / "a.bam", None)
    path, said = names.claim("I", "a.bam.bai", "AN1", data_id="D")
    assert path.name == "a.D.bam.bai"
    assert said == (
        "File 'a.bam.bai' (object id 'I') has the same name as object id 'X'; "
        "writing it as 'a.D.bam.bai'"
    )


def test_an_index_following_a_renamed_data_file_says_so(tmp_path: Path):
    names = Names(tmp_path, "filename")
    names.claim("A", "s.bam", "AN1")
    assert names.claim("B", "s.bam", "AN2")[0].name == "s.B.bam"
    path, said = names.claim("Bi", "s.bam.bai", "AN2", data_id="B")
    assert path.name == "s.B.bam.bai"
    assert said == (
        "'s.bam.bai' (object id 'Bi') is written as 's.B.bam.bai', beside its data file's "
        "unique name"
    )


def test_when_the_tagged_name_is_taken_the_objects_own_id_is_used(tmp_path: Path):
    names = Names(tmp_path, "filename")
    names.claim("A", "s.bam", "AN1")
    names.claim("B", "s.bam", "AN2")  # s.B.bam
    names.claim("X", "s.bam.bai", "AN3")  # s.bam.bai, owned by an unrelated object
    names.claim("Y", "s.B.bam.bai", "AN3")  # the name B's index would be given
    path, _ = names.claim("Bi", "s.bam.bai", "AN2", data_id="B")
    assert path.name == "s.Bi.bam.bai"


@pytest.mark.parametrize("layout", ["filename", "bundle", "id"])
def test_many_objects_of_one_name_get_distinct_paths(tmp_path: Path, layout: str):
    names = Names(tmp_path, layout)
    paths = [names.claim(f"O{i}", "same.vcf.gz", "AN")[0] for i in range(20)]
    assert len(set(paths)) == 20
    assert all(p.name.endswith(".vcf.gz") or layout == "id" for p in paths)


def test_a_literal_name_equal_to_a_unique_name_is_not_overwritten(tmp_path: Path):
    names = Names(tmp_path, "filename")
    first = names.claim("X", "same.B.bam", "AN")[0]
    names.claim("A", "same.bam", "AN")
    second = names.claim("B", "same.bam", "AN")[0]
    assert first != second
