"""Score's storage model as plain functions: download specifications and multipart uploads.

The store signs URLs; these functions decide which URLs, for which byte ranges, and keep the
record of uploads in the database so any server process can continue what another began.

Every refusal here is final, so it is a 400 (or 404), as the original's NotRetryableException:
the Java score-client retries any other 4xx, 409 included, ten times over ~51 s.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Protocol

from sqlalchemy import bindparam, delete, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from pyscore.server import audit
from pyscore.server.auth import Action, Principal, authorize
from pyscore.server.db import as_utc, utcnow
from pyscore.server.errors import (
    ApiError,
    Unavailable,
    bad_request,
    not_found,
    repeated,
    repeats,
)
from pyscore.server.metadata.files import no_such_file
from pyscore.server.store.base import ObjectStore
from pyscore.server.tables import Analysis, File, StoredObject, Upload, UploadPart
from pyscore.wire.batch import ANSWER_PARTS, SpecWanted
from pyscore.wire.codec import to_wire
from pyscore.wire.score import ObjectSpecification, Part, UploadProgress

SENTINEL = "heliograph"
MAX_PARTS = 10_000
MIN_PART = 5 * 1024 * 1024  # S3's floor for every part but the last


@dataclass(frozen=True)
class Signer:
    """What URL signing needs besides the store: where clients reach us and for how long."""

    store: ObjectStore
    base_url: str
    download_expiry: int
    upload_expiry: int


def effective_part_size(size: int, requested: int) -> int:
    """At most MAX_PARTS parts, none smaller than S3 allows."""
    return max(requested, MIN_PART, -(-size // MAX_PARTS))


def part_layout(size: int, part_size: int) -> list[tuple[int, int]]:
    """(offset, length) of each part of an object."""
    part_size = effective_part_size(size, part_size)
    return [(off, min(part_size, size - off)) for off in range(0, size, part_size)] or [(0, 0)]


def part_count(size: int, part_size: int) -> int:
    """How many parts `part_layout` lays out, without laying them out."""
    return max(1, -(-size // effective_part_size(size, part_size)))


def analysis_state(session: Session, f: File) -> str:
    analysis = session.get(Analysis, f.analysis_id)
    return analysis.state if analysis else "UNKNOWN"


def not_published(object_id: str, state: str) -> ApiError:
    return bad_request(
        "analysis.not.published",
        f"Cannot read objectId '{object_id}' with analysisState "
        f"'{state}': only files of PUBLISHED analyses can be read",
    )


def require_published(session: Session, f: File) -> None:
    """The one rule for every way to a file's bytes or page (storage API, htsget, DRS, the
    portal): only files of PUBLISHED analyses, else 400, as the original answers."""
    state = analysis_state(session, f)
    if state != "PUBLISHED":
        raise not_published(f.object_id, state)


def authorize_read(
    session: Session, who: Principal | None, f: File, event: str | None, verb: str = "read"
) -> None:
    """A file's bytes to this caller, decided as every protocol decides it (htsget, DRS, the
    portal): the one access decision (recorded as `event`), then the published-only rule."""
    authorize(
        who,
        Action.READ,
        f.study_id,
        f.file_access,
        f"{verb} {f.file_name}",
        object_id=f.object_id,
        event=event,
    )
    require_published(session, f)


def no_such_object(object_id: str) -> ApiError:
    return not_found("object.not.found", f"Object '{object_id}' is not in storage")


def stored(session: Session, object_id: str) -> StoredObject:
    obj = session.get(StoredObject, object_id)
    if obj is None:
        raise no_such_object(object_id)
    return obj


@dataclass(frozen=True)
class Readable:
    """What deciding on a download and writing its specification need of one object: its
    file, its analysis's state and its stored object (None fields: not in storage), read in
    one query."""

    object_id: str
    study_id: str
    file_access: str
    file_name: str
    analysis_id: str
    state: Optional[str]
    size: Optional[int]
    md5: Optional[str]
    part_size: Optional[int]
    part_md5s: Optional[list]
    upload_id: Optional[str]


_READABLE = (
    select(
        File.object_id,
        File.study_id,
        File.file_access,
        File.file_name,
        File.analysis_id,
        Analysis.state,
        StoredObject.size,
        StoredObject.md5,
        StoredObject.part_size,
        StoredObject.part_md5s,
        StoredObject.upload_id,
    )
    .outerjoin(Analysis, Analysis.analysis_id == File.analysis_id)
    .outerjoin(StoredObject, StoredObject.object_id == File.object_id)
)
_READABLE_ONE = _READABLE.where(File.object_id == bindparam("object_id"))  # built once
IN_CHUNK = 500  # ids per IN (...) query: far below any database's limit on parameters


def readable(session: Session | Connection, object_id: str) -> Readable | None:
    row = session.execute(_READABLE_ONE, {"object_id": object_id}).first()
    return _readable(row) if row is not None else None


def _readable(row: Any) -> Readable:
    return Readable(*row)


def readables(session: Session | Connection, object_ids: Sequence[str]) -> dict[str, Readable]:
    """`readable` of many objects, in a query per IN_CHUNK ids; unknown ids are left out."""
    # no id holds a NUL (PostgreSQL would refuse the query rather than find nothing)
    unique = [i for i in dict.fromkeys(object_ids) if "\x00" not in i]
    out: dict[str, Readable] = {}
    for start in range(0, len(unique), IN_CHUNK):
        chunk = unique[start : start + IN_CHUNK]
        for row in session.execute(_READABLE.where(File.object_id.in_(chunk))):
            out[row[0]] = _readable(row)
    return out


def object_download(
    who: Principal | None,
    signer: Signer,
    r: Readable | None,
    object_id: str,
    offset: int = 0,
    length: int = -1,
    external: bool = False,
    exclude_urls: bool = False,
    most_parts: Optional[int] = None,
) -> ObjectSpecification:
    """The one way to an object's download specification, for one object or each of a
    batch: the file exists (404), the caller may read it (`auth.authorize`: 403 to an
    anonymous caller of a controlled file, as the original), its analysis is published
    (400, unless only the layout is asked for), it is in storage (404), the range fits (400).
    More than `most_parts` parts: `Cut` (what is left of a batch answer's room; decided
    after the refusals, so where a batch stops says nothing of what the caller may not read)."""
    if r is None:
        raise no_such_file(object_id)
    authorize(
        who,
        Action.READ,
        r.study_id,
        r.file_access,
        f"download {r.file_name}",
        anonymous_forbidden=True,
        object_id=r.object_id,
        event=None if exclude_urls else "download.external" if external else "download",
    )
    if not exclude_urls and r.state != "PUBLISHED":
        raise not_published(r.object_id, r.state or "UNKNOWN")
    if r.size is None:
        raise no_such_object(r.object_id)
    spec = _spec(signer, r.object_id, r, offset, length, external, exclude_urls, most_parts)
    audit.ranges([(part.offset, part.partSize) for part in spec.parts if part.url])
    return spec


class StoredFacts(Protocol):
    """What a specification needs of a stored object (a StoredObject row or a Readable)."""

    @property
    def size(self) -> Any: ...
    @property
    def md5(self) -> Any: ...
    @property
    def part_size(self) -> Any: ...
    @property
    def part_md5s(self) -> Any: ...
    @property
    def upload_id(self) -> Any: ...


def download_spec(
    session: Session,
    signer: Signer,
    f: File,
    offset: int = 0,
    length: int = -1,
    external: bool = False,
    exclude_urls: bool = False,
) -> ObjectSpecification:
    """The ObjectSpecification for [offset, offset+length) of a file, with signed part URLs."""
    obj = stored(session, f.object_id)
    return _spec(signer, f.object_id, obj, offset, length, external, exclude_urls)


def _spec(
    signer: Signer,
    object_id: str,
    obj: StoredFacts,
    offset: int,
    length: int,
    external: bool,
    exclude_urls: bool,
    most_parts: Optional[int] = None,
) -> ObjectSpecification:
    size: int = obj.size
    if length == -1:
        length = size - offset
    if offset < 0 or length < 1 or offset + length > size:
        raise bad_request(
            "invalid.range",
            f"Range offset={offset} length={length} is outside "
            f"object '{object_id}' of {size} bytes",
        )
    whole = offset == 0 and length == size
    if external:
        layout = [(offset, length)]
    elif whole:
        layout = part_layout(size, obj.part_size)
    else:
        layout = [(offset + o, n) for o, n in part_layout(length, obj.part_size)]
    if most_parts is not None and len(layout) > most_parts:
        raise Cut(object_id)
    part_md5s = obj.part_md5s or []
    parts = []
    shared_url = None  # stores that sign whole objects only: one signature serves every part
    for number, (off, n) in enumerate(layout, start=1):
        url = None
        if not exclude_urls:
            ranged = not (external and whole)
            if signer.store.signs_ranges or shared_url is None:
                url = signer.store.url_for_get(
                    object_id,
                    base_url=signer.base_url,
                    expires_in=signer.download_expiry,
                    offset=off if ranged else None,
                    length=n if ranged else None,
                )
                shared_url = url
            else:
                url = shared_url
        source_md5 = None
        if whole and not external and len(part_md5s) == len(layout):
            source_md5 = part_md5s[number - 1]
        parts.append(Part(partNumber=number, partSize=n, offset=off, url=url, sourceMd5=source_md5))
    return ObjectSpecification(
        objectKey=f"data/{object_id}",
        objectId=object_id,
        uploadId=obj.upload_id,
        parts=parts,
        objectSize=length,
        objectMd5=obj.md5,
    )


def spec_json(spec: ObjectSpecification) -> dict[str, Any]:
    """What the original's Jackson writes: every field, nulls included (a download part's
    `md5`, a missing `objectMd5`), except a part's `sourceMd5`, which is left out unless set.
    (Built by hand: `dataclasses.asdict` deep-copies, and a spec is the hottest answer.)"""
    parts = []
    for p in spec.parts:
        part: dict[str, Any] = {
            "partNumber": p.partNumber,
            "partSize": p.partSize,
            "offset": p.offset,
            "url": p.url,
            "md5": p.md5,
        }
        if p.sourceMd5 is not None:
            part["sourceMd5"] = p.sourceMd5
        parts.append(part)
    return {
        "objectKey": spec.objectKey,
        "objectId": spec.objectId,
        "uploadId": spec.uploadId,
        "parts": parts,
        "objectSize": spec.objectSize,
        "objectMd5": spec.objectMd5,
    }


class Cut(Exception):
    """A specification with more parts than a batch's answer has room left for."""


