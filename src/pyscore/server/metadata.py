"""Song's metadata model as plain functions: studies, analysis types, submission, state changes.

Routers in song.py only parse HTTP and call these. Outputs are Song's JSON shapes (camelCase),
because the overture-song SDK and score-client bind to them by name.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import datetime
from importlib import resources
from typing import Any

from jsonschema import Draft7Validator, ValidationError, validators
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pyscore.server import repository
from pyscore.server.db import as_utc, utcnow
from pyscore.server.errors import bad_request, conflict, not_found
from pyscore.server.tables import (
    Analysis,
    AnalysisSample,
    AnalysisType,
    Donor,
    File,
    Sample,
    Specimen,
    StoredObject,
    Study,
)
from pyscore.wire.files import find_index, is_index

STATES = ("PUBLISHED", "UNPUBLISHED", "SUPPRESSED")
ID_NAMESPACE = uuid.UUID("6f1e1d3e-2b7a-4c1e-9a43-5c0f0e5d9b11")
BASE_KEYS = {"studyId", "analysisId", "analysisType", "samples", "files", "analysisState"}


def iso(value: datetime | None) -> str | None:
    value = as_utc(value)
    return value.isoformat().replace("+00:00", "Z") if value else None


def derived_id(*parts: str) -> str:
    """Stable ids for things identified by submitter ids, so resubmission reuses them."""
    return str(uuid.uuid5(ID_NAMESPACE, "/".join(parts)))


def entity_id(prefix: str, *parts: str) -> str:
    """Song-style donor/specimen/sample ids (DO…, SP…, SA…), stable per study and submitter id."""
    return prefix + uuid.uuid5(ID_NAMESPACE, "/".join(parts)).hex[:12].upper()


# -- studies ------------------------------------------------------------------------------
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
    """Song's /studies/{id}/all: the study with its donors, specimens and samples nested."""
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
    return {"studyId": study.study_id, "study": study_json(study), "donors": donors}


# -- analysis types -----------------------------------------------------------------------
def _bundled(name: str) -> dict:
    return json.loads(
        resources.files("pyscore.server").joinpath(f"schemas/{name}.json").read_text()
    )


BUNDLED_TYPES = ("sequencingRead", "variantCall", "sequencing_alignment", "variant_calling")


def base_schema() -> dict:
    return _bundled("analysis_base")


def seed_analysis_types(session: Session) -> None:
    """Register the bundled analysis types (version 1) unless present."""
    for name in BUNDLED_TYPES:
        if session.get(AnalysisType, (name, 1)) is None:
            register_analysis_type(session, name, _bundled(name))


def render(schema: dict) -> dict:
    """Song's rendering: the type's properties and required list merged into the base."""
    rendered = base_schema()
    rendered["properties"] = {**rendered["properties"], **schema.get("properties", {})}
    base_required = rendered["required"]
    rendered["required"] = [
        *base_required,
        *(r for r in schema.get("required", []) if r not in base_required),
    ]
    return rendered


RESERVED = {
    "studyId",
    "analysisState",
    "analysisType",
    "analysisTypeId",
    "samples",
    "files",
    "analysisId",
}


def register_analysis_type(
    session: Session, name: str, schema: dict, options: dict | None = None
) -> AnalysisType:
    if not name or not re.fullmatch(r"[a-zA-Z0-9._-]+", name):
        raise bad_request("malformed.parameter", f"Invalid analysis type name {name!r}")
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        raise bad_request(
            "schema.violation",
            "An analysis type schema must be a JSON object schema with type 'object'",
        )
    clash = RESERVED & set(schema.get("properties", {}))
    if clash:
        raise bad_request(
            "schema.violation", f"An analysis type may not redefine the base fields {sorted(clash)}"
        )
    schema = dict(schema)
    file_types = schema.pop("fileTypes", None) or schema.pop("file_types", None)
    options = dict(options or {})
    if file_types:
        options.setdefault("fileTypes", file_types)
    try:
        Draft7Validator.check_schema(render(schema))
    except Exception as exc:
        raise bad_request("schema.violation", f"Invalid analysis type schema: {exc}") from None
    latest = (
        session.scalar(select(func.max(AnalysisType.version)).where(AnalysisType.name == name)) or 0
    )
    row = AnalysisType(
        name=name, version=latest + 1, schema=schema, options=options, created_at=utcnow()
    )
    session.add(row)
    session.flush()
    return row


