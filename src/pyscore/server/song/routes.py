"""Song-compatible metadata API, as the overture-song SDK, score-client and score-server call it.

Reads are open, as in Song; writes (a study's creation too) need the study's WRITE scope or
a system scope (song.WRITE, score.WRITE), registering analysis types Song's system scope
song.WRITE (scopes.py). Logic lives in metadata/; this module only speaks HTTP.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse, Response

from pyscore.server import metadata
from pyscore.server.auth import Action, authorize
from pyscore.server.errors import ApiError, bad_request
from pyscore.server.web.deps import (
    PlatformDep,
    PrincipalDep,
    SessionDep,
    batch_limit,
    body_schema,
    extension,
    json_bytes,
)
from pyscore.server.web.deps import json_body as capped_body
from pyscore.wire.batch import ENTITIES_PATH, EntityBatchAnswer, EntityBatchRequest
from pyscore.wire.song import Entity

router = APIRouter(tags=["metadata"])


async def json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw) if raw.strip() else None
    except (UnicodeDecodeError, ValueError) as exc:  # ValueError: also numbers of >4300 digits
        raise ApiError(
            422, "payload.parsing", f"The request body is not valid JSON: {exc}"[:300]
        ) from None
    except RecursionError:
        raise ApiError(422, "payload.parsing", "The request body is nested too deeply") from None


INT32 = 2**31 - 1


def within(name: str, value: int | None, lo: int, hi: int = INT32) -> None:
    """Refuse a number outside what the database can hold or a page could mean (400)."""
    if value is not None and not lo <= value <= hi:
        raise bad_request("malformed.parameter", f"{name} must be within {lo}..{hi}")


Body = Annotated[Any, Depends(json_body)]


def allowed(action: Action, what: str, event: str | None = None) -> Any:
    """A dependency that authorizes the caller for `action` on the path's study (`what` is
    formatted with it), to be declared before a route's Body: FastAPI solves dependencies
    in order, so a refused caller's body is never read. With an `event`, the grant is
    recorded in the audit trail too (curated changes), naming the path's object."""

    def check(request: Request, who: PrincipalDep) -> None:
        params = request.path_params
        study_id = params.get("study_id")
        target = params.get("analysis_id") or params.get("object_id") or params.get("ids")
        authorize(
            who, action, study_id, what=what.format(study=study_id), object_id=target, event=event
        )

    return Depends(check)


StudyCreator = Annotated[None, allowed(Action.METADATA, "create study {study}")]


def _object(body: Any, what: str) -> dict:
    if not isinstance(body, dict):
        raise bad_request("malformed.parameter", f"The {what} must be a JSON object")
    return body


@router.get("/isAlive")
async def is_alive() -> bool:
    """On the event loop itself: no thread, no database, never queued (limits.py)."""
    return True


# -- studies ------------------------------------------------------------------------------
@router.get("/studies/all")
def all_studies(s: SessionDep) -> list[str]:
    return metadata.study_ids(s)


@router.get("/studies/{study_id}")
def get_study(study_id: str, s: SessionDep) -> dict:
    return metadata.study_json(metadata.get_study(s, study_id))


@router.post("/studies/{study_id}/")
@router.post("/studies/{study_id}", include_in_schema=False)
def create_study(study_id: str, s: SessionDep, _: StudyCreator, body: Body) -> dict:
    """Song's GenericMessage: `{"message": "Successfully created study '<id>'"}`."""
    study = metadata.create_study(s, study_id, _object(body, "study"))
    return metadata.message(f"Successfully created study '{study.study_id}'")


@router.get("/studies/{study_id}/all")
def study_all(study_id: str, s: SessionDep) -> dict:
    return metadata.study_with_all(s, study_id)


# -- analysis types -----------------------------------------------------------------------
def csv(text: str | None) -> list[str]:
    """A comma-separated query parameter's items (Song takes them so)."""
    return [item.strip() for item in (text or "").split(",") if item.strip()]