def refusal_json(object_id: str, exc: ApiError) -> dict[str, Any]:
    """A batch item's refusal: what its single call would have answered (recorded with it:
    a grant of this object handed out nothing). A dependency that is away is no item's
    refusal: it is raised, and the whole batch answered 503 with Retry-After, which a
    client retries as a whole (a per-item 503 would end that file's transfer)."""
    if isinstance(exc, Unavailable):
        raise exc
    audit.failed(object_id, exc.status)
    return {
        "objectId": object_id,
        "status": exc.status,
        "errorId": exc.error_id,
        "message": exc.message,
    }


def download_specs(
    found: dict[str, Readable],
    signer: Signer,
    who: Principal | None,
    wanted: Sequence[SpecWanted],
) -> list[dict[str, Any]]:
    """Each wanted object's specification or its own refusal (as the single call would
    answer it), in order, from what `readables` read of them; one refusal never fails the
    others. The same object and range asked again is refused (400), and the answer stops
    before the specification that would take it past ANSWER_PARTS parts (never at the
    first): the client asks the rest again (wire/batch.py)."""
    out: list[dict[str, Any]] = []
    room = ANSWER_PARTS
    for w, again in zip(wanted, repeats((w.objectId, w.offset, w.length) for w in wanted)):
        try:
            if again:
                raise repeated(w.objectId, f" (offset {w.offset}, length {w.length})")
            spec = object_download(
                who,
                signer,
                found.get(w.objectId),
                w.objectId,
                w.offset,
                w.length,
                most_parts=room if out else None,
            )
        except Cut:
            audit.failed(w.objectId, 413)  # granted, nothing handed out: asked again later
            break
        except ApiError as exc:
            out.append(refusal_json(w.objectId, exc))
        else:
            room -= len(spec.parts)
            out.append({"objectId": w.objectId, "status": 200, "spec": spec_json(spec)})
    return out


