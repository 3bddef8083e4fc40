"""Download planning without a server: what a manifest row spares the client asking, where
files go (layouts, names made unique), how a file is cut into requests (pieces within parts,
range-bound parts whole), buffers sized to the request, the retry budget, and lookups handed
on in input order."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pyscore.client.download import Request, wanted_from_rows
from pyscore.client.errors import ScoreError, UsageError
from pyscore.client.httpio import BUFFER, MIN_BUFFER, Buffer, buffer_cap, stale
from pyscore.client.layout import Names, target_path, unique_name
from pyscore.client.lookup import ordered
from pyscore.client.ranges import Ranges
from pyscore.client.retry import MAX_RENEWALS, Attempts, Transient
from pyscore.client.transfer import MAX_PIECE, MIN_PIECE, FileDownload, Target
from pyscore.wire.manifest import ManifestRow
from pyscore.wire.score import ObjectSpecification, Part

MiB = 1024 * 1024
OURS = "http://h/store/objects/x?exp={exp}&sig=abc"
RANGE_BOUND = (
    "https://s3/b/x?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20260101T000000Z"
    "&X-Amz-Expires=86400&X-Amz-SignedHeaders=host%3Brange&X-Amz-Signature=f"
)


# -- what the manifest says ----------------------------------------------------------------
def test_a_manifest_row_naming_file_and_analysis_needs_no_entity_lookup():
    rows = [
        ManifestRow("a", "a.bam", 10, None, "AN1", "ai", "ST"),
        ManifestRow("b", "b.tsv", 5, None, "AN1", None, "ST"),
        ManifestRow("c", None, None),  # GDC-like: only the id
    ]
    a, b, c = wanted_from_rows(rows)
    assert a.entity is not None and (a.entity.fileName, a.entity.gnosId) == ("a.bam", "AN1")
    assert (a.index_id, a.index_known, a.size) == ("ai", True, 10)
    assert b.entity is not None and not b.index_known  # no index id: the analysis is listed
    assert c.entity is None


def test_requested_ids_are_asked_once_in_order():
    req = Request(["x", "y", "x"], Path("/tmp"))
    assert [w.object_id for w in req.wanted()] == ["x", "y"]


# -- where files go --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("layout", "want"), [("filename", "f.bam"), ("bundle", "AN/f.bam"), ("id", "OID")]
)
def test_layouts(tmp_path, layout, want):
    assert target_path(tmp_path, layout, "OID", "f.bam", "AN") == tmp_path.resolve() / want


@pytest.mark.parametrize("name", ["..", "a/b", "", "x\x00y", "."])
def test_names_that_could_escape_are_refused(tmp_path, name):
    with pytest.raises(UsageError):
        target_path(tmp_path, "filename", "OID", name, "AN")


def test_unique_names_keep_a_data_file_and_its_index_paired():
    assert unique_name("same.bam", "T") == "same.T.bam"
    assert unique_name("same.bam.bai", "T") == "same.T.bam.bai"
    assert unique_name("s.vcf.gz", "T") == "s.T.vcf.gz"
    assert unique_name("README", "T") == "README.T"
    assert unique_name(".hidden", "T") == ".hidden.T"


def test_a_second_object_of_one_name_gets_a_unique_name_and_its_index_follows(tmp_path):
    names = Names(tmp_path, "filename")
    first, said = names.claim("A", "same.bam", "AN1")
    assert first.name == "same.bam" and said is None
    assert names.claim("Ai", "same.bam.bai", "AN1", data_id="A")[0].name == "same.bam.bai"
    second, said = names.claim("B", "same.bam", "AN2")
    assert second.name == "same.B.bam"
    assert said is not None and "'A'" in said and "same.B.bam" in said
    index, said = names.claim("Bi", "same.bam.bai", "AN2", data_id="B")
    assert index.name == "same.B.bam.bai" and said


def test_bundle_layout_names_clash_only_within_an_analysis(tmp_path):
    names = Names(tmp_path, "bundle")
    assert names.claim("A", "x.bam", "AN1")[0].parts[-2:] == ("AN1", "x.bam")
    assert names.claim("B", "x.bam", "AN2") == (tmp_path.resolve() / "AN2" / "x.bam", None)
    assert names.claim("C", "x.bam", "AN2")[0].name == "x.C.bam"


# -- how a file is cut into requests -----------------------------------------------------------
def spec(size: int, part_size: int, url: str) -> ObjectSpecification:
    parts = [
        Part(i + 1, min(part_size, size - off), off, url)
        for i, off in enumerate(range(0, size, part_size))
    ]
    return ObjectSpecification("k", "o", "o", parts, size, None)


def tasks_of(tmp_path: Path, s: ObjectSpecification, done: Ranges, parallel: int = 4):
    d = FileDownload(Target("o", "f", tmp_path / "f", s), tmp_path, lambda: s, None)  # type: ignore[arg-type]
    d.done = done
    return d.tasks(parallel)


def test_pieces_stay_within_parts_and_cover_what_is_missing(tmp_path):
    url = OURS.format(exp=int(time.time()) + 3600)
    s = spec(100 * MiB, 20 * MiB, url)
    tasks = tasks_of(tmp_path, s, Ranges([(0, 5 * MiB)]))
    covered = Ranges([(t.start, t.end) for t in tasks])
    assert covered.spans() == [(5 * MiB, 100 * MiB)]
    for t in tasks:
        part = s.parts[t.part_index]
        assert part.offset <= t.start < t.end <= part.offset + part.partSize
        assert t.end - t.start <= max(MIN_PIECE, -(-100 * MiB // 16))
        assert not t.whole_part


def test_the_md5_backlog_stays_small_the_pieces_of_a_big_file_are_capped_and_end_small(tmp_path):
    """The MD5 follows the written prefix, so what `parallel` pieces wrote beyond it waits:
    a 20 GiB file cut in 640 MiB pieces left up to 5 GiB (seconds of hashing) for after its
    last byte. Pieces are capped, and the last ones are the smallest."""
    url = OURS.format(exp=int(time.time()) + 3600)
    size = 20 * 1024 * MiB
    tasks = tasks_of(tmp_path, spec(size, 1024 * MiB, url), Ranges(), parallel=8)
    assert Ranges([(t.start, t.end) for t in tasks]).spans() == [(0, size)]
    assert [t.start for t in tasks] == sorted(t.start for t in tasks)  # in offset order
    assert max(t.end - t.start for t in tasks) <= MAX_PIECE
    assert {t.end - t.start for t in tasks[-16:]} == {MIN_PIECE}


def test_a_range_bound_part_is_fetched_whole_even_when_part_of_it_is_there(tmp_path):
    s = spec(50 * MiB, 20 * MiB, RANGE_BOUND)
    tasks = tasks_of(tmp_path, s, Ranges([(0, 20 * MiB), (25 * MiB, 30 * MiB)]))
    assert [(t.start, t.end, t.whole_part) for t in tasks] == [
        (20 * MiB, 40 * MiB, True),
        (40 * MiB, 50 * MiB, True),
    ]
    assert tasks[0].credited == 5 * MiB  # what was there is not progress twice


def test_a_small_file_is_one_request(tmp_path):
    s = spec(2048, 20 * MiB, OURS.format(exp=int(time.time()) + 3600))
    (task,) = tasks_of(tmp_path, s, Ranges())
    assert (task.start, task.end) == (0, 2048)


# -- buffers, renewal, retries ---------------------------------------------------------------
def test_buffers_are_sized_to_the_request_and_bounded_together():
    b = Buffer(buffer_cap(8))
    assert len(b.view(2048)) == 2048 and len(b.data) == 2048
    assert len(b.view(100 * MiB)) == BUFFER
    assert buffer_cap(64) * 64 <= 64 * MiB and buffer_cap(10_000) == MIN_BUFFER


def test_a_url_is_renewed_shortly_before_it_expires():
    now = time.time()
    assert stale(OURS.format(exp=int(now) + 10), now)
    assert not stale(OURS.format(exp=int(now) + 3600), now)
    assert not stale("http://h/x", now)  # says nothing: used until refused


def test_the_retry_budget():
    slept: list[float] = []
    budget = Attempts(3, sleep=slept.append)

    def dropped() -> Transient:
        error = Transient()
        error.__cause__ = ScoreError("dropped")
        return error

    budget.failed(dropped())
    budget.failed(dropped())
    with pytest.raises(ScoreError, match="dropped"):  # the third failure gives up
        budget.failed(dropped())
    assert len(slept) == 2
    assert all(budget.renewed() for _ in range(MAX_RENEWALS)) and not budget.renewed()
    budget.succeeded()
    assert budget.count == 0 and budget.renewed()


def test_ordered_hands_results_on_in_input_order():
    def slow_first(i: int) -> int:
        if i == 0:
            time.sleep(0.2)
        if i == 3:
            raise ScoreError("three")
        return i * 10

    got = list(ordered(slow_first, range(6), window=4))
    assert [i for i, _ in got] == list(range(6))
    assert [r for _, r in got if not isinstance(r, ScoreError)] == [0, 10, 20, 40, 50]
    assert str(got[3][1]) == "three"
