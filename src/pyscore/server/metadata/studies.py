"""Studies: create, read, list, and a study with everything in it."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from pyscore.server.errors import bad_request, conflict, not_found
from pyscore.server.metadata.song_json import donor_json, sample_json, specimen_json
from pyscore.server.tables import (
    Donor,
    Sample,
    Specimen,
    Study,
)


def study_json(study: Study) -> dict:
    return {
        "studyId": study.study_id,
        "name": study.name,
        "organization": study.organization,
        "description": study.description,
        "info": study.info or {},
    }


def get_study(session: Session, study_id: str) -> Study:
    study = session.get(Study, study_id)
    if study is None:
        raise not_found("study.id.does.not.exist", f"The studyId '{study_id}' does not exist")
    return study


def create_study(session: Session, study_id: str, body: dict) -> Study:
    if body.get("studyId") not in (None, study_id):
        raise conflict(
            "study.id.mismatch",
            f"The studyId in the body ({body.get('studyId')}) does not match the URL ({study_id})",
        )
    if not study_id or len(study_id) > 64:
        raise bad_request("malformed.parameter", "studyId must be 1-64 characters")
    if session.get(Study, study_id) is not None:
        raise conflict("study.already.exists", f"The studyId '{study_id}' already exists")
    study = Study(
        study_id=study_id,
        name=body.get("name"),
        organization=body.get("organization"),
        description=body.get("description"),
        info=body.get("info") or {},
    )
    session.add(study)
    session.flush()
    return study


def study_ids(session: Session) -> list[str]:
    return list(session.scalars(select(Study.study_id).order_by(Study.study_id)))


def study_with_all(session: Session, study_id: str) -> dict:
    """Song's /studies/{id}/all (StudyWithDonors): the study's fields, and its donors with
    their specimens and samples nested."""
    study = get_study(session, study_id)
    specimens: dict[str, list] = {}
    samples: dict[str, list] = {}
    for sample in session.scalars(select(Sample).where(Sample.study_id == study_id)):
        samples.setdefault(sample.specimen_id, []).append(sample_json(sample))
    for spec in session.scalars(select(Specimen).where(Specimen.study_id == study_id)):
        specimens.setdefault(spec.donor_id, []).append(
            {**specimen_json(spec), "samples": samples.get(spec.specimen_id, [])}
        )
    donors = [
        {**donor_json(d), "specimens": specimens.get(d.donor_id, [])}
        for d in session.scalars(select(Donor).where(Donor.study_id == study_id))
    ]
    return {**study_json(study), "donors": donors}
