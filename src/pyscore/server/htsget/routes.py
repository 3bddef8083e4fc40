"""htsget's HTTP face: service-info and ticket routes for reads and variants (GET and POST)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from pyscore.server import audit, metadata, objects
from pyscore.server.errors import ApiError
from pyscore.server.htsget.query import KINDS, Query, invalid, parse_query
from pyscore.server.htsget.tickets import ticket
from pyscore.server.tables import File
from pyscore.server.web.deps import PrincipalDep, SessionDep, SignerDep
from pyscore.wire.htsget import MEDIA_TYPE, Ticket, ticket_to_json

router = APIRouter(tags=["htsget"])


def readable(object_id: str, s: SessionDep, who: PrincipalDep) -> File:
    """The published file a caller may read (a dependency, so that a POST's body is read
    only once the caller is allowed)."""
    try:
        f = metadata.get_file(s, object_id)
    except ApiError:
        raise invalid("NotFound", f"no object {object_id}", 404) from None
    objects.authorize_read(s, who, f, "htsget")
    return f


ReadableFile = Annotated[File, Depends(readable)]


class TicketResponse(JSONResponse):
    media_type = MEDIA_TYPE


def _answer(session, signer, kind: str, f: File, q: Query) -> JSONResponse:
    answer = ticket(session, signer, kind, f, q)
    audit.ranges(stored_ranges(answer))
    return TicketResponse(ticket_to_json(answer))


def stored_ranges(answer: Ticket) -> list[tuple[int, int]]:
    """(offset, length) of the stored object's bytes a ticket's URLs hand out (the inline
    blocks are re-made bytes, not the object's)."""
    out = []
    for u in answer.urls:
        rng = (u.headers or {}).get("Range", "")
        if rng.startswith("bytes="):
            lo, _, hi = rng[len("bytes=") :].partition("-")
            out.append((int(lo), int(hi) - int(lo) + 1))
    return out


SERVICE_INFO = {
    "id": "org.pyscore.htsget",
    "name": "pyscore htsget",
    "type": {"group": "org.ga4gh", "artifact": "htsget", "version": "1.3.0"},
    "organization": {"name": "pyscore", "url": "https://pypi.org/project/pyscore/"},
    "version": "1.3.0",
}


async def json_body(request: Request) -> dict:
    try:
        data = await request.json()
    except (ValueError, RecursionError):
        raise invalid(
            "InvalidInput", "the request body is not JSON (or nested too deeply)"
        ) from None
    if not isinstance(data, dict):
        raise invalid("InvalidInput", "the request body must be a JSON object")
    if request.query_params:
        raise invalid("InvalidInput", "POST requests take no query parameters")
    return data


def _routes(kind: str) -> None:
    @router.get(f"/htsget/{kind}/service-info", name=f"{kind}_service_info")
    def service_info() -> JSONResponse:
        return JSONResponse(
            {
                **SERVICE_INFO,
                "htsget": {
                    "datatype": kind,
                    "formats": list(KINDS[kind]),
                    "fieldsParametersEffective": False,
                    "tagsParametersEffective": False,
                },
            }
        )

    @router.get(
        f"/htsget/{kind}/{{object_id}}", name=f"{kind}_ticket", response_class=TicketResponse
    )
    def get(
        object_id: str, request: Request, s: SessionDep, f: ReadableFile, signer: SignerDep
    ) -> JSONResponse:
        return _answer(s, signer, kind, f, parse_query(kind, dict(request.query_params)))

    @router.post(
        f"/htsget/{kind}/{{object_id}}", name=f"{kind}_ticket_post", response_class=TicketResponse
    )
    def post(
        object_id: str,
        s: SessionDep,
        f: ReadableFile,
        data: Annotated[dict, Depends(json_body)],
        signer: SignerDep,
    ) -> JSONResponse:
        return _answer(s, signer, kind, f, parse_query(kind, data, body=True))


for _kind in KINDS:
    _routes(_kind)
