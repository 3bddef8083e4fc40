"""Curation: changing what was submitted, by Song's rules (PUT and PATCH of an analysis;
deleting files, donors, specimens and samples).

Each change of an analysis goes through `changed`, the one place where its event is recorded
(events/: the outbox, written in the change's own transaction).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from pyscore.server import events, repository, tables
from pyscore.server.db import utcnow
from pyscore.server.errors import ApiError, bad_request, conflict, not_found
from pyscore.server.metadata.analyses import (
    analysis_files,
    get_analysis_row,
    not_related,
    uploads_open,
)
from pyscore.server.metadata.ids import BASE_KEYS
from pyscore.server.metadata.schemas import get_analysis_type, render, violations
from pyscore.server.metadata.song_json import donor_json, file_json, sample_json, specimen_json
from pyscore.server.metadata.studies import get_study
from pyscore.server.metadata.submission import StrictValidator
from pyscore.server.tables import Analysis, AnalysisSample, AnalysisType, File

# What an analysis event names a curated change: SONG sends PUBLISH, with the state it has.
UPDATE = events.UPDATE


def changed(session: Session, analysis: Analysis, action: str) -> None:
    """A curated change of `analysis` (flushed, in the caller's transaction): the File
    Repository's rows follow it, and its event is recorded (sent if the transaction commits)."""
    repository.refresh_analysis(session, analysis.analysis_id)
    events.record(session, analysis, action)


def _type_of(session: Session, request: dict) -> AnalysisType:
    """The analysis type an update names (its latest version without one)."""
    ref = request.get("analysisType")
    if ref is None:
        raise bad_request(
            "malformed.parameter",
            "The updateAnalysisRequest does not contain the field 'analysisType'",
        )
    name = ref.get("name") if isinstance(ref, dict) else None
    version = ref.get("version") if isinstance(ref, dict) else None
    if not isinstance(name, str) or not name.strip():
        raise bad_request("malformed.parameter", "The analysisType name cannot be null")
    if version is not None and (
        not isinstance(version, int) or isinstance(version, bool) or not 1 <= version < 2**31
    ):
        raise bad_request(
            "malformed.parameter", f"The version '{version}' must be an integer greater than 0"
        )
    return get_analysis_type(session, name, version)


def _replace(session: Session, row: Analysis, atype: AnalysisType, request: Any) -> None:
    """Check `request` (analysisType and the new data) against the type's update schema, then
    make it the analysis's data: a 400 schema.violation changes nothing."""
    violations(render(atype.schema, "analysis_update"), request, StrictValidator)
    row.type_name, row.type_version = atype.name, atype.version
    row.payload = {k: v for k, v in request.items() if k not in BASE_KEYS}
    row.updated_at = utcnow()
    session.flush()
    changed(session, row, UPDATE)  # its event: an update


def update_analysis(session: Session, study_id: str, analysis_id: str, request: Any) -> None:
    """Song's PUT /studies/{s}/analysis/{id}: new dynamic data for an analysis, checked
    against the type (and version) the request names, which the analysis then has. Its
    state, samples and files stay; a published analysis stays published."""
    row = get_analysis_row(session, study_id, analysis_id)
    if not isinstance(request, dict):
        raise bad_request("malformed.parameter", "The update must be a JSON object")
    _replace(session, row, _type_of(session, request), request)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch: objects merge key by key, null removes, the rest replaces."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def patch_analysis(session: Session, study_id: str, analysis_id: str, patch: Any) -> None:
    """Song's PATCH /studies/{s}/analysis/{id}: a merge patch of the analysis's data, the
    result checked against the analysis's own type (its version does not change)."""
    row = get_analysis_row(session, study_id, analysis_id)
    atype = get_analysis_type(session, row.type_name, row.type_version)
    current = {**row.payload, "analysisType": {"name": atype.name, "version": atype.version}}
    merged = merge_patch(current, patch)
    if not isinstance(merged, dict):
        raise bad_request("schema.violation", "#/: the patched analysis must be a JSON object")
    _replace(session, row, atype, merged)


# -- donors, specimens, samples and files --------------------------------------------------
@dataclass(frozen=True)
class Kind:
    """A kind of entity of a study, as Song names it in its answers."""

    name: str  # donor, specimen, sample, file
    table: Any
    label: str  # its id's name: donorId...
    missing: str  # Song's errorId when there is none of that id


DONOR = Kind("donor", tables.Donor, "donorId", "donor.does.not.exist")
SPECIMEN = Kind("specimen", tables.Specimen, "specimenId", "specimen.does.not.exist")
SAMPLE = Kind("sample", tables.Sample, "sampleId", "sample.does.not.exist")
FILE = Kind("file", File, "objectId", "file.not.found")
AS_JSON: dict[Kind, Callable[[Any], dict]] = {
    DONOR: donor_json,
    SPECIMEN: specimen_json,
    SAMPLE: sample_json,
    FILE: file_json,
}


def related(session: Session, kind: Kind, study_id: str, entity_id: str) -> Any:
    """The entity of `study_id`, as Song finds it: 404 study.id.does.not.exist, 404 (its
    kind's errorId) when there is none, 400 entity.not.related.to.study when another study
    has it."""
    row = session.get(kind.table, entity_id)
    if row is None or row.study_id != study_id:
        get_study(session, study_id)
        if row is None:
            raise not_found(
                kind.missing,
                f"The {kind.name} with {kind.label} '{entity_id}' does not exist",
            )
        raise not_related(kind.label, entity_id, study_id, row.study_id)
    return row


def read_entity(session: Session, kind: Kind, study_id: str, entity_id: str) -> dict:
    """Song's GET of a donor, specimen, sample or file of a study."""
    return AS_JSON[kind](related(session, kind, study_id, entity_id))


def cannot_delete(kind: Kind, why: str) -> ApiError:
    """Song's errorId for a record its repository cannot delete (`<kind>.repository.delete.
    record`, 422)."""
    return ApiError(422, f"{kind.name}.repository.delete.record", why)


def delete_entities(session: Session, kind: Kind, study_id: str, ids: list[str]) -> str:
    """Song's DELETE of donors (with their specimens and samples), specimens (with their
    samples) or samples, all or none: none that an analysis uses (Song's database refuses
    them by the sample set's foreign key)."""
    rows = [related(session, kind, study_id, i) for i in dict.fromkeys(ids)]
    keys = [row_id(kind, r) for r in rows]
    specimen, sample = tables.Specimen, tables.Sample
    specimens = keys if kind is SPECIMEN else []
    if kind is DONOR:
        specimens = list(
            session.scalars(select(specimen.specimen_id).where(specimen.donor_id.in_(keys)))
        )
    samples = keys
    if kind is not SAMPLE:
        under = select(sample.sample_id).where(sample.specimen_id.in_(specimens))
        samples = list(session.scalars(under))
    users = session.execute(
        select(Analysis.analysis_id, Analysis.state)
        .join(AnalysisSample, AnalysisSample.analysis_id == Analysis.analysis_id)
        .where(AnalysisSample.sample_id.in_(samples))
        .distinct()
        .order_by(Analysis.analysis_id)
    ).all()
    if users:
        raise cannot_delete(
            kind,
            f"Cannot delete {kind.label} {', '.join(keys)}: used by "
            + ", ".join(f"analysis '{a}' ({state})" for a, state in users[:10])
            + (f" and {len(users) - 10} more" if len(users) > 10 else ""),
        )
    session.execute(delete(sample).where(sample.sample_id.in_(samples)))
    session.execute(delete(specimen).where(specimen.specimen_id.in_(specimens)))
    if kind is DONOR:
        session.execute(delete(tables.Donor).where(tables.Donor.donor_id.in_(keys)))
    session.flush()
    return "OK"


def row_id(kind: Kind, row: Any) -> str:
    return str(getattr(row, f"{kind.name}_id" if kind is not FILE else "object_id"))


def delete_files(session: Session, study_id: str, ids: list[str]) -> str:
    """Song's DELETE /studies/{s}/files/{ids}, all or none; never a file of a PUBLISHED
    analysis (unpublish it first), nor an analysis's last file (Song reads an analysis
    without files as corrupted), nor one being uploaded. Its analysis changes: an event."""
    files = [related(session, FILE, study_id, i) for i in dict.fromkeys(ids)]
    by_analysis: dict[str, list[File]] = {}
    for f in files:
        by_analysis.setdefault(f.analysis_id, []).append(f)
    for analysis_id, going in by_analysis.items():
        row = session.get(Analysis, analysis_id)
        names = ", ".join(f.object_id for f in going)
        if row is not None and row.state == "PUBLISHED":
            raise cannot_delete(
                FILE,
                f"Cannot delete {names}: analysis '{analysis_id}' is PUBLISHED; unpublish it first",
            )
        if len(analysis_files(session, analysis_id)) <= len(going):
            raise cannot_delete(
                FILE, f"Cannot delete {names}: analysis '{analysis_id}' would have no file left"
            )
        uploading = uploads_open(session, going)
        if uploading:
            raise conflict("upload.in.progress", f"Cannot delete {names}: " + "; ".join(uploading))
    gone = [f.object_id for f in files]
    session.execute(update(File).where(File.index_for.in_(gone)).values(index_for=None))
    session.execute(delete(File).where(File.object_id.in_(gone)))
    session.flush()
    for analysis_id in by_analysis:
        row = session.get(Analysis, analysis_id)
        if row is not None:
            row.updated_at = utcnow()
            session.flush()
            changed(session, row, UPDATE)  # its event: an update
    return "OK"
