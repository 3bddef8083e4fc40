"""Song's export: analyses as the payloads that would submit them again (`song-client
export`), grouped by study."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pyscore.server.errors import not_found
from pyscore.server.metadata.analyses import files_of, samples_of
from pyscore.server.metadata.song_json import (
    DONOR_FIELDS,
    FILE_FIELDS,
    SAMPLE_FIELDS,
    SPECIMEN_FIELDS,
    file_json,
)
from pyscore.server.metadata.studies import get_study
from pyscore.server.tables import Analysis


def _non_empty(entity: dict, fields: tuple[str, ...]) -> dict:
    """The fields of an entity Song's export writes: known ones and info, none empty (its
    NON_EMPTY mix-in), no ids."""
    return {
        k: entity[k]
        for k in (*fields, "info")
        if k in entity and entity[k] not in (None, "", {}, [])
    }


def payloads(session: Session, rows: list[Analysis]) -> list[dict]:
    """Analyses as Song's export writes them: analysisType, studyId, samples (with their
    specimen and donor), files, then the analysis's own data; no ids, states or times.
    Samples and files are loaded for all of them at once."""
    ids = [r.analysis_id for r in rows]
    samples, files = samples_of(session, ids), files_of(session, ids)
    return [
        {
            "analysisType": {"name": row.type_name, "version": row.type_version},
            "studyId": row.study_id,
            "samples": [
                {
                    **_non_empty(s, SAMPLE_FIELDS),
                    "specimen": _non_empty(s["specimen"] or {}, SPECIMEN_FIELDS),
                    "donor": _non_empty(s["donor"] or {}, DONOR_FIELDS),
                }
                for s in samples.get(row.analysis_id, [])
            ],
            "files": [
                _non_empty(file_json(f), FILE_FIELDS) for f in files.get(row.analysis_id, [])
            ],
            **row.payload,
        }
        for row in rows
    ]


def export_study(session: Session, study_id: str) -> list[dict]:
    """Song's ExportStudy: every analysis of the study, whatever its state."""
    get_study(session, study_id)
    rows = session.scalars(
        select(Analysis)
        .where(Analysis.study_id == study_id)
        .order_by(Analysis.created_at, Analysis.analysis_id)
    )
    return [{"studyId": study_id, "payloads": payloads(session, list(rows))}]


def export_analyses(session: Session, analysis_ids: list[str]) -> list[dict]:
    """Song's ExportAnalysis: these analyses (404 analysis.id.not.found for one that is
    not), grouped by study in the order they were asked."""
    groups: dict[str, list[Any]] = {}
    for analysis_id in dict.fromkeys(analysis_ids):
        row = session.get(Analysis, analysis_id)
        if row is None:
            raise not_found(
                "analysis.id.not.found", f"The analysisId '{analysis_id}' was not found"
            )
        groups.setdefault(row.study_id, []).append(row)
    return [
        {"studyId": study, "payloads": payloads(session, found)} for study, found in groups.items()
    ]