def get_analysis_type(session: Session, name: str, version: int | None = None) -> AnalysisType:
    query = select(AnalysisType).where(AnalysisType.name == name)
    if version is not None:
        query = query.where(AnalysisType.version == version)
    row = session.scalar(query.order_by(AnalysisType.version.desc()).limit(1))
    if row is None:
        what = f"{name}" + (f" version {version}" if version is not None else "")
        raise not_found("analysis.type.not.found", f"The analysis type '{what}' does not exist")
    return row


def analysis_type_json(
    row: AnalysisType, with_schema: bool = True, unrendered: bool = False
) -> dict:
    options = {
        "fileTypes": row.options.get("fileTypes", []),
        "externalValidations": row.options.get("externalValidations", []),
    }
    body: dict[str, Any] = {
        "name": row.name,
        "version": row.version,
        "createdAt": iso(row.created_at),
        "options": options,
        **options,
    }
    if with_schema:
        body["schema"] = row.schema if unrendered else render(row.schema)
    return body


def list_analysis_types(
    session: Session,
    names: list[str] | None = None,
    hide_schema: bool = True,
    latest_only: bool = True,
) -> list[dict]:
    rows = session.scalars(
        select(AnalysisType).order_by(AnalysisType.name, AnalysisType.version)
    ).all()
    if names:
        rows = [r for r in rows if r.name in names]
    if latest_only:
        newest: dict[str, AnalysisType] = {}
        for r in rows:
            newest[r.name] = r
        rows = list(newest.values())
    return [analysis_type_json(r, with_schema=not hide_schema) for r in rows]


