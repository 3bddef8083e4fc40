"""Curation: changing what was submitted, by Song's rules (PUT and PATCH of an analysis;
deleting files, donors, specimens and samples).

Each change of an analysis goes through `changed`, the one place where it is recorded for
its event (issue 22: the analysis events' outbox, written in the same transaction).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from pyscore.server import repository
from pyscore.server.db import utcnow
from pyscore.server.errors import ApiError, bad_request
from pyscore.server.metadata.analyses import get_analysis_row
from pyscore.server.metadata.ids import BASE_KEYS
from pyscore.server.metadata.schemas import get_analysis_type, render, violations
from pyscore.server.metadata.studies import get_study
from pyscore.server.metadata.submission import StrictValidator
from pyscore.server.tables import Analysis, AnalysisType

# What an analysis event names each curated change (Song sends PUBLISH for an update; the
# outbox decides what it sends).
UPDATE = "UPDATE"


def changed(session: Session, analysis: Analysis, action: str) -> None:
    """A curated change of `analysis` (flushed, in the caller's transaction): its event is
    recorded here. Until the events outbox is wired in, only the File Repository's rows
    follow."""
    repository.refresh_analysis(session, analysis.analysis_id)


def related_analysis(session: Session, study_id: str, analysis_id: str) -> Analysis:
    """The analysis, as Song finds it for a change: 404 study.id.does.not.exist, 404
    analysis.id.not.found, or 400 entity.not.related.to.study when another study has it."""
    get_study(session, study_id)
    row = session.get(Analysis, analysis_id)
    if row is not None and row.study_id != study_id:
        raise not_related("analysisId", analysis_id, study_id, row.study_id)
    return get_analysis_row(session, study_id, analysis_id)


def not_related(kind: str, entity_id: str, study_id: str, actual: str) -> ApiError:
    return bad_request(
        "entity.not.related.to.study",
        f"The {kind} '{entity_id}' is not related to the input studyId '{study_id}'. "
        f"It is actually related to studyId '{actual}'",
    )


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
    changed(session, row, UPDATE)  # EVENT: PUT or PATCH of an analysis


def update_analysis(session: Session, study_id: str, analysis_id: str, request: Any) -> None:
    """Song's PUT /studies/{s}/analysis/{id}: new dynamic data for an analysis, checked
    against the type (and version) the request names, which the analysis then has. Its
    state, samples and files stay; a published analysis stays published."""
    row = related_analysis(session, study_id, analysis_id)
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
    row = related_analysis(session, study_id, analysis_id)
    atype = get_analysis_type(session, row.type_name, row.type_version)
    current = {**row.payload, "analysisType": {"name": atype.name, "version": atype.version}}
    merged = merge_patch(current, patch)
    if not isinstance(merged, dict):
        raise bad_request("schema.violation", "#/: the patched analysis must be a JSON object")
    _replace(session, row, atype, merged)
