"""Rows as Song's JSON: files, donors, specimens, samples, times."""

from __future__ import annotations

from datetime import datetime

from pyscore.server.db import as_utc
from pyscore.server.tables import (
    Donor,
    File,
    Sample,
    Specimen,
)


def iso(value: datetime | None) -> str | None:
    value = as_utc(value)
    return value.isoformat().replace("+00:00", "Z") if value else None


def local_time(value: datetime | str | None) -> str | None:
    """A time as Song writes its LocalDateTime (Jackson's ISO_LOCAL_DATE_TIME, in UTC): no
    zone, the fraction without trailing zeros (none when zero), which Maestro and the SDKs
    parse. Takes a datetime or an ISO text (state history entries are stored as text)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    value = as_utc(value)
    if value is None:
        return None
    text = value.replace(tzinfo=None).isoformat(timespec="seconds")
    fraction = f"{value.microsecond:06d}".rstrip("0")
    return f"{text}.{fraction}" if fraction else text


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


# The fields Song's entities know (its payload's, as export writes them); Song keeps any
# other in `info` (Metadata's any-setter), as a submission here does (submission.song_info).
DONOR_FIELDS = ("submitterDonorId", "gender")
SPECIMEN_FIELDS = (
    "submitterSpecimenId",
    "tumourNormalDesignation",
    "specimenTissueSource",
    "specimenType",
)
SAMPLE_FIELDS = ("submitterSampleId", "matchedNormalSubmitterSampleId", "sampleType")
FILE_FIELDS = ("fileName", "fileSize", "fileType", "fileMd5sum", "fileAccess", "dataType")