def ping_url(signer: Signer) -> str:
    return signer.store.url_for_get(SENTINEL, base_url=signer.base_url, expires_in=300)


LISTING_BATCH = 5000  # /listing's rows a fetch and a chunk (~500 KB of JSON)


def listing_batches(
    conn: Session | Connection,
    readable: set[str] | None,
    batch: int = LISTING_BATCH,
    names: bool = False,
) -> Iterator[list[dict[str, Any]]]:
    """Objects of published analyses that the caller may read (`readable`: those studies'
    and the open ones, chosen by the database; None: all) as /listing's entries (id, size,
    lastModified in epoch ms; with `names` also the file's analysis and name, as
    `gnosId` and `fileName`), `batch` at a time: read through a server-side cursor when
    `conn` streams results, so a million objects never sit in memory at once."""
    columns = [StoredObject.object_id, StoredObject.size, StoredObject.last_modified]
    if names:
        columns += [File.analysis_id, File.file_name]
    query = (
        select(*columns)
        .join(File, File.object_id == StoredObject.object_id)
        .join(Analysis, Analysis.analysis_id == File.analysis_id)
        .where(Analysis.state == "PUBLISHED")
        .order_by(StoredObject.object_id)
    )
    if readable is not None:
        query = query.where((File.file_access == "open") | File.study_id.in_(sorted(readable)))
    for rows in conn.execute(query).partitions(batch):
        entries = [
            {"id": r[0], "size": r[1], "lastModified": int(as_utc(r[2]).timestamp() * 1000)}
            for r in rows
        ]
        if names:
            for entry, r in zip(entries, rows):
                entry["gnosId"], entry["fileName"] = r[3], r[4]
        yield entries


