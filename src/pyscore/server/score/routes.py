"""Score-compatible storage API: download specifications, multipart uploads, listing, ping."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from pyscore.server import audit, metadata, objects
from pyscore.server.auth import Action, authorize, readable_studies
from pyscore.server.errors import ApiError, bad_request, repeated, repeats
from pyscore.server.tables import File
from pyscore.server.web.deps import (
    PlatformDep,
    PrincipalDep,
    SessionDep,
    SignerDep,
    batch_limit,
    body_schema,
    extension,
    finish_limit,
    json_body,
    json_bytes,
    quick_read,
)
from pyscore.wire.batch import (
    ACCEPT_HEADER,
    ANSWER_PARTS,
    SPECS_PATH,
    UNCUT_PARTS,
    UPLOAD_FINISH_PATH,
    UPLOAD_START_PATH,
    SpecBatchAnswer,
    SpecBatchRequest,
    UploadFinishAnswer,
    UploadFinishRequest,
    UploadStartAnswer,
    UploadStartRequest,
    takes_partial,
)
from pyscore.wire.score import ListingEntry, ObjectSpecification, UploadProgress

router = APIRouter(tags=["storage"])


def score_dict(obj: ObjectSpecification | UploadProgress) -> dict[str, Any]:
    """What the original's Jackson writes: every field, nulls included (a download part's
    `md5`, a missing `objectMd5`), except a part's `sourceMd5`, which is left out unless set."""
    body = asdict(obj)
    for part in body["parts"]:
        if part["sourceMd5"] is None:
            del part["sourceMd5"]
    return body


def score_json(obj: ObjectSpecification | UploadProgress) -> JSONResponse:
    return JSONResponse(score_dict(obj))


@router.get("/download/ping", response_class=PlainTextResponse)
def ping(signer: SignerDep, who: PrincipalDep) -> str:
    """A signed URL of the sentinel object. Open to all, but a bad token is refused (401)
    here as by the original, so `score-client` notices it before any download."""
    return objects.ping_url(signer)


@router.get("/profile", response_class=PlainTextResponse)
def profile() -> str:
    return "s3"


@router.get("/download/{object_id}", response_model=ObjectSpecification)
async def download(
    object_id: str,
    p: PlatformDep,
    who: PrincipalDep,
    signer: SignerDep,
    offset: int = 0,
    length: int = -1,
    external: bool = False,
    exclude_urls: bool = Query(False, alias="exclude-urls"),
) -> Response:
    # The hottest route: one query on a plain connection (no ORM session), no thread hop
    # with SQLite (see deps.quick_read), and the answer encoded at once.
    def work() -> Response:
        with p.db.reading() as conn:
            r = objects.readable(conn, object_id)
        spec = objects.object_download(
            who, signer, r, object_id, offset, length, external, exclude_urls
        )
        return json_bytes(objects.spec_json(spec))

    return await quick_read(p, work)


@router.post(
    SPECS_PATH,
    response_model=SpecBatchAnswer,
    openapi_extra={
        **body_schema(SpecBatchRequest),
        **extension("batch lookups, advertised as Pyscore-Batch"),
    },
)
def download_batch(
    who: PrincipalDep,
    signer: SignerDep,
    p: PlatformDep,
    body: SpecBatchRequest = Depends(json_body(SpecBatchRequest, batch_limit)),
) -> Response:
    """pyscore's extension (advertised as `Pyscore-Batch: max=<n>` on every answer): the
    download specifications of many objects in one request, each with its own status: the
    specification, or the refusal `GET /download/{id}` would answer (checked per object by
    the same rules), in the order asked. More than `batch_max_ids` objects: 413."""
    within_batch_max(p, len(body.objects))
    with p.db.reading() as conn:
        found = objects.readables(conn, [w.objectId for w in body.objects])
    return json_bytes({"results": objects.download_specs(found, signer, who, body.objects)})


def within_batch_max(p: PlatformDep, count: int) -> None:
    limit = p.settings.batch_max_ids
    if count > limit:
        raise ApiError(
            413, "batch.too.large", f"A batch may ask for at most {limit} objects, not {count}"
        )


