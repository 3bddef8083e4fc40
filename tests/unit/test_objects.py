"""Score's storage model without a store or a server: how an object is cut into parts, which
parts (and URLs) a download specification lists for a whole object or a range, the one
'published only' rule, and the record of a multipart upload, against a fake store that only
remembers what it was asked."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Optional

import pytest
from sqlalchemy.orm import Session

from pyscore.server import objects
from pyscore.server.errors import ApiError
from pyscore.server.objects import (
    MAX_PARTS,
    MIN_PART,
    Signer,
    download_spec,
    effective_part_size,
    part_count,
    part_layout,
    require_published,
)
from pyscore.server.tables import Analysis, File, StoredObject, Study
from tests.unit.memdb import memory_session

MiB = 1024 * 1024
GiB = 1024 * MiB
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
MD5 = "0123456789abcdef" * 2


class FakeStore:
    """What objects.py asks of a store, answered from memory and written down."""

    kind = "fake"

    def __init__(self, signs_ranges: bool = True) -> None:
        self.signs_ranges = signs_ranges
        self.gets: list[tuple[str, Optional[int], Optional[int]]] = []
        self.held: dict[str, dict[int, str]] = {}  # upload id → part number → MD5
        self.completed: list[tuple[str, str, dict[int, str]]] = []
        self.aborted: list[str] = []
        self.meta: dict[str, dict] = {}
        self.uploads = 0

    def url_for_get(self, object_id, *, base_url, expires_in, offset=None, length=None, **_):
        self.gets.append((object_id, offset, length))
        return f"{base_url}/get/{object_id}?offset={offset}&length={length}&n={len(self.gets)}"

    def initiate(self, object_id: str, size: int) -> str:
        self.uploads += 1
        self.held[f"up{self.uploads}"] = {}
        return f"up{self.uploads}"

    def url_for_part(self, object_id, upload_id, part_number, offset, size, *, base_url, **_):
        return f"{base_url}/put/{upload_id}/{part_number}?range={offset}-{offset + size - 1}"

    def list_parts(self, object_id: str, upload_id: str) -> dict[int, str] | None:
        return dict(self.held[upload_id]) if upload_id in self.held else None

    def complete(self, object_id: str, upload_id: str, etags: dict[int, str]) -> None:
        self.completed.append((object_id, upload_id, etags))
        self.held.pop(upload_id, None)

    def abort(self, object_id: str, upload_id: str) -> None:
        self.aborted.append(upload_id)
        self.held.pop(upload_id, None)

    def write_meta(self, object_id: str, spec: dict) -> None:
        self.meta[object_id] = spec


@pytest.fixture
def session() -> Iterator[Session]:
    with memory_session() as s:
        s.add(Study(study_id="ST", name="ST"))
        s.flush()
        for state in ("PUBLISHED", "UNPUBLISHED", "SUPPRESSED"):
            s.add(
                Analysis(
                    analysis_id=state,
                    study_id="ST",
                    type_name="t",
                    type_version=1,
                    state=state,
                    payload={},
                    created_at=NOW,
                    updated_at=NOW,
                )
            )
        s.flush()
        yield s


def signer(store: FakeStore) -> Signer:
    return Signer(store, "http://h", download_expiry=600, upload_expiry=900)  # type: ignore[arg-type]


def a_file(object_id: str = "obj", size: int = 0, analysis: str = "PUBLISHED") -> File:
    return File(
        object_id=object_id,
        analysis_id=analysis,
        study_id="ST",
        file_name=f"{object_id}.bam",
        file_size=size,
        file_md5sum=MD5,
        file_access="controlled",
    )


def stored(session: Session, size: int, part_size: int = MIN_PART, md5s: bool = True) -> File:
    layout = part_layout(size, part_size)
    session.add(
        StoredObject(
            object_id="obj",
            size=size,
            md5=MD5,
            part_size=effective_part_size(size, part_size),
            part_md5s=[f"{n:032x}" for n in range(1, len(layout) + 1)] if md5s else [],
            upload_id="U",
            last_modified=NOW,
        )
    )
    session.flush()
    return a_file(size=size)


# -- part layout ---------------------------------------------------------------------------
SIZES = [1, MIN_PART - 1, MIN_PART, MIN_PART + 1, 3 * MIN_PART + 7, GiB + 1]
REQUESTED = [1, MIN_PART, 64 * MiB + 3, 10 * GiB]


@pytest.mark.parametrize("size", [*SIZES, MAX_PARTS * MIN_PART, MAX_PARTS * MIN_PART + 1, 2**40])
@pytest.mark.parametrize("requested", REQUESTED)
def test_parts_cover_the_object_once_and_obey_s3s_limits(size: int, requested: int):
    layout = part_layout(size, requested)
    assert 1 <= len(layout) <= MAX_PARTS
    assert layout[0][0] == 0
    for (off, n), (next_off, _) in zip(layout, layout[1:]):
        assert off + n == next_off  # no gap, no overlap
    assert layout[-1][0] + layout[-1][1] == size
    assert all(n > 0 for _, n in layout)
    assert all(n >= MIN_PART for _, n in layout[:-1])
    assert len({n for _, n in layout[:-1]}) <= 1  # every part but the last of one size
    assert all(n >= min(requested, size) for _, n in layout[:-1])


@pytest.mark.parametrize("size", [*SIZES, 0, -5, MAX_PARTS * MIN_PART + 1, 2**40, 10**30])
@pytest.mark.parametrize("requested", REQUESTED)
def test_part_count_is_the_layouts_length(size: int, requested: int):
    counted = part_count(size, requested)
    assert counted <= MAX_PARTS
    if size <= 2**40:
        assert counted == len(part_layout(size, requested))


def test_an_empty_object_is_one_empty_part():
    assert part_layout(0, MIN_PART) == [(0, 0)]


@pytest.mark.parametrize(
    ("size", "requested", "effective"),
    [
        (0, 1, MIN_PART),
        (10, 64 * MiB, 64 * MiB),
        (MAX_PARTS * MIN_PART, MIN_PART, MIN_PART),
        (MAX_PARTS * MIN_PART + 1, MIN_PART, MIN_PART + 1),
        (2 * MAX_PARTS * MIN_PART, 1, 2 * MIN_PART),
    ],
)
def test_effective_part_size(size: int, requested: int, effective: int):
    assert effective_part_size(size, requested) == effective


def test_exactly_max_parts_at_the_boundary():
    assert len(part_layout(MAX_PARTS * MIN_PART, MIN_PART)) == MAX_PARTS
    assert len(part_layout(MAX_PARTS * MIN_PART + 1, MIN_PART)) == MAX_PARTS


# -- download specifications -----------------------------------------------------------------
SIZE = 3 * MIN_PART + 1000  # four parts, the last small


def test_a_whole_spec_lists_every_part_with_its_own_url_and_md5(session: Session):
    f, store = stored(session, SIZE), FakeStore(signs_ranges=True)
    spec = download_spec(session, signer(store), f)
    layout = part_layout(SIZE, MIN_PART)
    assert [(p.offset, p.partSize) for p in spec.parts] == layout
    assert [p.partNumber for p in spec.parts] == [1, 2, 3, 4]
    assert (spec.objectSize, spec.objectMd5, spec.objectId) == (SIZE, MD5, "obj")
    assert (spec.objectKey, spec.uploadId) == ("data/obj", "U")
    assert [p.sourceMd5 for p in spec.parts] == [f"{n:032x}" for n in (1, 2, 3, 4)]
    assert store.gets == [("obj", off, n) for off, n in layout]
    assert len({p.url for p in spec.parts}) == 4


def test_a_store_that_does_not_sign_ranges_signs_one_url_for_all_parts(session: Session):
    f, store = stored(session, SIZE), FakeStore(signs_ranges=False)
    spec = download_spec(session, signer(store), f)
    assert len(spec.parts) == 4 and len(store.gets) == 1
    assert len({p.url for p in spec.parts}) == 1 and spec.parts[0].url


@pytest.mark.parametrize("signs_ranges", [True, False])
@pytest.mark.parametrize(
    ("offset", "length"),
    [(0, 10), (7, 1), (MIN_PART + 3, 2 * MIN_PART + 5), (SIZE - 1, 1), (5, SIZE - 5)],
)
def test_a_ranged_spec_covers_exactly_the_range(
    session: Session, signs_ranges: bool, offset: int, length: int
):
    f, store = stored(session, SIZE), FakeStore(signs_ranges)
    spec = download_spec(session, signer(store), f, offset=offset, length=length)
    assert spec.objectSize == length
    assert [(p.offset, p.partSize) for p in spec.parts] == [
        (offset + o, n) for o, n in part_layout(length, MIN_PART)
    ]
    assert all(p.sourceMd5 is None for p in spec.parts)  # part MD5s are of the whole object's
    assert all(p.url for p in spec.parts)
    if signs_ranges:
        assert store.gets == [("obj", p.offset, p.partSize) for p in spec.parts]
    else:
        assert len(store.gets) == 1


def test_length_minus_one_reads_to_the_end(session: Session):
    f = stored(session, SIZE)
    spec = download_spec(session, signer(FakeStore()), f, offset=100, length=-1)
    assert spec.objectSize == SIZE - 100
    assert spec.parts[-1].offset + spec.parts[-1].partSize == SIZE


@pytest.mark.parametrize(
    ("offset", "length"),
    [(-1, 10), (0, 0), (0, -2), (SIZE, -1), (SIZE, 1), (SIZE - 1, 2), (0, SIZE + 1)],
)
def test_a_range_outside_the_object_is_400(session: Session, offset: int, length: int):
    f, store = stored(session, SIZE), FakeStore()
    with pytest.raises(ApiError) as caught:
        download_spec(session, signer(store), f, offset=offset, length=length)
    error = caught.value
    assert (error.status, error.error_id) == (400, "invalid.range")
    assert f"offset={offset}" in error.message and f"of {SIZE} bytes" in error.message
    assert "'obj'" in error.message
    assert store.gets == []


@pytest.mark.parametrize("signs_ranges", [True, False])
def test_external_whole_is_one_part_with_an_unranged_url(session: Session, signs_ranges: bool):
    f, store = stored(session, SIZE), FakeStore(signs_ranges)
    spec = download_spec(session, signer(store), f, external=True)
    assert [(p.offset, p.partSize, p.sourceMd5) for p in spec.parts] == [(0, SIZE, None)]
    assert store.gets == [("obj", None, None)]


def test_external_range_is_one_part_with_a_ranged_url(session: Session):
    f, store = stored(session, SIZE), FakeStore()
    spec = download_spec(session, signer(store), f, offset=10, length=2 * MIN_PART, external=True)
    assert [(p.offset, p.partSize) for p in spec.parts] == [(10, 2 * MIN_PART)]
    assert store.gets == [("obj", 10, 2 * MIN_PART)]


def test_exclude_urls_signs_nothing(session: Session):
    f, store = stored(session, SIZE), FakeStore()
    spec = download_spec(session, signer(store), f, exclude_urls=True)
    assert len(spec.parts) == 4 and all(p.url is None for p in spec.parts)
    assert spec.parts[0].sourceMd5 is not None and store.gets == []


def test_no_source_md5s_when_they_do_not_match_the_layout(session: Session):
    f = stored(session, SIZE, md5s=False)
    spec = download_spec(session, signer(FakeStore()), f)
    assert len(spec.parts) == 4 and all(p.sourceMd5 is None for p in spec.parts)


def test_a_small_object_is_one_part(session: Session):
    f = stored(session, 1000)
    spec = download_spec(session, signer(FakeStore()), f)
    assert [(p.partNumber, p.offset, p.partSize) for p in spec.parts] == [(1, 0, 1000)]


def test_an_object_not_in_storage_is_404(session: Session):
    with pytest.raises(ApiError) as caught:
        download_spec(session, signer(FakeStore()), a_file("missing"))
    assert (caught.value.status, caught.value.error_id) == (404, "object.not.found")
    assert "'missing'" in caught.value.message


# -- published only --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("analysis", "state"),
    [("UNPUBLISHED", "UNPUBLISHED"), ("SUPPRESSED", "SUPPRESSED"), ("GONE", "UNKNOWN")],
)
def test_only_files_of_published_analyses_can_be_read(session: Session, analysis, state):
    require_published(session, a_file("o1", analysis="PUBLISHED"))
    with pytest.raises(ApiError) as caught:
        require_published(session, a_file("o1", analysis=analysis))
    error = caught.value
    assert (error.status, error.error_id) == (400, "analysis.not.published")
    assert f"objectId 'o1' with analysisState '{state}'" in error.message


# -- uploads -----------------------------------------------------------------------------------
UPLOAD_SIZE = 2 * MIN_PART + 10  # three parts


def initiate(session: Session, store: FakeStore, f: File, **overrides):
    session.merge(f)  # its analysis's state is read again as the upload goes on
    args = {
        "file_size": f.file_size,
        "md5": MD5,
        "overwrite": False,
        "part_size": MIN_PART,
        **overrides,
    }
    return objects.initiate_upload(session, signer(store), f, **args)


def test_an_upload_from_start_to_finish(session: Session):
    store, f = FakeStore(), a_file(size=UPLOAD_SIZE, analysis="UNPUBLISHED")
    spec = initiate(session, store, f, md5=MD5.upper())  # MD5s compare in any case
    assert (spec.uploadId, spec.objectSize, spec.objectMd5) == ("up1", UPLOAD_SIZE, MD5)
    assert [(p.offset, p.partSize) for p in spec.parts] == part_layout(UPLOAD_SIZE, MIN_PART)
    assert spec.parts[2].url == f"http://h/put/up1/3?range={2 * MIN_PART}-{UPLOAD_SIZE - 1}"

    store.held["up1"] = {1: "a" * 32, 2: "b" * 32, 3: "c" * 32}
    objects.record_parts(session, store, "obj", "up1", [(1, "A" * 32, '"' + "a" * 32 + '"')])
    objects.record_parts(session, store, "obj", "up1", [(3, "c" * 32, "c" * 32)])
    status = objects.upload_status(session, signer(store), "obj", UPLOAD_SIZE)
    assert [(p.partNumber, p.md5, p.url is None) for p in status.parts] == [
        (1, "a" * 32, True),
        (2, None, False),
        (3, "c" * 32, True),
    ]
    with pytest.raises(ApiError, match=r"missing parts \[2\]") as caught:
        objects.complete_upload(session, store, "obj", "up1")
    assert caught.value.error_id == "upload.incomplete" and store.completed == []

    objects.record_parts(session, store, "obj", "up1", [(2, "b" * 32, "b" * 32)])
    obj = objects.complete_upload(session, store, "obj", "up1")
    assert (obj.size, obj.md5, obj.part_md5s) == (UPLOAD_SIZE, MD5, ["a" * 32, "b" * 32, "c" * 32])
    assert store.completed == [("obj", "up1", {1: "a" * 32, 2: "b" * 32, 3: "c" * 32})]
    assert [p["sourceMd5"] for p in store.meta["obj"]["parts"]] == ["a" * 32, "b" * 32, "c" * 32]
    assert objects.current_upload(session, "obj") is None
    published = a_file(size=UPLOAD_SIZE, analysis="PUBLISHED")
    whole = download_spec(session, signer(store), published)
    assert [p.sourceMd5 for p in whole.parts] == obj.part_md5s


@pytest.mark.parametrize(
    ("analysis", "overrides", "error_id", "says"),
    [
        ("PUBLISHED", {}, "analysis.not.unpublished", "is PUBLISHED"),
        ("SUPPRESSED", {}, "analysis.not.unpublished", "is SUPPRESSED"),
        ("UNPUBLISHED", {"file_size": 0}, "upload.empty", "empty file"),
        ("UNPUBLISHED", {"file_size": UPLOAD_SIZE - 1}, "upload.size.mismatch", "differs"),
        ("UNPUBLISHED", {"md5": "f" * 32}, "upload.md5.mismatch", "f" * 32),
    ],
)
def test_an_upload_the_analysis_does_not_allow_is_400(
    session: Session, analysis, overrides, error_id, says
):
    store = FakeStore()
    with pytest.raises(ApiError) as caught:
        initiate(session, store, a_file(size=UPLOAD_SIZE, analysis=analysis), **overrides)
    assert (caught.value.status, caught.value.error_id) == (400, error_id)
    assert says in caught.value.message
    assert store.uploads == 0


def test_a_second_upload_needs_overwrite_and_replaces_the_first(session: Session):
    store, f = FakeStore(), a_file(size=UPLOAD_SIZE, analysis="UNPUBLISHED")
    initiate(session, store, f)
    with pytest.raises(ApiError, match="already in progress") as caught:
        initiate(session, store, f)
    assert caught.value.error_id == "upload.in.progress"
    assert initiate(session, store, f, overwrite=True).uploadId == "up2"
    assert store.aborted == ["up1"]
    assert objects.get_upload(session, "obj").upload_id == "up2"


def test_an_object_already_stored_needs_overwrite(session: Session):
    stored(session, UPLOAD_SIZE)
    f = a_file(size=UPLOAD_SIZE, analysis="UNPUBLISHED")
    with pytest.raises(ApiError) as caught:
        initiate(session, FakeStore(), f)
    assert caught.value.error_id == "object.already.exists"
    assert initiate(session, FakeStore(), f, overwrite=True).uploadId == "up1"


@pytest.mark.parametrize(
    ("number", "held", "md5", "error_id"),
    [
        (0, {}, "a" * 32, "upload.part.number"),
        (4, {}, "a" * 32, "upload.part.number"),
        (1, {}, "a" * 32, "upload.part.missing"),
        (1, {1: "b" * 32}, "a" * 32, "upload.part.checksum"),
    ],
)
def test_a_part_is_recorded_only_as_the_store_holds_it(
    session: Session, number: int, held: dict, md5: str, error_id: str
):
    store = FakeStore()
    initiate(session, store, a_file(size=UPLOAD_SIZE, analysis="UNPUBLISHED"))
    store.held["up1"] = held
    with pytest.raises(ApiError) as caught:
        objects.record_parts(session, store, "obj", "up1", [(number, md5, md5)])
    assert (caught.value.status, caught.value.error_id) == (400, error_id)


def test_an_upload_the_store_no_longer_holds_is_begun_again_not_resumed(session: Session):
    """The store completed (or aborted) an upload while its record's update was lost: its
    status is a 404 (the original client then begins anew), a start begins a new upload in
    its place, and a per-part finalize is refused; it is never handed out to send parts to."""
    store, f = FakeStore(), a_file(size=UPLOAD_SIZE, analysis="UNPUBLISHED")
    initiate(session, store, f)
    progress, resumed = objects.start_upload(session, signer(store), f, UPLOAD_SIZE, MD5, False, 1)
    assert (progress.uploadId, resumed) == ("up1", True)  # held: resumed

    del store.held["up1"]  # completed behind the record's back
    with pytest.raises(objects.UploadGone) as caught:
        objects.upload_status(session, signer(store), "obj", UPLOAD_SIZE)
    assert (caught.value.status, caught.value.error_id) == (404, "upload.not.found")
    assert "no longer holds upload up1" in caught.value.message
    with pytest.raises(objects.UploadGone):
        objects.record_parts(session, store, "obj", "up1", [(1, "a" * 32, "a" * 32)])

    progress, resumed = objects.start_upload(session, signer(store), f, UPLOAD_SIZE, MD5, False, 1)
    assert (progress.uploadId, resumed) == ("up2", False)
    assert all(p.url and p.md5 is None for p in progress.parts)
    assert store.aborted == ["up1"]
    assert objects.get_upload(session, "obj").upload_id == "up2"


def test_a_finish_of_an_upload_the_store_completed_is_checked_by_the_completion(
    session: Session,
):
    """A finish asked again after the store completed the upload (its record lost): the
    parts cannot be listed, so each must at least be its own MD5, and the store's completion
    decides (it answers only if the object is these parts)."""
    store, f = FakeStore(), a_file(size=UPLOAD_SIZE, analysis="UNPUBLISHED")
    initiate(session, store, f)
    del store.held["up1"]
    sent = [(1, "a" * 32, "a" * 32), (2, "b" * 32, "b" * 32), (3, "c" * 32, "c" * 32)]
    with pytest.raises(ApiError) as caught:
        objects.finish_upload(session, store, "obj", "up1", [(1, "a" * 32, "f" * 32)])
    assert caught.value.error_id == "upload.part.checksum"
    obj = objects.finish_upload(session, store, "obj", "up1", sent)
    assert obj.part_md5s == ["a" * 32, "b" * 32, "c" * 32]
    assert store.completed == [("obj", "up1", {1: "a" * 32, 2: "b" * 32, 3: "c" * 32})]


def test_an_upload_is_found_only_under_its_id(session: Session):
    store = FakeStore()
    initiate(session, store, a_file(size=UPLOAD_SIZE, analysis="UNPUBLISHED"))
    with pytest.raises(ApiError, match="with uploadId other") as caught:
        objects.get_upload(session, "obj", "other")
    assert caught.value.status == 404
    with pytest.raises(ApiError, match="not 5") as caught:
        objects.upload_status(session, signer(store), "obj", 5)
    assert caught.value.error_id == "upload.size.changed"
    objects.cancel_upload(session, store, "obj")
    assert store.aborted == ["up1"]
    with pytest.raises(ApiError) as caught:
        objects.get_upload(session, "obj")
    assert (caught.value.status, caught.value.error_id) == (404, "upload.not.found")