# -- uploads ------------------------------------------------------------------------------
def _upload_parts(session: Session, upload: Upload, signer: Signer, with_urls: bool) -> list[Part]:
    done = {
        p.part_number: p.md5
        for p in session.scalars(select(UploadPart).where(UploadPart.upload_id == upload.upload_id))
    }
    parts = []
    for number, (off, size) in enumerate(part_layout(upload.file_size, upload.part_size), 1):
        url = None
        if with_urls and number not in done:
            url = signer.store.url_for_part(
                upload.object_id,
                upload.upload_id,
                number,
                off,
                size,
                base_url=signer.base_url,
                expires_in=signer.upload_expiry,
            )
        # A finished part: `md5` for the Java client's isCompleted() (it then checks its
        # local bytes against it), `sourceMd5` as the original's status marks it.
        md5 = done.get(number)
        parts.append(
            Part(partNumber=number, partSize=size, offset=off, url=url, md5=md5, sourceMd5=md5)
        )
    return parts


def current_upload(session: Session, object_id: str) -> Upload | None:
    return session.scalar(select(Upload).where(Upload.object_id == object_id))


def initiate_upload(
    session: Session,
    signer: Signer,
    f: File,
    file_size: int,
    md5: str | None,
    overwrite: bool,
    part_size: int,
) -> ObjectSpecification:
    require_unpublished(session, f)
    if file_size <= 0:
        raise bad_request("upload.empty", f"Refusing to upload an empty file for '{f.object_id}'")
    if file_size != f.file_size:
        raise bad_request(
            "upload.size.mismatch",
            f"File size {file_size} differs from the {f.file_size} bytes the "
            f"analysis declares for {f.file_name} ({f.object_id})",
        )
    if md5 and md5.lower() != f.file_md5sum:
        raise bad_request(
            "upload.md5.mismatch",
            f"MD5 {md5.lower()} differs from {f.file_md5sum}, which the analysis "
            f"declares for {f.file_name} ({f.object_id})",
        )
    if session.get(StoredObject, f.object_id) is not None and not overwrite:
        raise bad_request(
            "object.already.exists",
            f"Object '{f.object_id}' is already uploaded; use overwrite to replace it",
        )
    previous = current_upload(session, f.object_id)
    if previous is not None:
        if not overwrite and previous.file_size == file_size and held(signer.store, previous):
            raise bad_request(
                "upload.in.progress",
                f"An upload of '{f.object_id}' is already in progress "
                f"(uploadId {previous.upload_id}); resume it or cancel it first",
            )
        cancel_upload(session, signer.store, f.object_id)
    upload_id = signer.store.initiate(f.object_id, file_size)
    upload = Upload(
        upload_id=upload_id,
        object_id=f.object_id,
        file_size=file_size,
        part_size=effective_part_size(file_size, part_size),
        md5=f.file_md5sum,
        created_at=utcnow(),
    )
    session.add(upload)
    session.flush()
    return ObjectSpecification(
        objectKey=f"data/{f.object_id}",
        objectId=f.object_id,
        uploadId=upload_id,
        objectSize=file_size,
        objectMd5=upload.md5,
        parts=_upload_parts(session, upload, signer, with_urls=True),
    )


