"""Analyses: Song's JSON of an analysis, listing by state, publishing (only with every
file in storage and no upload of one open), unpublishing and suppressing (each sends its
event: events/)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pyscore.server import events, repository
from pyscore.server.db import utcnow
from pyscore.server.errors import ApiError, bad_request, conflict, not_found
from pyscore.server.metadata.ids import STATES
from pyscore.server.metadata.song_json import (
    donor_json,
    file_json,
    iso,
    local_time,
    sample_json,
    specimen_json,
)
from pyscore.server.metadata.studies import get_study
from pyscore.server.tables import (
    Analysis,
    AnalysisSample,
    Donor,
    File,
    Sample,
    Specimen,
    StoredObject,
    Upload,
)


def get_analysis_row(session: Session, study_id: str, analysis_id: str) -> Analysis:
    """The analysis, as Song finds it (checkAnalysisAndStudyRelated, behind every read and
    change of one): 404 study.id.does.not.exist, 404 analysis.id.not.found, or 400
    entity.not.related.to.study when another study has it."""
    get_study(session, study_id)
    row = session.get(Analysis, analysis_id)
    if row is None:
        raise not_found(
            "analysis.id.not.found",
            f"The analysisId '{analysis_id}' was not found in study '{study_id}'",
        )
    if row.study_id != study_id:
        raise not_related("analysisId", analysis_id, study_id, row.study_id)
    return row


def not_related(kind: str, entity_id: str, study_id: str, actual: str) -> ApiError:
    return bad_request(
        "entity.not.related.to.study",
        f"The {kind} '{entity_id}' is not related to the input studyId '{study_id}'. "
        f"It is actually related to studyId '{actual}'",
    )


IN_CHUNK = 500  # analyses per IN (...) when loading their samples and files


def analysis_samples(session: Session, analysis_id: str) -> list[dict]:
    return samples_of(session, [analysis_id]).get(analysis_id, [])


def samples_of(session: Session, analysis_ids: Sequence[str]) -> dict[str, list[dict]]:
    """Each analysis's samples, each with its specimen and donor (Song's JSON), ordered by
    submitter sample id: one query per IN_CHUNK analyses, not three per sample."""
    out: dict[str, list[dict]] = {}
    for start in range(0, len(analysis_ids), IN_CHUNK):
        rows = session.execute(
            select(AnalysisSample.analysis_id, Sample, Specimen, Donor)
            .join(Sample, Sample.sample_id == AnalysisSample.sample_id)
            .outerjoin(Specimen, Specimen.specimen_id == Sample.specimen_id)
            .outerjoin(Donor, Donor.donor_id == Specimen.donor_id)
            .where(AnalysisSample.analysis_id.in_(analysis_ids[start : start + IN_CHUNK]))
            .order_by(AnalysisSample.analysis_id, Sample.submitter_sample_id)
        )
        for analysis_id, sample, specimen, donor in rows:
            out.setdefault(analysis_id, []).append(
                {
                    **sample_json(sample),
                    "specimen": specimen_json(specimen) if specimen else None,
                    "donor": donor_json(donor) if donor else None,
                }
            )
    return out


def analysis_files(session: Session, analysis_id: str) -> list[File]:
    return files_of(session, [analysis_id]).get(analysis_id, [])


def files_of(session: Session, analysis_ids: Sequence[str]) -> dict[str, list[File]]:
    """Each analysis's files by name: one query per IN_CHUNK analyses."""
    out: dict[str, list[File]] = {}
    for start in range(0, len(analysis_ids), IN_CHUNK):
        for f in session.scalars(
            select(File)
            .where(File.analysis_id.in_(analysis_ids[start : start + IN_CHUNK]))
            .order_by(File.analysis_id, File.file_name)
        ):
            out.setdefault(f.analysis_id, []).append(f)
    return out


def analysis_json(session: Session, row: Analysis) -> dict:
    return analyses_json(session, [row])[0]


def analyses_json(session: Session, rows: Sequence[Analysis]) -> list[dict]:
    """Song's JSON of many analyses, their samples and files loaded together (a page of 100
    costs a few queries, not hundreds)."""
    ids = [r.analysis_id for r in rows]
    samples, files = samples_of(session, ids), files_of(session, ids)
    return [
        {
            **row.payload,
            "analysisId": row.analysis_id,
            "studyId": row.study_id,
            "analysisState": row.state,
            "analysisType": {"name": row.type_name, "version": row.type_version},
            "createdAt": local_time(row.created_at),
            "updatedAt": local_time(row.updated_at),
            "firstPublishedAt": local_time(row.first_published_at),
            "publishedAt": local_time(row.published_at),
            "analysisStateHistory": [
                {**change, "updatedAt": local_time(change.get("updatedAt"))}
                for change in row.state_history or []
            ],
            "samples": samples.get(row.analysis_id, []),
            "files": [file_json(f) for f in files.get(row.analysis_id, [])],
        }
        for row in rows
    ]


