"""SONG's analysis pages without a server: a page is the slice of the whole ordered list
however deep its offset, each analysis's JSON is what it would be on its own (samples and
files loaded for the page at once never mix analyses), and a page costs a few queries
whatever its size (it cost four per analysis: a page of 100 at a deep offset of a 400,000
analysis study was hundreds of round trips)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from pyscore.server import metadata
from tests.publish import song_payload
from tests.unit.memdb import memory_session

STUDY = "PAGES"


@pytest.fixture
def session() -> Iterator[Session]:
    with memory_session() as s:
        metadata.seed_analysis_types(s)
        metadata.create_study(s, STUDY, {})
        for n in range(30):
            files = {f"D{n}.bam": b"x" * (n + 1), f"D{n}.bam.bai": b"i"}
            payload = song_payload(STUDY, files, donor=f"D{n % 7}", info={"n": n})
            payload["samples"][0]["submitterSampleId"] = f"D{n % 7}-S{n % 3}"
            metadata.submit(s, STUDY, payload, allow_duplicates=True)
        s.flush()
        yield s


def selects(session: Session, work) -> tuple[object, int]:
    """What `work()` returns and how many SELECTs it sent."""
    count = [0]

    def seen(conn, cursor, statement, *args) -> None:
        count[0] += statement.lstrip().upper().startswith("SELECT")

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", seen)
    try:
        return work(), count[0]
    finally:
        event.remove(engine, "before_cursor_execute", seen)


def test_a_page_is_the_slice_of_the_whole_list_and_each_analysis_is_itself(session):
    everything, total = metadata.list_analyses(session, STUDY, ["UNPUBLISHED"])
    assert total == len(everything) == 30
    for offset, limit in ((0, 7), (7, 7), (25, 10), (30, 5)):
        page, page_total = metadata.list_analyses(session, STUDY, ["UNPUBLISHED"], limit, offset)
        assert page_total == 30
        assert [a.analysis_id for a in page] == [
            a.analysis_id for a in everything[offset : offset + limit]
        ]
    together = metadata.analyses_json(session, everything)
    alone = [metadata.analysis_json(session, a) for a in everything]
    assert together == alone
    for doc in together:
        assert {f["fileName"] for f in doc["files"]} == {
            f"D{doc['info']['n']}.bam",
            f"D{doc['info']['n']}.bam.bai",
        }
        [sample] = doc["samples"]
        assert sample["donor"]["submitterDonorId"] == f"D{doc['info']['n'] % 7}"


def test_a_page_costs_a_few_queries_whatever_its_size(session):
    def page(limit: int) -> object:
        rows, _ = metadata.list_analyses(session, STUDY, ["UNPUBLISHED"], limit, 3)
        return metadata.analyses_json(session, rows)

    small, small_queries = selects(session, lambda: page(2))
    large, large_queries = selects(session, lambda: page(25))
    assert len(small) == 2 and len(large) == 25  # type: ignore[arg-type]
    assert large_queries == small_queries <= 6