def require_unpublished(session: Session, f: File) -> None:
    """An upload is begun, resumed, given parts and completed only while its file's analysis
    is UNPUBLISHED (publishing waits for no upload: it refuses while one is open), so a
    published file's bytes are never replaced by one begun before."""
    state = analysis_state(session, f)
    if state != "UNPUBLISHED":
        raise bad_request(
            "analysis.not.unpublished",
            f"Cannot upload object '{f.object_id}': its analysis '{f.analysis_id}' is "
            f"{state}; uploads are only allowed while UNPUBLISHED",
        )


def get_upload(session: Session, object_id: str, upload_id: str | None = None) -> Upload:
    upload = current_upload(session, object_id)
    if upload is None or (upload_id is not None and upload.upload_id != upload_id):
        raise not_found(
            "upload.not.found",
            f"No upload of '{object_id}' is in progress"
            + (f" with uploadId {upload_id}" if upload_id else ""),
        )
    return upload


def open_upload(session: Session, object_id: str, upload_id: str | None = None) -> Upload:
    """The upload in progress (404 if none), to go on with: its analysis UNPUBLISHED."""
    upload = get_upload(session, object_id, upload_id)
    f = session.get(File, object_id)
    if f is None:
        raise no_such_file(object_id)
    require_unpublished(session, f)
    return upload


class UploadGone(ApiError):
    """The store no longer holds an upload whose record is open: it completed or aborted it
    while the record's update was lost (the database away, the server killed). No part can
    be sent to it; it is begun again (the original client does so on this 404)."""

    def __init__(self, upload: Upload) -> None:
        super().__init__(
            404,
            "upload.not.found",
            f"The object store no longer holds upload {upload.upload_id} of "
            f"'{upload.object_id}' (completed or cancelled while the server's record of it "
            "was lost); begin it again",
        )


def held(store: ObjectStore, upload: Upload) -> bool:
    """Whether the store still holds an upload that its record says is open."""
    return store.list_parts(upload.object_id, upload.upload_id) is not None


