"""Files of analyses: get and update (Song's update types), access changes."""

from __future__ import annotations

import re

from sqlalchemy.orm import Session

from pyscore.server.errors import ApiError, bad_request, not_found
from pyscore.server.metadata import curation
from pyscore.server.metadata.analyses import change_state
from pyscore.server.metadata.ids import INT64
from pyscore.server.metadata.song_json import file_json
from pyscore.server.tables import (
    Analysis,
    File,
)


def no_such_file(object_id: str) -> ApiError:
    return not_found("file.not.found", f"The objectId '{object_id}' does not exist")


def get_file(session: Session, object_id: str, study_id: str | None = None) -> File:
    """The file (404 file.not.found); with `study_id`, one of that study as Song finds it
    (checkFileAndStudyRelated: 404 study.id.does.not.exist, or 400
    entity.not.related.to.study when another study has it)."""
    if study_id is not None:
        row: File = curation.related(session, curation.FILE, study_id, object_id)
        return row
    f = session.get(File, object_id)
    if f is None:
        raise no_such_file(object_id)
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
        if changed and analysis is not None:
            session.flush()
            curation.changed(session, analysis, curation.UPDATE)  # its event: an update
        message = f"Did not change analysisState since it is '{original_state}'"
    kind = "CONTENT_UPDATE" if content_changed else "METADATA_UPDATE" if changed else "NO_UPDATE"
    return {
        "fileUpdateType": kind,
        "originalAnalysisState": original_state,
        "unpublishedAnalysis": unpublished,
        "message": message,
        "originalFile": original,
    }
