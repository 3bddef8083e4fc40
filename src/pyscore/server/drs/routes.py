"""GA4GH DRS 1.x: objects by id, bundles for analyses, access URLs that are the same signed
storage URLs score-client gets, under the same access rules."""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session

from pyscore.server import audit, metadata, objects
from pyscore.server.auth import Principal
from pyscore.server.errors import ApiError
from pyscore.server.metadata.song_json import iso
from pyscore.server.tables import Analysis, File
from pyscore.server.web.deps import PrincipalDep, SessionDep, SignerDep, base_url
from pyscore.wire.drs import AccessMethod, AccessURL, Checksum, ContentsObject, DrsObject

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
    objects.authorize_read(session, who, f, event)
    return f


def file_object(session: Session, request: Request, f: File) -> DrsObject:
    obj = objects.stored(session, f.object_id)
    analysis = session.get(Analysis, f.analysis_id)
    return DrsObject(
        id=f.object_id,
        name=f.file_name,
        self_uri=_self_uri(request, f.object_id),
        size=obj.size,
        created_time=iso(analysis.created_at if analysis else None),
        updated_time=iso(obj.last_modified),
        version=obj.md5 or "",
        mime_type="application/octet-stream",
        checksums=[Checksum(obj.md5, "md5")] if obj.md5 else [],
        access_methods=[AccessMethod(type="https", access_id=ACCESS_ID)],
        description=f"{f.file_type or 'file'} of analysis {f.analysis_id} in study "
        f"{f.study_id} ({f.file_access})",
        aliases=[f"{f.study_id}/{f.analysis_id}/{f.file_name}"],
    )


def bundle_object(session: Session, request: Request, analysis: Analysis) -> DrsObject:
    """An analysis as a bundle: metadata only, like Song's (each member checks access)."""
    files = metadata.analysis_files(session, analysis.analysis_id)
    contents = [
        ContentsObject(f.file_name, f.object_id, [_self_uri(request, f.object_id)]) for f in files
    ]
    # DRS: a bundle's checksum covers its contents' checksums, sorted.
    digest = hashlib.md5("".join(sorted(f.file_md5sum for f in files)).encode()).hexdigest()
    return DrsObject(
        id=analysis.analysis_id,
        name=analysis.analysis_id,
        self_uri=_self_uri(request, analysis.analysis_id),
        size=sum(f.file_size for f in files),
        created_time=iso(analysis.created_at),
        updated_time=iso(analysis.updated_at),
        checksums=[Checksum(digest, "md5")],
        contents=contents,
        description=f"analysis {analysis.analysis_id} ({analysis.type_name}) of study "
        f"{analysis.study_id}",
    )


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


@router.get("/objects/{object_id}", response_model=DrsObject, response_model_exclude_none=True)
def get_object(
    object_id: str, request: Request, s: SessionDep, who: PrincipalDep, expand: bool = False
) -> DrsObject:
    f = _published_file(s, object_id, who)
    if f is not None:
        return file_object(s, request, f)
    analysis = s.get(Analysis, object_id)
    if analysis is None or analysis.state != "PUBLISHED":
        raise ApiError(404, "not.found", f"no published object or bundle {object_id}")
    return bundle_object(s, request, analysis)


@router.get("/objects/{object_id}/access/{access_id}", response_model=AccessURL)
def get_access(
    object_id: str, access_id: str, s: SessionDep, who: PrincipalDep, signer: SignerDep
) -> AccessURL:
    f = _published_file(s, object_id, who, event="drs.access")
    if f is None:
        raise ApiError(404, "not.found", f"no published object {object_id}")
    if access_id != ACCESS_ID:
        raise ApiError(400, "bad.request", f"unknown access_id {access_id!r}; use {ACCESS_ID!r}")
    spec = objects.download_spec(s, signer, f, external=True)
    audit.ranges([(part.offset, part.partSize) for part in spec.parts])
    return AccessURL(url=spec.parts[0].url or "")
