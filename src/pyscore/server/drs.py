"""GA4GH DRS 1.x: objects by id, bundles for analyses, access URLs that are the same signed
storage URLs score-client gets, under the same access rules."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session

from pyscore.server import audit, metadata, objects
from pyscore.server.app import PrincipalDep, SessionDep, SignerDep, base_url
from pyscore.server.auth import Action, Principal, authorize
from pyscore.server.errors import ApiError
from pyscore.server.metadata import iso
from pyscore.server.tables import Analysis, File

router = APIRouter(prefix="/ga4gh/drs/v1", tags=["drs"])
ACCESS_ID = "https"


def _self_uri(request: Request, object_id: str) -> str:
    return f"drs://{urlsplit(base_url(request)).netloc}/{object_id}"


def _published_file(
    session: Session, object_id: str, who: Principal | None, event: str | None = None
) -> File | None:
    f = session.get(File, object_id)
    if f is None:
        return None
    authorize(
        who,
        Action.READ,
        f.study_id,
        f.file_access,
        f"read {f.file_name}",
        object_id=f.object_id,
        event=event,
    )
    if objects.analysis_state(session, f) != "PUBLISHED":
        raise ApiError(404, "not.found", f"object {object_id} is not published")
    return f


def file_object(session: Session, request: Request, f: File) -> dict[str, Any]:
    obj = objects.stored(session, f.object_id)
    analysis = session.get(Analysis, f.analysis_id)
    return {
        "id": f.object_id,
        "name": f.file_name,
        "self_uri": _self_uri(request, f.object_id),
        "size": obj.size,
        "created_time": iso(analysis.created_at if analysis else None),
        "updated_time": iso(obj.last_modified),
        "version": obj.md5 or "",
        "mime_type": "application/octet-stream",
        "checksums": [{"checksum": obj.md5, "type": "md5"}] if obj.md5 else [],
        "access_methods": [{"type": "https", "access_id": ACCESS_ID}],
        "description": f"{f.file_type or 'file'} of analysis {f.analysis_id} in study "
        f"{f.study_id} ({f.file_access})",
        "aliases": [f"{f.study_id}/{f.analysis_id}/{f.file_name}"],
    }


def bundle_object(session: Session, request: Request, analysis: Analysis) -> dict[str, Any]:
    """An analysis as a bundle: metadata only, like Song's (each member checks access)."""
    files = metadata.analysis_files(session, analysis.analysis_id)
    contents, sizes, sums = [], 0, []
    for f in files:
        contents.append(
            {"name": f.file_name, "id": f.object_id, "drs_uri": [_self_uri(request, f.object_id)]}
        )
        sizes += f.file_size
        sums.append(f.file_md5sum)
    return {
        "id": analysis.analysis_id,
        "name": analysis.analysis_id,
        "self_uri": _self_uri(request, analysis.analysis_id),
        "size": sizes,
        "created_time": iso(analysis.created_at),
        "updated_time": iso(analysis.updated_at),
        # DRS: a bundle's checksum covers its contents' checksums, sorted.
        "checksums": [
            {"checksum": hashlib.md5("".join(sorted(sums)).encode()).hexdigest(), "type": "md5"}
        ],
        "contents": contents,
        "description": f"analysis {analysis.analysis_id} ({analysis.type_name}) of study "
        f"{analysis.study_id}",
    }


@router.get("/service-info")
def service_info(request: Request) -> dict:
    return {
        "id": "org.pyscore.drs",
        "name": "pyscore DRS",
        "type": {"group": "org.ga4gh", "artifact": "drs", "version": "1.4.0"},
        "organization": {"name": "pyscore", "url": "https://pypi.org/project/pyscore/"},
        "version": "1.4.0",
        # DRS 1.4 puts it at the top level; 1.3 clients read it under `drs`
        "maxBulkRequestLength": 1,
        "drs": {"maxBulkRequestLength": 1},
        "description": f"DRS for {urlsplit(base_url(request)).netloc}",
    }


@router.get("/objects/{object_id}")
def get_object(
    object_id: str, request: Request, s: SessionDep, who: PrincipalDep, expand: bool = False
) -> dict:
    f = _published_file(s, object_id, who)
    if f is not None:
        return file_object(s, request, f)
    analysis = s.get(Analysis, object_id)
    if analysis is None or analysis.state != "PUBLISHED":
        raise ApiError(404, "not.found", f"no published object or bundle {object_id}")
    return bundle_object(s, request, analysis)


@router.get("/objects/{object_id}/access/{access_id}")
def get_access(
    object_id: str, access_id: str, s: SessionDep, who: PrincipalDep, signer: SignerDep
) -> dict:
    f = _published_file(s, object_id, who, event="drs.access")
    if f is None:
        raise ApiError(404, "not.found", f"no published object {object_id}")
    if access_id != ACCESS_ID:
        raise ApiError(400, "bad.request", f"unknown access_id {access_id!r}; use {ACCESS_ID!r}")
    spec = objects.download_spec(s, signer, f, external=True)
    audit.ranges([(part.offset, part.partSize) for part in spec.parts])
    return {"url": spec.parts[0].url}