# -- submission ---------------------------------------------------------------------------
def _whole_pattern(validator: Any, pattern: str, instance: Any, schema: dict) -> Iterator[Any]:
    """JSON Schema's `pattern`, with a final `$` meaning the end of the string: Python's `$`
    also matches before a trailing newline, which let names such as "x.bam\n" through."""
    if not validator.is_type(instance, "string"):
        return
    strict = (
        pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith("\\$") else pattern
    )
    if not re.search(strict, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


StrictValidator = validators.extend(Draft7Validator, {"pattern": _whole_pattern})
INT64 = 2**63 - 1


def check_file_fields(f: dict, where: str) -> None:
    """What the base schema leaves open and the database or a filesystem would not take."""
    name = f.get("fileName")
    if isinstance(name, str) and (name in (".", "..") or len(name) > 255):
        raise bad_request("schema.violation", f"{where}/fileName: {name!r} is not a file name")
    size = f.get("fileSize")
    if "fileSize" in f and (
        not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= INT64
    ):
        raise bad_request(
            "schema.violation", f"{where}/fileSize: must be an integer within 0..{INT64}"
        )


def validate(payload: Any, atype: AnalysisType) -> None:
    if not isinstance(payload, dict):
        raise bad_request("schema.violation", "The analysis payload must be a JSON object")
    validator = StrictValidator(render(atype.schema))
    problems = sorted(validator.iter_errors(payload), key=lambda e: list(e.absolute_path))
    if problems:
        lines = [
            f"#/{'/'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in problems[:10]
        ]
        raise bad_request("schema.violation", "; ".join(lines))
    for i, f in enumerate(payload.get("files", [])):
        check_file_fields(f, f"#/files/{i}")
    allowed = atype.options.get("fileTypes") or []
    for f in payload.get("files", []):
        if allowed and f.get("fileType") not in allowed:
            raise bad_request(
                "schema.violation",
                f"#/files: fileType {f.get('fileType')!r} of {f['fileName']} is "
                f"not one of {allowed}",
            )
    names = [f["fileName"] for f in payload.get("files", [])]
    if len(names) != len(set(names)):
        raise bad_request(
            "schema.violation", "#/files: file names within an analysis must be unique"
        )


def _type_ref(payload: dict) -> tuple[str, int | None]:
    ref = payload.get("analysisType")
    if not isinstance(ref, dict) or not isinstance(ref.get("name"), str):
        raise bad_request("schema.violation", "#/analysisType: must be {name, version?}")
    version = ref.get("version")
    if version is not None and (
        not isinstance(version, int) or isinstance(version, bool) or not 1 <= version < 2**31
    ):
        raise bad_request(
            "schema.violation", "#/analysisType/version: must be an integer within 1..2^31-1"
        )
    return ref["name"], version


def find_duplicate(session: Session, study_id: str, files: list[dict]) -> str | None:
    """An analysis of the study (not suppressed) declaring exactly these files, if any."""
    wanted = sorted((f["fileName"], f["fileMd5sum"].lower()) for f in files)
    if not wanted:
        return None
    candidates = (
        session.execute(
            select(File.analysis_id)
            .join(Analysis, Analysis.analysis_id == File.analysis_id)
            .where(
                File.study_id == study_id,
                File.file_md5sum == wanted[0][1],
                File.file_name == wanted[0][0],
                Analysis.state != "SUPPRESSED",
            )
        )
        .scalars()
        .all()
    )
    for analysis_id in candidates:
        have = sorted(
            (f.file_name, f.file_md5sum)
            for f in session.scalars(select(File).where(File.analysis_id == analysis_id))
        )
        if have == wanted:
            return analysis_id
    return None


def _upsert_sample(session: Session, study_id: str, entry: dict) -> str:
    donor_in, specimen_in = entry["donor"], entry["specimen"]
    donor_id = entity_id("DO", study_id, "donor", donor_in["submitterDonorId"])
    if session.get(Donor, donor_id) is None:
        session.add(
            Donor(
                donor_id=donor_id,
                study_id=study_id,
                submitter_donor_id=donor_in["submitterDonorId"],
                gender=donor_in.get("gender"),
                info=donor_in.get("info") or {},
            )
        )
    specimen_id = entity_id("SP", study_id, "specimen", specimen_in["submitterSpecimenId"])
    if session.get(Specimen, specimen_id) is None:
        session.add(
            Specimen(
                specimen_id=specimen_id,
                donor_id=donor_id,
                study_id=study_id,
                submitter_specimen_id=specimen_in["submitterSpecimenId"],
                fields={
                    k: v
                    for k, v in specimen_in.items()
                    if k not in ("submitterSpecimenId", "donor", "samples")
                },
            )
        )
    sample_id = entity_id("SA", study_id, "sample", entry["submitterSampleId"])
    if session.get(Sample, sample_id) is None:
        session.add(
            Sample(
                sample_id=sample_id,
                specimen_id=specimen_id,
                study_id=study_id,
                submitter_sample_id=entry["submitterSampleId"],
                fields={
                    k: v
                    for k, v in entry.items()
                    if k not in ("submitterSampleId", "donor", "specimen")
                },
            )
        )
    session.flush()
    return sample_id


def link_indexes(files: list[File]) -> None:
    """Point each index file at the data file it indexes, by name within the analysis."""
    by_name = {f.file_name.lower(): f for f in files}
    for data in files:
        if not is_index(data.file_name):
            index = find_index(data.file_name, by_name)
            if index is not None and index is not data:
                index.index_for = data.object_id


def submit(session: Session, study_id: str, payload: Any, allow_duplicates: bool = False) -> str:
    get_study(session, study_id)
    if not isinstance(payload, dict):
        raise bad_request("schema.violation", "The analysis payload must be a JSON object")
    if payload.get("studyId") not in (None, study_id):
        raise conflict(
            "study.id.mismatch",
            f"The payload studyId '{payload.get('studyId')}' "
            f"does not match the URL studyId '{study_id}'",
        )
    name, version = _type_ref(payload)
    atype = get_analysis_type(session, name, version)
    validate(payload, atype)
    if not allow_duplicates:
        existing = find_duplicate(session, study_id, payload["files"])
        if existing:
            raise conflict(
                "duplicate.analysis.attempt",
                f"Found an existing analysis with analysisId '{existing}' in study "
                f"'{study_id}' with the same files; use allowDuplicates=true to "
                "submit anyway",
            )
    analysis_id = str(uuid.uuid4())
    now = utcnow()
    session.add(
        Analysis(
            analysis_id=analysis_id,
            study_id=study_id,
            type_name=atype.name,
            type_version=atype.version,
            state="UNPUBLISHED",
            payload={k: v for k, v in payload.items() if k not in BASE_KEYS},
            state_history=[],
            created_at=now,
            updated_at=now,
        )
    )
    session.flush()
    for entry in payload["samples"]:
        sample_id = _upsert_sample(session, study_id, entry)
        if session.get(AnalysisSample, (analysis_id, sample_id)) is None:
            session.add(AnalysisSample(analysis_id=analysis_id, sample_id=sample_id))
    rows = [
        File(
            object_id=derived_id(analysis_id, f["fileName"]),
            analysis_id=analysis_id,
            study_id=study_id,
            file_name=f["fileName"],
            file_size=f["fileSize"],
            file_md5sum=f["fileMd5sum"].lower(),
            file_type=f.get("fileType"),
            file_access=f["fileAccess"],
            data_type=f.get("dataType"),
            info=f.get("info") or {},
        )
        for f in payload["files"]
    ]
    link_indexes(rows)
    session.add_all(rows)
    session.flush()
    return analysis_id


# -- analyses -----------------------------------------------------------------------------
def get_analysis_row(session: Session, study_id: str, analysis_id: str) -> Analysis:
    get_study(session, study_id)
    row = session.get(Analysis, analysis_id)
    if row is None or row.study_id != study_id:
        raise not_found(
            "analysis.id.not.found",
            f"The analysisId '{analysis_id}' was not found in study '{study_id}'",
        )
    return row


def file_json(f: File) -> dict:
    return {
        "objectId": f.object_id,
        "studyId": f.study_id,
        "analysisId": f.analysis_id,
        "fileName": f.file_name,
        "fileSize": f.file_size,
        "fileType": f.file_type,
        "fileMd5sum": f.file_md5sum,
        "fileAccess": f.file_access,
        "dataType": f.data_type,
        "info": f.info or {},
    }


def donor_json(d: Donor) -> dict:
    return {
        "donorId": d.donor_id,
        "studyId": d.study_id,
        "submitterDonorId": d.submitter_donor_id,
        "gender": d.gender,
        "info": d.info or {},
    }


def specimen_json(s: Specimen) -> dict:
    return {
        "specimenId": s.specimen_id,
        "donorId": s.donor_id,
        "submitterSpecimenId": s.submitter_specimen_id,
        **(s.fields or {}),
    }


def sample_json(s: Sample) -> dict:
    return {
        "sampleId": s.sample_id,
        "specimenId": s.specimen_id,
        "submitterSampleId": s.submitter_sample_id,
        **(s.fields or {}),
    }


def analysis_samples(session: Session, analysis_id: str) -> list[dict]:
    out = []
    samples = session.scalars(
        select(Sample)
        .join(AnalysisSample, AnalysisSample.sample_id == Sample.sample_id)
        .where(AnalysisSample.analysis_id == analysis_id)
        .order_by(Sample.submitter_sample_id)
    )
    for sample in samples:
        specimen = session.get(Specimen, sample.specimen_id)
        donor = session.get(Donor, specimen.donor_id) if specimen else None
        out.append(
            {
                **sample_json(sample),
                "specimen": specimen_json(specimen) if specimen else None,
                "donor": donor_json(donor) if donor else None,
            }
        )
    return out


def analysis_files(session: Session, analysis_id: str) -> list[File]:
    return list(
        session.scalars(
            select(File).where(File.analysis_id == analysis_id).order_by(File.file_name)
        )
    )


def analysis_json(session: Session, row: Analysis) -> dict:
    return {
        **row.payload,
        "analysisId": row.analysis_id,
        "studyId": row.study_id,
        "analysisState": row.state,
        "analysisType": {"name": row.type_name, "version": row.type_version},
        "createdAt": iso(row.created_at),
        "updatedAt": iso(row.updated_at),
        "firstPublishedAt": iso(row.first_published_at),
        "publishedAt": iso(row.published_at),
        "analysisStateHistory": row.state_history or [],
        "samples": analysis_samples(session, row.analysis_id),
        "files": [file_json(f) for f in analysis_files(session, row.analysis_id)],
    }


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
    get_study(session, study_id)
    where = (Analysis.study_id == study_id, Analysis.state.in_(states))
    total = session.scalar(select(func.count()).select_from(Analysis).where(*where)) or 0
    query = select(Analysis).where(*where).order_by(Analysis.created_at, Analysis.analysis_id)
    if limit is not None:
        query = query.limit(limit).offset(offset)
    return list(session.scalars(query)), total


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


def change_state(
    session: Session,
    study_id: str,
    analysis_id: str,
    action: str,
    ignore_undefined_md5: bool = False,
) -> str:
    """PUBLISH, UNPUBLISH or SUPPRESS an analysis; publishing checks storage first."""
    row = get_analysis_row(session, study_id, analysis_id)
    target = {"publish": "PUBLISHED", "unpublish": "UNPUBLISHED", "suppress": "SUPPRESSED"}[action]
    if row.state == "SUPPRESSED" and target != "SUPPRESSED":
        raise bad_request(
            "suppressed.state.transition",
            f"Analysis '{analysis_id}' is SUPPRESSED and cannot be {target}",
        )
    if target == "PUBLISHED":
        problems = storage_problems(
            session, analysis_files(session, analysis_id), ignore_undefined_md5
        )
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
    if target == "SUPPRESSED":
        return f"AnalysisId {analysis_id} was suppressed"
    return f"AnalysisId {analysis_id} successfully {target.lower()}"


# -- search -------------------------------------------------------------------------------
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


# -- files --------------------------------------------------------------------------------
def get_file(session: Session, object_id: str, study_id: str | None = None) -> File:
    f = session.get(File, object_id)
    if f is None or (study_id is not None and f.study_id != study_id):
        raise not_found("file.not.found", f"The objectId '{object_id}' does not exist")
    return f


UPDATABLE = {
    "fileSize": "file_size",
    "fileMd5sum": "file_md5sum",
    "fileAccess": "file_access",
    "dataType": "data_type",
    "info": "info",
}


def update_file(session: Session, study_id: str, object_id: str, body: dict) -> dict:
    """Song's PUT /studies/{s}/files/{id}: change size, md5, access, dataType or info.

    Changing size or MD5 of a published analysis moves it back to UNPUBLISHED, as Song does.
    """
    f = get_file(session, object_id, study_id)
    original = file_json(f)
    unknown = (
        set(body) - set(UPDATABLE) - {"objectId", "studyId", "analysisId", "fileName", "fileType"}
    )
    if unknown:
        raise bad_request("malformed.parameter", f"Fields {sorted(unknown)} cannot be updated")
    if "fileAccess" in body and body["fileAccess"] not in ("open", "controlled"):
        raise bad_request("malformed.parameter", "fileAccess must be 'open' or 'controlled'")
    if "fileMd5sum" in body and not (
        isinstance(body["fileMd5sum"], str) and re.fullmatch(r"[0-9a-fA-F]{32}", body["fileMd5sum"])
    ):
        raise bad_request("malformed.parameter", "fileMd5sum must be 32 hex characters")
    if "fileSize" in body:
        size = body["fileSize"]
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= INT64:
            raise bad_request(
                "malformed.parameter", f"fileSize must be an integer within 0..{INT64}"
            )
    if "dataType" in body and not (body["dataType"] is None or isinstance(body["dataType"], str)):
        raise bad_request("malformed.parameter", "dataType must be a string")
    if "info" in body and not isinstance(body["info"], dict):
        raise bad_request("malformed.parameter", "info must be a JSON object")
    changed = False
    content_changed = False
    for key, column in UPDATABLE.items():
        if key in body and getattr(f, column) != body[key]:
            setattr(f, column, body[key].lower() if key == "fileMd5sum" else body[key])
            changed = True
            content_changed |= key in ("fileSize", "fileMd5sum")
    analysis = session.get(Analysis, f.analysis_id)
    original_state = analysis.state if analysis else None
    unpublished = bool(content_changed and analysis and analysis.state == "PUBLISHED")
    if unpublished:
        change_state(session, study_id, f.analysis_id, "unpublish")
        message = "[WARNING]: Changed analysis from 'PUBLISHED' to 'UNPUBLISHED'"
    else:
        if changed:
            session.flush()
            repository.refresh_analysis(session, f.analysis_id)
        message = f"Did not change analysisState since it is '{original_state}'"
    kind = "CONTENT_UPDATE" if content_changed else "METADATA_UPDATE" if changed else "NO_UPDATE"
    return {
        "fileUpdateType": kind,
        "originalAnalysisState": original_state,
        "unpublishedAnalysis": unpublished,
        "message": message,
        "originalFile": original,
    }


# -- legacy entities (what score-client and score-server call) ----------------------------
def entity_json(f: File, created: datetime | None) -> dict:
    """Song's LegacyEntity, plus `createdTime` (the analysis's creation, epoch ms), a long
    the Java score-client's Entity declares."""
    created = as_utc(created)
    return {
        "id": f.object_id,
        "gnosId": f.analysis_id,
        "fileName": f.file_name,
        "projectCode": f.study_id,
        "access": f.file_access,
        "createdTime": int(created.timestamp() * 1000) if created else 0,
    }


def entity(session: Session, object_id: str) -> dict:
    f = get_entity(session, object_id)
    analysis = session.get(Analysis, f.analysis_id)
    return entity_json(f, analysis.created_at if analysis else None)


def get_entity(session: Session, object_id: str) -> File:
    f = session.get(File, object_id)
    if f is None:
        raise not_found(
            "legacy.entity.not.found", f"The LegacyEntity with id '{object_id}' does not exist"
        )
    return f


ENTITY_COLUMNS = {
    "id": File.object_id,
    "gnosId": File.analysis_id,
    "fileName": File.file_name,
    "projectCode": File.study_id,
    "access": File.file_access,
}


def list_entities(
    session: Session, filters: dict[str, str], fields: list[str], page: int, size: int
) -> dict:
    """Song's /entities page (Spring Page JSON), filtered by example, sorted by id."""
    where = [ENTITY_COLUMNS[k] == v for k, v in filters.items() if k in ENTITY_COLUMNS and v]
    total = session.scalar(select(func.count()).select_from(File).where(*where)) or 0
    rows = session.execute(
        select(File, Analysis.created_at)
        .outerjoin(Analysis, Analysis.analysis_id == File.analysis_id)
        .where(*where)
        .order_by(File.object_id)
        .limit(size)
        .offset(page * size)
    ).all()
    content = [entity_json(f, created) for f, created in rows]
    if fields:
        content = [{k: v for k, v in e.items() if k in fields} for e in content]
    pages = (total + size - 1) // size if size else 1
    return {
        "content": content,
        "pageable": {"pageNumber": page, "pageSize": size},
        "totalPages": pages,
        "totalElements": total,
        "last": (page + 1) * size >= total,
        "first": page == 0,
        "size": size,
        "number": page,
        "numberOfElements": len(content),
        "sort": {"sorted": True, "unsorted": False, "empty": False},
        "empty": not content,
    }


def index_files(session: Session, object_id: str) -> list[File]:
    return list(
        session.scalars(select(File).where(File.index_for == object_id).order_by(File.file_name))
    )
