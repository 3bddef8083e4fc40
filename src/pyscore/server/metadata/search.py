"""Search of a study's analyses by ids and by info fields."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pyscore.server.metadata.analyses import analysis_json
from pyscore.server.metadata.studies import get_study
from pyscore.server.tables import (
    Analysis,
    AnalysisSample,
    Donor,
    File,
    Sample,
    Specimen,
)


def search_by_id(session: Session, study_id: str, params: dict[str, str]) -> list[dict]:
    """Song's /analysis/search/id: analyses touching a donor, specimen, sample or file."""
    get_study(session, study_id)
    query = select(Analysis).where(Analysis.study_id == study_id)
    sample_filters = {
        "donorId": Donor.donor_id,
        "submitterDonorId": Donor.submitter_donor_id,
        "specimenId": Specimen.specimen_id,
        "submitterSpecimenId": Specimen.submitter_specimen_id,
        "sampleId": Sample.sample_id,
        "submitterSampleId": Sample.submitter_sample_id,
    }
    wanted = {k: v for k, v in params.items() if k in sample_filters and v}
    if wanted:
        sub = (
            select(AnalysisSample.analysis_id)
            .join(Sample, Sample.sample_id == AnalysisSample.sample_id)
            .join(Specimen, Specimen.specimen_id == Sample.specimen_id)
            .join(Donor, Donor.donor_id == Specimen.donor_id)
        )
        for key, value in wanted.items():
            sub = sub.where(sample_filters[key] == value)
        query = query.where(Analysis.analysis_id.in_(sub))
    object_id = params.get("objectId") or params.get("fileId")
    if object_id:
        query = query.where(
            Analysis.analysis_id.in_(select(File.analysis_id).where(File.object_id == object_id))
        )
    if params.get("analysisId"):
        query = query.where(Analysis.analysis_id == params["analysisId"])
    rows = session.scalars(query.order_by(Analysis.created_at))
    return [analysis_json(session, r) for r in rows]


def _matches(document: Any, path: list[str], value: str) -> bool:
    for key in path:
        if not isinstance(document, dict) or key not in document:
            return False
        document = document[key]
    if isinstance(document, list):
        return any(str(v) == value for v in document)
    return str(document) == value


def search_by_info(
    session: Session, study_id: str, include_info: bool, terms: dict[str, str]
) -> list[dict]:
    """Song's /analysis/search/info: analyses whose info (or payload) fields equal the terms."""
    get_study(session, study_id)
    out = []
    for row in session.scalars(
        select(Analysis).where(Analysis.study_id == study_id).order_by(Analysis.created_at)
    ):
        doc = row.payload or {}
        if all(
            _matches(doc.get("info", {}), k.split("."), v) or _matches(doc, k.split("."), v)
            for k, v in terms.items()
        ):
            found = {"analysisId": row.analysis_id}
            if include_info:
                found["info"] = doc.get("info", {})
            out.append(found)
    return out