def parse_states(text: str | None) -> list[str]:
    states = [s.strip().upper() for s in (text or "PUBLISHED").split(",") if s.strip()]
    bad = [s for s in states if s not in STATES]
    if bad:
        raise bad_request(
            "malformed.parameter",
            f"Unknown analysis state {bad[0]!r}; expected one of {', '.join(STATES)}",
        )
    return states


def list_analyses(
    session: Session, study_id: str, states: list[str], limit: int | None = None, offset: int = 0
) -> tuple[list[Analysis], int]:
    """A study's analyses in these states, oldest first, and how many there are. A page is
    found by its ids first (an index-only walk of ix_analyses_study_state_created, however
    deep the offset), then only its rows are read."""
    get_study(session, study_id)
    where = (Analysis.study_id == study_id, Analysis.state.in_(states))
    total = session.scalar(select(func.count()).select_from(Analysis).where(*where)) or 0
    order = (Analysis.created_at, Analysis.analysis_id)
    if limit is None:
        return list(session.scalars(select(Analysis).where(*where).order_by(*order))), total
    page = select(Analysis.analysis_id).where(*where).order_by(*order).limit(limit).offset(offset)
    ids = list(session.scalars(page))
    found = {
        r.analysis_id: r
        for r in session.scalars(select(Analysis).where(Analysis.analysis_id.in_(ids)))
    }
    return [found[i] for i in ids if i in found], total


def storage_problems(
    session: Session, files: list[File], ignore_undefined_md5: bool
) -> list[tuple[str, str]]:
    """Why publishing would be wrong: (Song errorId, text) per file absent or differing."""
    problems = []
    for f in files:
        obj = session.get(StoredObject, f.object_id)
        name = f"{f.file_name} ({f.object_id})"
        if obj is None:
            problems.append(("missing.storage.objects", f"{name} is missing from storage"))
        elif obj.size != f.file_size:
            problems.append(
                (
                    "mismatching.storage.object.sizes",
                    f"{name} has {obj.size} bytes in storage, metadata says {f.file_size}",
                )
            )
        elif obj.md5 is None and not ignore_undefined_md5:
            problems.append(
                ("mismatching.storage.object.checksums", f"{name} has no MD5 in storage")
            )
        elif obj.md5 is not None and obj.md5 != f.file_md5sum:
            problems.append(
                (
                    "mismatching.storage.object.checksums",
                    f"{name} has MD5 {obj.md5} in storage, metadata says {f.file_md5sum}",
                )
            )
    return problems


def uploads_open(session: Session, files: list[File]) -> list[str]:
    """Why publishing must wait: each file with an upload in progress, which could replace
    its bytes once published (uploads go on only while UNPUBLISHED: objects.py)."""
    names = {f.object_id: f.file_name for f in files}
    rows = session.execute(
        select(Upload.object_id, Upload.upload_id)
        .where(Upload.object_id.in_(list(names)))
        .order_by(Upload.object_id)
    )
    return [
        f"an upload of {names[object_id]} ({object_id}) is in progress (uploadId {upload_id})"
        for object_id, upload_id in rows
    ]


def change_state(
    session: Session,
    study_id: str,
    analysis_id: str,
    action: str,
    ignore_undefined_md5: bool = False,
) -> dict:
    """PUBLISH, UNPUBLISH or SUPPRESS an analysis; publishing checks storage first, and
    waits for no upload (409: complete or cancel it first)."""
    row = get_analysis_row(session, study_id, analysis_id)
    target = {"publish": "PUBLISHED", "unpublish": "UNPUBLISHED", "suppress": "SUPPRESSED"}[action]
    if row.state == "SUPPRESSED" and target != "SUPPRESSED":
        raise bad_request(
            "suppressed.state.transition",
            f"Analysis '{analysis_id}' is SUPPRESSED and cannot be {target}",
        )
    if target == "PUBLISHED":
        files = analysis_files(session, analysis_id)
        uploading = uploads_open(session, files)
        if uploading:
            raise conflict(
                "upload.in.progress",
                f"Cannot publish analysis '{analysis_id}': "
                + "; ".join(uploading)
                + "; complete or cancel it first",
            )
        problems = storage_problems(session, files, ignore_undefined_md5)
        if problems:
            raise conflict(
                problems[0][0],
                f"Cannot publish analysis '{analysis_id}': "
                + "; ".join(text for _, text in problems),
            )
    now = utcnow()
    if row.state != target:
        row.state_history = [
            *(row.state_history or []),
            {"initialState": row.state, "updatedState": target, "updatedAt": iso(now)},
        ]
        row.state = target
        row.updated_at = now
        if target == "PUBLISHED":
            row.published_at = now
            row.first_published_at = row.first_published_at or now
        session.flush()
        repository.refresh_analysis(session, analysis_id)
    events.record(session, row, action.upper())  # as SONG: even when the state was already so
    if target == "SUPPRESSED":
        return message(f"AnalysisId {analysis_id} was suppressed")
    return message(f"AnalysisId {analysis_id} successfully {target.lower()}")


def message(text: str) -> dict:
    """Song's GenericMessage, its answer to state changes and study creation."""
    return {"message": text}