@router.get("/schemas")
def list_schemas(
    s: SessionDep,
    names: str | None = None,
    versions: str | None = None,
    hideSchema: bool = False,
    unrenderedOnly: bool = False,
    offset: int = 0,
    limit: int = 20,
    sort: str | None = None,
    sortOrder: str | None = None,
) -> dict:
    """Song's ListAnalysisTypes (`song-client list-analysis-types`): every version of every
    type, `offset` an element offset, sorted by `sort` (version, name) in `sortOrder`."""
    try:
        wanted_versions = [int(v) for v in csv(versions)]
    except ValueError:
        raise bad_request(
            "malformed.parameter", f"versions must be integers: {versions!r}"
        ) from None
    return metadata.list_analysis_types(
        s,
        csv(names) or None,
        wanted_versions or None,
        hide_schema=hideSchema,
        unrendered_only=unrenderedOnly,
        offset=offset,
        limit=limit,
        sort=csv(sort) or None,
        sort_order=sortOrder,
    )


@router.get("/schema/list", include_in_schema=False)
def list_schemas_legacy(s: SessionDep) -> dict:
    """The path the overture-song 5.0.0 SDK calls: the latest version of each type."""
    found = metadata.latest_analysis_types(s)
    return {"limit": len(found), "offset": 0, "count": len(found), "resultSet": found}


@router.get("/schemas/registration")
def registration_schema() -> dict:
    """The meta-schema a schema must satisfy to be registered (POST /schemas)."""
    return metadata.registration_schema()


@router.get("/schemas/{name}")
@router.get("/schema/{name}", include_in_schema=False)
def get_schema(
    name: str, s: SessionDep, version: int | None = None, unrenderedOnly: bool = False
) -> dict:
    within("version", version, 1)
    row = metadata.get_analysis_type(s, name, version)
    return metadata.analysis_type_json(row, unrendered=unrenderedOnly)


@router.post("/schemas")
def register_schema(
    s: SessionDep,
    _: Annotated[None, allowed(Action.SYSTEM, "register an analysis type")],
    body: Body,
) -> dict:
    body = _object(body, "analysis type registration")
    if not isinstance(body.get("name"), str):
        raise bad_request("malformed.parameter", "Body must be {name, schema, options?}")
    if body.get("schema") is None:
        raise bad_request("schema.violation", "Schema field cannot be null")
    options = body.get("options")
    if options is not None and not isinstance(options, dict):
        raise bad_request("malformed.parameter", "options must be {fileTypes: [...]}")
    row = metadata.register_analysis_type(s, body["name"], body["schema"], options)
    return metadata.analysis_type_json(row)


# -- submission and analyses --------------------------------------------------------------
@router.post("/submit/{study_id}")
def submit(
    study_id: str,
    s: SessionDep,
    _: Annotated[None, allowed(Action.METADATA, "submit to study {study}")],
    body: Body,
    allowDuplicates: bool = False,
) -> dict:
    analysis_id = metadata.submit(s, study_id, body, allowDuplicates)
    return {"analysisId": analysis_id, "status": "OK"}


@router.get("/studies/{study_id}/analysis/search/id")
def search_id(study_id: str, request: Request, s: SessionDep) -> list[dict]:
    """Song's IdSearch: donorId, specimenId, sampleId, fileId, submitterDonorId,
    submitterSpecimenId, submitterSampleId, each a case-insensitive regular expression."""
    return metadata.search_by_id(s, study_id, dict(request.query_params))


@router.post("/studies/{study_id}/analysis/search/id")
def search_id_post(study_id: str, s: SessionDep, body: Body) -> list[dict]:
    """Song's IdSearch with an IdSearchRequest body (donorId, specimenId, sampleId,
    objectId, submitterSampleId, submitterDonorIds, submitterSpecimenIds)."""
    request = _object({} if body is None else body, "IdSearchRequest")
    return metadata.search_by_id(s, study_id, request)


@router.get("/studies/{study_id}/analysis/search/info")
def search_info(
    study_id: str, request: Request, s: SessionDep, includeInfo: bool = False
) -> list[dict]:
    terms = {k: v for k, v in request.query_params.items() if k != "includeInfo"}
    return metadata.search_by_info(s, study_id, includeInfo, terms)