def upload_status(
    session: Session, signer: Signer, object_id: str, file_size: int | None
) -> UploadProgress:
    """The upload in progress, its finished parts marked and the others with URLs; 404 if
    none, or if the store no longer holds it (`UploadGone`)."""
    upload = open_upload(session, object_id)
    if file_size is not None and file_size != upload.file_size:
        raise bad_request(
            "upload.size.changed",
            f"The upload of '{object_id}' in progress is for "
            f"{upload.file_size} bytes, not {file_size}",
        )
    if not held(signer.store, upload):
        raise UploadGone(upload)
    return UploadProgress(
        objectId=object_id,
        uploadId=upload.upload_id,
        parts=_upload_parts(session, upload, signer, with_urls=True),
    )


def record_parts(
    session: Session,
    store: ObjectStore,
    object_id: str,
    upload_id: str,
    parts: Sequence[tuple[int, str, str]],
    completing: bool = False,
) -> Upload:
    """Record parts the client sent, each (number, md5, etag) one of the upload's, named once
    and held by the store with that checksum (the store asked once); none is recorded unless
    all are right. The store no longer holding the upload is `UploadGone`, unless
    `completing`: then each part is taken on its MD5 being its ETag, and the completion that
    follows succeeds only if the store made the object of exactly these parts."""
    upload = open_upload(session, object_id, upload_id)
    count = len(part_layout(upload.file_size, upload.part_size))
    for (number, _, _), again in zip(parts, repeats(n for n, _, _ in parts)):
        if not 1 <= number <= count:
            raise bad_request("upload.part.number", f"Part number {number} is not in 1..{count}")
        if again:
            raise bad_request(
                "upload.part.repeated", f"Part {number} of '{object_id}' is listed more than once"
            )
    listed = store.list_parts(object_id, upload_id) if parts else {}
    if listed is None:
        if not completing:
            raise UploadGone(upload)
        listed = {number: md5 for number, md5, _ in parts}
    for number, md5, etag in parts:
        stored_md5 = listed.get(number)
        if stored_md5 is None:
            raise bad_request(
                "upload.part.missing", f"Part {number} of '{object_id}' has not reached the store"
            )
        theirs = stored_md5.strip('"').lower()
        if theirs != etag.strip('"').lower() or theirs != md5.lower():
            raise bad_request(
                "upload.part.checksum",
                f"Part {number} of '{object_id}' has MD5 {stored_md5} in the store; the "
                f"client sent {md5}",
            )
    for number, md5, etag in parts:
        session.merge(
            UploadPart(
                upload_id=upload_id, part_number=number, md5=md5.lower(), etag=etag.strip('"')
            )
        )
    return upload


def delete_part(session: Session, object_id: str, upload_id: str, part_number: int) -> None:
    get_upload(session, object_id, upload_id)
    session.execute(
        delete(UploadPart).where(
            UploadPart.upload_id == upload_id, UploadPart.part_number == part_number
        )
    )


def complete_upload(
    session: Session, store: ObjectStore, object_id: str, upload_id: str
) -> StoredObject:
    return _complete(session, store, open_upload(session, object_id, upload_id))


def _complete(session: Session, store: ObjectStore, upload: Upload) -> StoredObject:
    object_id, upload_id = upload.object_id, upload.upload_id
    layout = part_layout(upload.file_size, upload.part_size)
    done = {
        p.part_number: p
        for p in session.scalars(select(UploadPart).where(UploadPart.upload_id == upload_id))
    }
    missing = [n for n in range(1, len(layout) + 1) if n not in done]
    if missing:
        raise bad_request(
            "upload.incomplete",
            f"Upload of '{object_id}' is missing parts "
            f"{missing[:10]}{'...' if len(missing) > 10 else ''}",
        )
    store.complete(object_id, upload_id, {n: p.etag for n, p in done.items()})
    obj = session.get(StoredObject, object_id) or StoredObject(object_id=object_id)
    obj.size, obj.md5, obj.part_size = upload.file_size, upload.md5, upload.part_size
    obj.part_md5s = [done[n].md5 for n in range(1, len(layout) + 1)]
    obj.upload_id, obj.last_modified = upload_id, utcnow()
    session.add(obj)
    session.execute(delete(UploadPart).where(UploadPart.upload_id == upload_id))
    session.delete(upload)
    store.write_meta(object_id, meta(obj))
    return obj


