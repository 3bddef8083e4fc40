"""`submit`: one step from a Song payload and a directory of files to a published analysis.

Re-running after any interruption finishes the job: an analysis of the study that already
declares exactly these files (name and MD5) is reused, not submitted again, and files already
in storage are not sent again.
"""

from __future__ import annotations

import json
from pathlib import Path

from pyscore.client.api import Api
from pyscore.client.download import parallel_map
from pyscore.client.errors import ScoreError, UsageError
from pyscore.client.layout import safe_name
from pyscore.client.progress import Reporter
from pyscore.client.upload import Item, Uploader


def read_payload(path: Path) -> dict:
    try:
        payload = json.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"Cannot read payload {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"Payload {path} is not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("files"), list)
        or not payload["files"]
    ):
        raise UsageError(f"Payload {path} must be a JSON object with a non-empty 'files' list")
    return payload


def local_files(payload: dict, folder: Path) -> dict[str, Path]:
    """fileName → local path, each present and of the declared size."""
    found = {}
    for entry in payload["files"]:
        name = safe_name(str(entry.get("fileName", "")), "file name")
        path = folder / name
        if not path.is_file():
            raise UsageError(f"{name} is named in the payload but {path} does not exist")
        if isinstance(entry.get("fileSize"), int) and path.stat().st_size != entry["fileSize"]:
            raise UsageError(
                f"{path} has {path.stat().st_size} bytes; the payload declares {entry['fileSize']}"
            )
        found[name] = path
    return found


def existing_analysis(api: Api, study_id: str, files: list[dict]) -> str | None:
    """An analysis of the study (not suppressed) declaring exactly these files, if any."""
    wanted = sorted((f["fileName"], str(f.get("fileMd5sum", "")).lower()) for f in files)
    candidates = {e.gnosId for e in api.entities(fileName=wanted[0][0], projectCode=study_id)}
    for analysis_id in sorted(candidates):
        analysis = api.analysis(study_id, analysis_id)
        if analysis.get("analysisState") == "SUPPRESSED":
            continue
        have = sorted((f["fileName"], f["fileMd5sum"].lower()) for f in analysis["files"])
        if have == wanted:
            return analysis_id
    return None


def submit(
    api: Api,
    uploader: Uploader,
    reporter: Reporter,
    study_id: str,
    payload_path: Path,
    folder: Path,
    publish: bool,
) -> str:
    payload = read_payload(payload_path)
    if payload.get("studyId") not in (None, study_id):
        raise UsageError(f"The payload's studyId {payload['studyId']!r} is not {study_id!r}")
    paths = local_files(payload, folder)
    analysis_id = existing_analysis(api, study_id, payload["files"])
    if analysis_id:
        reporter.info(f"Analysis {analysis_id} already declares these files; continuing it")
    else:
        analysis_id = api.submit(study_id, {**payload, "studyId": study_id})
        reporter.info(f"Submitted analysis {analysis_id}")
    analysis = api.analysis(study_id, analysis_id)
    files = analysis["files"]
    stored = parallel_map(lambda f: api.upload_exists(f["objectId"]), files)
    missing = []
    for f, there in zip(files, stored):
        if isinstance(there, ScoreError):
            raise there
        if there:
            reporter.info(f"{f['fileName']} is already in storage")
            continue
        if analysis.get("analysisState") != "UNPUBLISHED":
            raise ScoreError(
                f"{f['fileName']} is missing from storage but analysis "
                f"{analysis_id} is {analysis.get('analysisState')}"
            )
        missing.append(Item(f["objectId"], paths[f["fileName"]], f["fileMd5sum"]))
    errors = [e for e in uploader.upload_many(missing) if e is not None]
    if errors:
        raise errors[0]
    if publish and analysis.get("analysisState") != "PUBLISHED":
        api.publish(study_id, analysis_id)
        reporter.info(f"Published analysis {analysis_id}")
    return analysis_id
