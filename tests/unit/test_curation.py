"""Curation without a server: the merge patch of RFC 7396, and the events curated changes
record in the outbox (metadata.curation.changed): one per change of an analysis, SONG's
PUBLISH with the analysis as changed; none for a refused change or one of no analysis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from pyscore.server import events, metadata
from pyscore.server.errors import ApiError
from pyscore.server.events.outbox import Event
from pyscore.server.metadata import curation
from tests.publish import song_payload
from tests.unit.memdb import memory_session

STUDY = "CUR"


@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [  # RFC 7396, appendix A
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch(target, patch, result):
    assert curation.merge_patch(target, patch) == result


@pytest.fixture
def session() -> Iterator[Session]:
    with memory_session() as s:
        metadata.seed_analysis_types(s)
        metadata.create_study(s, STUDY, {})
        yield s


def recorded(session: Session) -> list[tuple[str, str]]:
    """(analysisId, action) of each event in the outbox but the submissions' CREATE."""
    session.flush()
    rows = session.scalars(select(Event).order_by(Event.id))
    return [(e.analysis_id, e.action) for e in rows if e.action != events.CREATE]


def submitted(session: Session) -> tuple[str, dict[str, str]]:
    files = {"c.bam": b"bam bytes", "c.bam.bai": b"index"}
    analysis_id = metadata.submit(session, STUDY, song_payload(STUDY, files, donor="DC"))
    return analysis_id, {
        f.file_name: f.object_id for f in metadata.analysis_files(session, analysis_id)
    }


def test_each_curated_change_of_an_analysis_records_one_event(session):
    analysis_id, ids = submitted(session)
    update = {"analysisType": {"name": "sequencingRead"}, "experiment": {"libraryStrategy": "WXS"}}
    metadata.update_analysis(session, STUDY, analysis_id, update)
    metadata.patch_analysis(session, STUDY, analysis_id, {"info": {"lab": "x"}})
    metadata.update_file(session, STUDY, ids["c.bam"], {"info": {"qc": "ok"}})
    metadata.update_file(session, STUDY, ids["c.bam"], {"info": {"qc": "ok"}})  # no change
    metadata.delete_files(session, STUDY, [ids["c.bam.bai"]])
    assert recorded(session) == [(analysis_id, "PUBLISH")] * 4  # SONG's action for an update
    message = session.scalars(select(Event).order_by(Event.id.desc())).first()
    assert message is not None  # the analysis as the last change (its index deleted) left it
    assert [f["objectId"] for f in message.analysis["files"]] == [ids["c.bam"]]


def test_a_refused_change_records_no_event(session):
    analysis_id, ids = submitted(session)
    for change in (
        lambda: metadata.update_analysis(session, STUDY, analysis_id, {"experiment": {}}),
        lambda: metadata.patch_analysis(session, STUDY, analysis_id, {"experiment": None}),
        lambda: metadata.delete_files(session, STUDY, list(ids.values())),
    ):
        with pytest.raises(ApiError):
            change()
    sample = metadata.analysis_samples(session, analysis_id)[0]
    with pytest.raises(ApiError) as used:
        metadata.delete_entities(session, metadata.DONOR, STUDY, [sample["donor"]["donorId"]])
    assert used.value.error_id == "donor.repository.delete.record"
    assert recorded(session) == []
