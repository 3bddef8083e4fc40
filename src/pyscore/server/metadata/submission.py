"""Submitting an analysis: duplicate detection, samples upserted, files recorded with
their index links."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

from jsonschema import Draft7Validator, ValidationError, validators
from sqlalchemy import select
from sqlalchemy.orm import Session

from pyscore.server import events
from pyscore.server.db import utcnow
from pyscore.server.errors import bad_request, conflict
from pyscore.server.metadata.ids import BASE_KEYS, INT64, song_id
from pyscore.server.metadata.schemas import get_analysis_type, render, violations
from pyscore.server.metadata.studies import get_study
from pyscore.server.tables import (
    Analysis,
    AnalysisSample,
    AnalysisType,
    Donor,
    File,
    Sample,
    Specimen,
)
from pyscore.wire.files import find_index, is_index


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
    violations(render(atype.schema), payload, StrictValidator)
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


# The fields SONG's entities have; any other field of a submitted donor, specimen, sample or
# file lands in its `info` (SONG's Metadata: @JsonAnySetter), merged with an `info` given.
DONOR_FIELDS = ("gender",)
SPECIMEN_FIELDS = ("tumourNormalDesignation", "specimenTissueSource", "specimenType")
SAMPLE_FIELDS = ("sampleType", "matchedNormalSubmitterSampleId")
FILE_FIELDS = ("fileName", "fileSize", "fileType", "fileMd5sum", "fileAccess", "dataType")
_IDS = ("donorId", "specimenId", "sampleId", "objectId", "studyId", "analysisId")
_SUBMITTER_IDS = ("submitterDonorId", "submitterSpecimenId", "submitterSampleId")


def song_info(entry: dict, fields: tuple[str, ...], nested: tuple[str, ...] = ()) -> dict:
    """What SONG keeps as an entity's info: its `info` and every field it does not know."""
    given = entry.get("info")
    info = dict(given) if isinstance(given, dict) else {} if given is None else {"info": given}
    known = {*fields, *nested, *_IDS, *_SUBMITTER_IDS, "info"}
    info.update((k, v) for k, v in entry.items() if k not in known)
    return info


def specimen_fields(specimen: dict) -> dict:
    """A specimen's `fields` column: SONG's specimen fields (null ones left out, as SONG
    writes them) and its info when there is any."""
    out = {k: specimen[k] for k in SPECIMEN_FIELDS if specimen.get(k) is not None}
    info = song_info(specimen, SPECIMEN_FIELDS, ("donor", "samples"))
    return {**out, "info": info} if info else out


def sample_fields(sample: dict) -> dict:
    """A sample's `fields` column: SONG's sample fields (always written, null or not) and
    its info when there is any."""
    out = {k: sample.get(k) for k in SAMPLE_FIELDS}
    info = song_info(sample, SAMPLE_FIELDS, ("donor", "specimen"))
    return {**out, "info": info} if info else out


def _existing(session: Session, table: Any, study_id: str, submitter: str) -> str | None:
    """The id of the study's donor, specimen or sample with this submitter id, if any."""
    key, column = {
        Donor: (Donor.donor_id, Donor.submitter_donor_id),
        Specimen: (Specimen.specimen_id, Specimen.submitter_specimen_id),
        Sample: (Sample.sample_id, Sample.submitter_sample_id),
    }[table]
    return session.scalar(select(key).where(table.study_id == study_id, column == submitter))


def _upsert_sample(session: Session, study_id: str, entry: dict) -> str:
    """The sample of a submission, with its specimen and donor: each found by (study,
    submitter id), as SONG finds them, else created with the id SONG would give it."""
    donor_in, specimen_in = entry["donor"], entry["specimen"]
    submitter = donor_in["submitterDonorId"]
    donor_id = _existing(session, Donor, study_id, submitter)
    if donor_id is None:
        donor_id = song_id(study_id, submitter)
        session.add(
            Donor(
                donor_id=donor_id,
                study_id=study_id,
                submitter_donor_id=submitter,
                gender=donor_in.get("gender"),
                info=song_info(donor_in, DONOR_FIELDS, ("specimens",)),
            )
        )
    submitter = specimen_in["submitterSpecimenId"]
    specimen_id = _existing(session, Specimen, study_id, submitter)
    if specimen_id is None:
        specimen_id = song_id(study_id, submitter)
        session.add(
            Specimen(
                specimen_id=specimen_id,
                donor_id=donor_id,
                study_id=study_id,
                submitter_specimen_id=submitter,
                fields=specimen_fields(specimen_in),
            )
        )
    submitter = entry["submitterSampleId"]
    sample_id = _existing(session, Sample, study_id, submitter)
    if sample_id is None:
        sample_id = song_id(study_id, submitter)
        session.add(
            Sample(
                sample_id=sample_id,
                specimen_id=specimen_id,
                study_id=study_id,
                submitter_sample_id=submitter,
                fields=sample_fields(entry),
            )
        )
    session.flush()
    return sample_id


def link_indexes(files: list[dict]) -> None:
    """Point each index file at the data file it indexes, by name within the analysis (rows
    of `files` as dicts)."""
    by_name = {f["file_name"].lower(): f for f in files}
    for data in files:
        if not is_index(data["file_name"]):
            index = find_index(data["file_name"], by_name)
            if index is not None and index is not data:
                index["index_for"] = data["object_id"]


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
        analysis := Analysis(
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
        {
            "object_id": song_id(analysis_id, f["fileName"]),
            "analysis_id": analysis_id,
            "study_id": study_id,
            "file_name": f["fileName"],
            "file_size": f["fileSize"],
            "file_md5sum": f["fileMd5sum"].lower(),
            "file_type": f.get("fileType"),
            "file_access": f["fileAccess"],
            "data_type": f.get("dataType"),
            "info": song_info(f, FILE_FIELDS),
            "index_for": None,
        }
        for f in payload["files"]
    ]
    link_indexes(rows)
    session.add_all(File(**row) for row in rows)
    session.flush()
    events.record(session, analysis, events.CREATE)
    return analysis_id
