"""Song's legacy entities: what score-client and the Java score-client look files up by."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from pyscore.server.db import as_utc
from pyscore.server.errors import ApiError, not_found, repeated, repeats
from pyscore.server.tables import (
    Analysis,
    File,
)


def entity_json(f: File, created: datetime | None) -> dict:
    """Song's LegacyEntity, plus `createdTime` (the analysis's creation, epoch ms), a long
    the Java score-client's Entity declares."""
    return _entity(f.object_id, f.analysis_id, f.file_name, f.study_id, f.file_access, created)


def _entity(
    object_id: str,
    analysis_id: str,
    file_name: str,
    study_id: str,
    access: str,
    created: datetime | None,
) -> dict:
    created = as_utc(created)
    return {
        "id": object_id,
        "gnosId": analysis_id,
        "fileName": file_name,
        "projectCode": study_id,
        "access": access,
        "createdTime": int(created.timestamp() * 1000) if created else 0,
    }


def entity(session: Session, object_id: str) -> dict:
    f = get_entity(session, object_id)
    analysis = session.get(Analysis, f.analysis_id)
    return entity_json(f, analysis.created_at if analysis else None)


def no_such_entity(object_id: str) -> ApiError:
    return not_found(
        "legacy.entity.not.found", f"The LegacyEntity with id '{object_id}' does not exist"
    )


def get_entity(session: Session, object_id: str) -> File:
    f = session.get(File, object_id)
    if f is None:
        raise no_such_entity(object_id)
    return f


_ENTITIES = select(
    File.object_id,
    File.analysis_id,
    File.file_name,
    File.study_id,
    File.file_access,
    Analysis.created_at,
).outerjoin(Analysis, Analysis.analysis_id == File.analysis_id)
IN_CHUNK = 500  # ids per IN (...) query


def entities(session: Session | Connection, ids: Sequence[str]) -> list[dict]:
    """Each id's entity (status 200) or its 404, as `GET /entities/{id}` would answer, in
    order, in a query per IN_CHUNK ids (pyscore's batch extension). An id asked again is
    refused (400), as `/download/batch` refuses it: a batch costs its distinct ids only."""
    unique = [i for i in dict.fromkeys(ids) if "\x00" not in i]  # PostgreSQL refuses NULs
    found: dict[str, dict] = {}
    for start in range(0, len(unique), IN_CHUNK):
        for row in session.execute(
            _ENTITIES.where(File.object_id.in_(unique[start : start + IN_CHUNK]))
        ):
            found[row[0]] = _entity(*row)
    out = []
    for i, again in zip(ids, repeats(ids)):
        if i in found and not again:
            out.append({"id": i, "status": 200, "entity": found[i]})
        else:
            error = repeated(i) if again else no_such_entity(i)
            out.append(
                {
                    "id": i,
                    "status": error.status,
                    "errorId": error.error_id,
                    "message": error.message,
                }
            )
    return out


ENTITY_COLUMNS = {
    "id": File.object_id,
    "gnosId": File.analysis_id,
    "fileName": File.file_name,
    "projectCode": File.study_id,
    "access": File.file_access,
}


_NAMES = select(File.object_id, File.analysis_id, File.file_name, File.study_id, File.file_access)


def list_entities(
    session: Session,
    filters: dict[str, str],
    fields: list[str],
    page: int,
    size: int,
    start: str | None = None,
    before: str | None = None,
) -> dict:
    """Song's /entities page (Spring Page JSON), filtered by example, sorted by id.

    `start`/`before` (pyscore's extension, `from=`/`before=`): only ids from `start` and
    below `before`, read as one walk of the index from `start` (a keyset: no page is an
    offset deep), without counting them: the answer has no totalElements, and `last` says
    whether the range is done. `fields` without createdTime: the analyses are not read (a
    mount asks a million names)."""
    where = [ENTITY_COLUMNS[k] == v for k, v in filters.items() if k in ENTITY_COLUMNS and v]
    if start is not None:
        where.append(File.object_id >= start)
    if before is not None:
        where.append(File.object_id < before)
    content = _entities_of(session, where, page, size, not fields or "createdTime" in fields)
    if fields:
        content = [{k: v for k, v in e.items() if k in fields} for e in content]
    if start is not None or before is not None:
        return {
            "content": content,
            "last": len(content) < size,
            "first": page == 0,
            "size": size,
            "number": page,
            "numberOfElements": len(content),
            "empty": not content,
        }
    total = session.scalar(select(func.count()).select_from(File).where(*where)) or 0
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


def _entities_of(session: Session, where: list, page: int, size: int, created: bool) -> list[dict]:
    """A page's entities (with createdTime: the analyses read too). A first page (or a
    keyset's) is one walk of the index; a deeper one reads the page's ids first (an
    index-only walk, however deep the page), then only its rows."""
    query = _ENTITIES if created else _NAMES
    if page == 0:
        rows = list(session.execute(query.where(*where).order_by(File.object_id).limit(size)))
    else:
        ids = list(
            session.scalars(
                select(File.object_id)
                .where(*where)
                .order_by(File.object_id)
                .limit(size)
                .offset(page * size)
            )
        )
        found: dict = {}
        for start in range(0, len(ids), IN_CHUNK):
            chunk = ids[start : start + IN_CHUNK]
            found.update((r[0], r) for r in session.execute(query.where(File.object_id.in_(chunk))))
        rows = [found[i] for i in ids if i in found]
    if created:
        return [_entity(*r) for r in rows]
    return [_entity(i, a, name, st, x, None) for i, a, name, st, x in rows]


def index_files(session: Session, object_id: str) -> list[File]:
    return list(
        session.scalars(select(File).where(File.index_for == object_id).order_by(File.file_name))
    )