def start_upload(
    session: Session,
    signer: Signer,
    f: File,
    file_size: int,
    md5: str | None,
    overwrite: bool,
    part_size: int,
) -> tuple[UploadProgress, bool]:
    """What the original client's exists, status and initiate calls decide, in one: the
    upload to send parts to, and whether it is one already in progress (resumed)."""
    if not overwrite:
        if object_exists(session, f.object_id):
            raise bad_request(
                "object.already.exists",
                f"Object '{f.object_id}' is already uploaded; use overwrite to replace it",
            )
        if current_upload(session, f.object_id) is not None:
            with contextlib.suppress(UploadGone):  # then begun again: initiate replaces it
                return upload_status(session, signer, f.object_id, file_size), True
    spec = initiate_upload(session, signer, f, file_size, md5, overwrite, part_size)
    return UploadProgress(objectId=spec.objectId, uploadId=spec.uploadId, parts=spec.parts), False


def finish_upload(
    session: Session,
    store: ObjectStore,
    object_id: str,
    upload_id: str,
    parts: Sequence[tuple[int, str, str]],
) -> StoredObject:
    """Record the parts sent (`record_parts`), then complete the upload."""
    upload = record_parts(session, store, object_id, upload_id, parts, completing=True)
    session.flush()
    return _complete(session, store, upload)


def cancel_upload(session: Session, store: ObjectStore, object_id: str) -> None:
    upload = get_upload(session, object_id)
    store.abort(object_id, upload.upload_id)
    session.execute(delete(UploadPart).where(UploadPart.upload_id == upload.upload_id))
    session.delete(upload)
    session.flush()


def ingest(
    session: Session, store: ObjectStore, object_id: str, path: Path, part_size: int
) -> StoredObject:
    """Put a local file into the store as a finished object, with its MD5 and part MD5s."""
    size = path.stat().st_size
    whole = hashlib.md5()
    part_md5s = []
    with open(path, "rb") as f:
        for _, length in part_layout(size, part_size):
            part = hashlib.md5()
            left = length
            while left:
                chunk = f.read(min(left, 8 * 1024 * 1024))
                if not chunk:
                    raise ValueError(f"{path} shrank while being read")
                part.update(chunk)
                whole.update(chunk)
                left -= len(chunk)
            part_md5s.append(part.hexdigest())
    store.put_file(object_id, path)
    obj = session.get(StoredObject, object_id) or StoredObject(object_id=object_id)
    obj.size, obj.md5, obj.part_size = size, whole.hexdigest(), effective_part_size(size, part_size)
    obj.part_md5s, obj.upload_id, obj.last_modified = part_md5s, object_id, utcnow()
    session.add(obj)
    store.write_meta(object_id, meta(obj))
    return obj


def meta(obj: StoredObject) -> dict:
    """What the original keeps in `data/<id>.meta`: the spec with each part's MD5."""
    parts = [
        Part(partNumber=n, partSize=size, offset=off, sourceMd5=md5)
        for n, ((off, size), md5) in enumerate(
            zip(part_layout(obj.size, obj.part_size), obj.part_md5s), 1
        )
    ]
    return to_wire(
        ObjectSpecification(
            objectKey=f"data/{obj.object_id}",
            objectId=obj.object_id,
            uploadId=obj.upload_id,
            parts=parts,
            objectSize=obj.size,
            objectMd5=obj.md5,
        )
    )


def cancel_all_uploads(session: Session, store: ObjectStore) -> int:
    """Abort every upload in progress (Score's POST /upload/cancel); returns how many."""
    object_ids = list(session.scalars(select(Upload.object_id)))
    for object_id in object_ids:
        cancel_upload(session, store, object_id)
    return len(object_ids)


def object_exists(session: Session, object_id: str) -> bool:
    return session.get(StoredObject, object_id) is not None