@router.get(
    "/listing",
    response_model=list[ListingEntry],
    openapi_extra=extension(
        "an anonymous caller gets the open files (the original: 401); `names=true` adds "
        "each file's gnosId and fileName"
    ),
)
def listing(s: SessionDep, who: PrincipalDep, p: PlatformDep, names: bool = False) -> Response:
    """What the caller may read. Unlike the original (401 without a token), an anonymous
    caller gets the open files: a deliberate extension, as open files need no token. The
    answer is streamed as the database reads it (a million objects are ~100 MB of JSON).
    With `names=true` (pyscore's extension) each entry also names its file (`gnosId`,
    `fileName`): all a mount needs, in one request rather than beside every entity."""
    readable = readable_studies(who, metadata.study_ids(s))
    if readable is None or readable:  # controlled files are listed: recorded
        studies = "every study" if readable is None else " ".join(sorted(readable))
        audit.decided("listing", True, reason=studies)

    def body() -> Iterator[bytes]:
        import msgspec

        with p.db.streaming(objects.LISTING_BATCH, whole=True) as conn:
            yield b"["
            comma = b""
            for batch in objects.listing_batches(conn, readable, names=names):
                if batch:
                    yield comma + msgspec.json.encode(batch)[1:-1]
                    comma = b","
            yield b"]"

    return StreamingResponse(body(), media_type="application/json")


def part_number_within(number: int) -> None:
    if not 1 <= number <= objects.MAX_PARTS:
        raise bad_request(
            "upload.part.number", f"Part number {number} is not in 1..{objects.MAX_PARTS}"
        )


def _writable(
    s: SessionDep, who: PrincipalDep, object_id: str, what: str, event: str | None = None
) -> File:
    """The file, once the caller may write it (`event`: the grant is recorded as such)."""
    f = metadata.get_file(s, object_id)
    authorize(
        who,
        Action.WRITE,
        f.study_id,
        what=f"{what} {f.file_name}",
        object_id=object_id,
        event=event,
    )
    return f


# Registered before the routes of `/upload/{object_id}/...`, which these paths would match.
@router.post(
    UPLOAD_START_PATH,
    response_model=UploadStartAnswer,
    openapi_extra={
        **body_schema(UploadStartRequest),
        **extension("batch uploads, advertised as Pyscore-Batch"),
    },
)
def start_batch(
    s: SessionDep,
    who: PrincipalDep,
    signer: SignerDep,
    p: PlatformDep,
    body: UploadStartRequest = Depends(json_body(UploadStartRequest, batch_limit)),
    accept: str | None = Header(
        None,
        alias=ACCEPT_HEADER,
        description="`partial`: the client asks again for the uploads an answer leaves out",
    ),
) -> Response:
    """pyscore's extension (wire/batch.py): many uploads begun in one request, each as the
    original client's exists + status + initiate calls would decide, each with its own
    status; an object named again is refused (400). More than `batch_max_ids` uploads: 413.
    With `Pyscore-Batch-Accept: partial` the answer stops before the upload that would take
    it past ANSWER_PARTS part URLs (never at the first; that one is not begun); without it,
    uploads that would take more than UNCUT_PARTS part URLs are refused whole (413)."""
    within_batch_max(p, len(body.uploads))
    part_size, cut = p.settings.part_size, takes_partial(accept)
    first_sizes = {w.objectId: w.fileSize for w in reversed(body.uploads)}
    if not cut:
        within_uncut(sum(objects.part_count(n, part_size) for n in first_sizes.values()))
    results: list[dict[str, Any]] = []
    room = ANSWER_PARTS
    for w, again in zip(body.uploads, repeats(w.objectId for w in body.uploads)):
        try:
            if again:
                raise repeated(w.objectId)
            f = _writable(s, who, w.objectId, "upload", "upload.initiate")
            if cut and results and objects.part_count(w.fileSize, part_size) > room:
                audit.failed(w.objectId, 413)  # granted, not begun: asked again later
                break
            progress, resumed = objects.start_upload(
                s, signer, f, w.fileSize, w.md5, w.overwrite, part_size
            )
        except ApiError as exc:
            results.append(objects.refusal_json(w.objectId, exc))
            continue
        room -= len(progress.parts)
        results.append({**score_dict(progress), "status": 200, "resumed": resumed})
    return json_bytes({"results": results})


def within_uncut(parts: int) -> None:
    if parts > UNCUT_PARTS:
        raise ApiError(
            413,
            "batch.too.large",
            f"These uploads would take {parts} part URLs; a batch of a client that does not "
            f"send '{ACCEPT_HEADER}: partial' (and ask again for what an answer leaves out) "
            f"may take at most {UNCUT_PARTS}",
        )


