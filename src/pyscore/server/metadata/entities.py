"""Song's legacy entities: what score-client and the Java score-client look files up by."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pyscore.server.db import as_utc
from pyscore.server.errors import not_found
from pyscore.server.tables import (
    Analysis,
    File,
)
from pyscore.wire.song import Entity


def entity_of(f: File, created: datetime | None) -> Entity:
    """Song's LegacyEntity, plus `createdTime` (the analysis's creation, epoch ms), a long
    the Java score-client's Entity declares."""
    created = as_utc(created)
    return Entity(
        id=f.object_id,
        gnosId=f.analysis_id,
        fileName=f.file_name,
        projectCode=f.study_id,
        access=f.file_access,
        createdTime=int(created.timestamp() * 1000) if created else 0,
    )


def entity(session: Session, object_id: str) -> Entity:
    f = get_entity(session, object_id)
    analysis = session.get(Analysis, f.analysis_id)
    return entity_of(f, analysis.created_at if analysis else None)


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
    content = [asdict(entity_of(f, created)) for f, created in rows]
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