@router.get("/studies/{study_id}/analysis/paginated")
def analyses_paginated(
    study_id: str,
    s: SessionDep,
    analysisStates: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> dict:
    within("limit", limit, 1)
    within("offset", offset, 0)
    rows, total = metadata.list_analyses(
        s, study_id, metadata.parse_states(analysisStates), limit, offset
    )
    return {
        "analyses": metadata.analyses_json(s, rows),
        "totalAnalyses": total,
        "totalPages": -(-total // limit),
        "currentTotalAnalyses": len(rows),
        "hasNext": offset + len(rows) < total,
    }


@router.get("/studies/{study_id}/analysis")
def analyses(study_id: str, s: SessionDep, analysisStates: str | None = None) -> list[dict]:
    rows, _ = metadata.list_analyses(s, study_id, metadata.parse_states(analysisStates))
    return metadata.analyses_json(s, rows)


@router.get("/studies/{study_id}/analysis/{analysis_id}")
def get_analysis(study_id: str, analysis_id: str, s: SessionDep) -> dict:
    return metadata.analysis_json(s, metadata.get_analysis_row(s, study_id, analysis_id))


def _analysis_change(method: str, change: Any, event: str, doc: str) -> None:
    """PUT or PATCH of an analysis (Song answers 200 and nothing else). The caller is
    authorized before the body is read (keyword parameters are solved in order)."""
    guard = allowed(Action.METADATA, "update analyses of study {study}", event)

    def route(
        study_id: str,
        analysis_id: str,
        s: SessionDep,
        *,
        _: None = guard,
        body: Any = Depends(json_body),
    ) -> Response:
        change(s, study_id, analysis_id, body)
        return Response(status_code=200)

    route.__doc__ = doc
    router.add_api_route(
        "/studies/{study_id}/analysis/{analysis_id}", route, methods=[method], name=event
    )


_analysis_change(
    "PUT",
    metadata.update_analysis,
    "analysis.update",
    "Song's UpdateAnalysis: new dynamic data, checked against the analysisType it names.",
)
_analysis_change(
    "PATCH",
    metadata.patch_analysis,
    "analysis.patch",
    "Song's PatchUpdateAnalysis: a JSON merge patch (RFC 7396) of the dynamic data.",
)


@router.get("/studies/{study_id}/analysis/{analysis_id}/files")
def get_analysis_files(study_id: str, analysis_id: str, s: SessionDep) -> list[dict]:
    metadata.get_analysis_row(s, study_id, analysis_id)
    return [metadata.file_json(f) for f in metadata.analysis_files(s, analysis_id)]


def _state_change(action: str):
    def change(
        study_id: str,
        analysis_id: str,
        s: SessionDep,
        who: PrincipalDep,
        ignoreUndefinedMd5: bool = False,
    ) -> dict:
        authorize(
            who,
            Action.METADATA,
            study_id,
            what=f"{action} analyses of study {study_id}",
            object_id=analysis_id,
            event=action,
        )
        return metadata.change_state(s, study_id, analysis_id, action, ignoreUndefinedMd5)

    return change


for _action in ("publish", "unpublish", "suppress"):
    router.put(f"/studies/{{study_id}}/analysis/{_action}/{{analysis_id}}", name=_action)(
        _state_change(_action)
    )


# -- files --------------------------------------------------------------------------------
@router.get("/studies/{study_id}/files/{object_id}")
def get_file(study_id: str, object_id: str, s: SessionDep) -> dict:
    return metadata.file_json(metadata.get_file(s, object_id, study_id))


@router.put("/studies/{study_id}/files/{object_id}")
def update_file(
    study_id: str,
    object_id: str,
    s: SessionDep,
    _: Annotated[None, allowed(Action.METADATA, "update files of study {study}", "file.update")],
    body: Body,
    who: PrincipalDep,
) -> dict:
    body = _object(body, "file update")
    f = metadata.get_file(s, object_id, study_id)
    if body.get("fileAccess") in ("open", "controlled") and body["fileAccess"] != f.file_access:
        # who may read the bytes is decided by those who may read them: WRITE alone (which
        # is refused controlled bytes) must not open a file to everyone
        authorize(
            who,
            Action.READ,
            study_id,
            what=f"change who may read {f.file_name} (WRITE and READ are both needed)",
        )
    return metadata.update_file(s, study_id, object_id, body)


@router.delete("/studies/{study_id}/files/{ids}", response_class=PlainTextResponse)
def delete_files(
    study_id: str,
    ids: str,
    s: SessionDep,
    _: Annotated[None, allowed(Action.METADATA, "delete files of study {study}", "file.delete")],
) -> str:
    """Song's DeleteFiles (comma-separated objectIds, all or none): "OK"."""
    return metadata.delete_files(s, study_id, csv(ids))


# -- donors, specimens, samples -----------------------------------------------------------
def _entity_routes(kind: metadata.Kind, path: str) -> None:
    """Song's Read<Kind> and Delete<Kind>s (comma-separated ids, all or none; a donor goes
    with its specimens and samples, a specimen with its samples)."""

    def read(study_id: str, entity_id: str, s: SessionDep) -> dict:
        return metadata.read_entity(s, kind, study_id, entity_id)

    guard = allowed(Action.METADATA, f"delete {path} of study {{study}}", f"{kind.name}.delete")

    def remove(study_id: str, ids: str, s: SessionDep, _: None = guard) -> str:
        return metadata.delete_entities(s, kind, study_id, csv(ids))

    router.get(f"/studies/{{study_id}}/{path}/{{entity_id}}", name=f"read_{kind.name}")(read)
    router.delete(
        f"/studies/{{study_id}}/{path}/{{ids}}",
        response_class=PlainTextResponse,
        name=f"delete_{path}",
    )(remove)


for _kind, _path in (
    (metadata.DONOR, "donors"),
    (metadata.SPECIMEN, "specimens"),
    (metadata.SAMPLE, "samples"),
):
    _entity_routes(_kind, _path)


# -- export -------------------------------------------------------------------------------
@router.get("/export/studies/{study_id}")
def export_study(study_id: str, s: SessionDep) -> list[dict]:
    """Song's ExportStudy (`song-client export -s`): [{studyId, payloads}]."""
    return metadata.export_study(s, study_id)


@router.get("/export/analysis/{analysis_ids}")
def export_analyses(analysis_ids: str, s: SessionDep) -> list[dict]:
    """Song's ExportAnalysis (`song-client export -a`, comma-separated ids): one {studyId,
    payloads} per study."""
    return metadata.export_analyses(s, csv(analysis_ids))


# -- legacy entities ----------------------------------------------------------------------
@router.post(
    ENTITIES_PATH,
    response_model=EntityBatchAnswer,
    openapi_extra={
        **body_schema(EntityBatchRequest),
        **extension("batch lookups, advertised as Pyscore-Batch"),
    },
)
def entities_batch(
    p: PlatformDep,
    body: EntityBatchRequest = Depends(capped_body(EntityBatchRequest, batch_limit)),
) -> Response:
    """pyscore's extension (advertised as `Pyscore-Batch: max=<n>` on every answer): many
    entities in one request, each id with its own status (its entity, or the 404 of
    `GET /entities/{id}`), in the order asked; an id asked again is refused (400). More
    than `batch_max_ids` ids: 413."""
    limit = p.settings.batch_max_ids
    if len(body.ids) > limit:
        raise ApiError(
            413, "batch.too.large", f"A batch may ask for at most {limit} ids, not {len(body.ids)}"
        )
    with p.db.reading() as conn:  # no ORM session: a plain read (see score/routes.py)
        return json_bytes({"results": metadata.entities(conn, body.ids)})


@router.get("/entities/{object_id}", response_model=Entity)
def get_entity(object_id: str, s: SessionDep) -> dict:
    return metadata.entity(s, object_id)


ENTITY_PARAMS = {
    "id",
    "gnosId",
    "analysisId",
    "fileName",
    "projectCode",
    "access",
    "fields",
    "page",
    "size",
    "from",
    "before",
    "sort",
}


# The Java score-client's mount asks for `/entities/?fields=...`, its download for
# `/entities?gnosId=...`: both are answered directly, not with a redirect to the other.
@router.get("/entities/", include_in_schema=False)
@router.get("/entities")
def list_entities(request: Request, s: SessionDep, page: int = 0, size: int = 20) -> Response:
    params = request.query_params
    unknown = set(params) - ENTITY_PARAMS
    if unknown:
        raise bad_request(
            "illegal.query.parameter", f"Unknown query parameter(s) {sorted(unknown)}"
        )
    if not 0 <= page <= INT32 or not 1 <= size <= 10_000:
        raise bad_request(
            "malformed.parameter", f"page must be within 0..{INT32} and size within 1..10000"
        )
    # score-client repeats `fields=`; ARGO's gateway takes a comma list: accept both.
    fields = [f.strip() for v in params.getlist("fields") for f in v.split(",") if f.strip()]
    filters = {
        k: params[k] for k in ("id", "gnosId", "fileName", "projectCode", "access") if k in params
    }
    if "analysisId" in params:
        filters["gnosId"] = params["analysisId"]
    start, before = params.get("from"), params.get("before")  # pyscore's keyset extension
    return json_bytes(metadata.list_entities(s, filters, fields, page, size, start, before))