@router.post(
    UPLOAD_FINISH_PATH,
    response_model=UploadFinishAnswer,
    openapi_extra={
        **body_schema(UploadFinishRequest),
        **extension("batch uploads, advertised as Pyscore-Batch"),
    },
)
def finish_batch(
    s: SessionDep,
    who: PrincipalDep,
    p: PlatformDep,
    body: UploadFinishRequest = Depends(json_body(UploadFinishRequest, finish_limit)),
) -> Response:
    """pyscore's extension (wire/batch.py): many uploads' sent parts recorded (each checked
    against the store as `POST /upload/{id}/parts` checks it) and the uploads completed, each
    with its own status; an object named again, or a part listed again, is refused (400).
    More than `batch_max_ids` uploads: 413."""
    within_batch_max(p, len(body.uploads))
    results: list[dict[str, Any]] = []
    for done, again in zip(body.uploads, repeats(d.objectId for d in body.uploads)):
        try:
            if again:
                raise repeated(done.objectId)
            _writable(s, who, done.objectId, "upload", "upload.complete")
            for part in done.parts:
                part_number_within(part.partNumber)
            objects.finish_upload(
                s,
                p.store,
                done.objectId,
                done.uploadId,
                [(part.partNumber, part.md5, part.etag) for part in done.parts],
            )
        except ApiError as exc:
            results.append(objects.refusal_json(done.objectId, exc))
            continue
        results.append({"objectId": done.objectId, "status": 200})
    return json_bytes({"results": results})


@router.post("/upload/{object_id}/uploads", response_model=ObjectSpecification)
def initiate(
    object_id: str,
    fileSize: int,
    s: SessionDep,
    who: PrincipalDep,
    signer: SignerDep,
    p: PlatformDep,
    overwrite: bool = False,
    md5: str | None = None,
) -> JSONResponse:
    f = _writable(s, who, object_id, "upload", "upload.initiate")
    return score_json(
        objects.initiate_upload(s, signer, f, fileSize, md5, overwrite, p.settings.part_size)
    )


@router.post("/upload/{object_id}/parts")
def finalize_part(
    object_id: str,
    uploadId: str,
    partNumber: int,
    md5: str,
    etag: str,
    s: SessionDep,
    who: PrincipalDep,
    p: PlatformDep,
) -> None:
    _writable(s, who, object_id, "upload")
    part_number_within(partNumber)
    objects.record_parts(s, p.store, object_id, uploadId, [(partNumber, md5, etag)])


@router.delete("/upload/{object_id}/parts")
def delete_part(
    object_id: str, uploadId: str, partNumber: int, s: SessionDep, who: PrincipalDep
) -> None:
    _writable(s, who, object_id, "upload")
    part_number_within(partNumber)
    objects.delete_part(s, object_id, uploadId, partNumber)


@router.post("/upload/cancel")
def cancel_all(s: SessionDep, who: PrincipalDep, p: PlatformDep) -> None:
    authorize(who, Action.ADMIN, what="cancel every upload", event="upload.cancel.all")
    objects.cancel_all_uploads(s, p.store)


@router.post("/upload/{object_id}/recovery")
def recovery(
    object_id: str, fileSize: int, s: SessionDep, who: PrincipalDep, signer: SignerDep
) -> None:
    _writable(s, who, object_id, "upload")
    objects.upload_status(s, signer, object_id, fileSize)


@router.get("/upload/{object_id}/status", response_model=UploadProgress)
def status(
    object_id: str, s: SessionDep, who: PrincipalDep, signer: SignerDep, fileSize: int | None = None
) -> JSONResponse:
    _writable(s, who, object_id, "upload")
    return score_json(objects.upload_status(s, signer, object_id, fileSize))


@router.post("/upload/{object_id}")
def complete(
    object_id: str, uploadId: str, s: SessionDep, who: PrincipalDep, p: PlatformDep
) -> None:
    _writable(s, who, object_id, "upload", "upload.complete")
    objects.complete_upload(s, p.store, object_id, uploadId)


@router.get("/upload/{object_id}")
def exists(object_id: str, s: SessionDep, who: PrincipalDep) -> bool:
    _writable(s, who, object_id, "check")
    return objects.object_exists(s, object_id)


@router.delete("/upload/{object_id}")
def cancel(object_id: str, s: SessionDep, who: PrincipalDep, p: PlatformDep) -> None:
    _writable(s, who, object_id, "cancel the upload of", "upload.cancel")
    objects.cancel_upload(s, p.store, object_id)
