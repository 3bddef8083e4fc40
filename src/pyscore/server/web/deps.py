"""The FastAPI dependencies every protocol's routes share: the platform, a database session,
the caller, the URL signer, and capped JSON bodies. Routes import these; nothing here imports
a route.

Dependencies that do no I/O are `async def`: FastAPI runs a plain `def` dependency in the
thread pool, a hop per dependency per request that cost more than the work of most.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, Any, Optional, TypeVar

from fastapi import Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from pyscore.server import audit
from pyscore.server.auth import Principal, principal_for
from pyscore.server.db import as_utc
from pyscore.server.errors import ApiError
from pyscore.server.objects import Signer
from pyscore.server.platform import Platform
from pyscore.server.tables import Token
from pyscore.wire.batch import FINISH_PARTS

T = TypeVar("T")


async def platform(request: Request) -> Platform:
    return request.app.state.platform


PlatformDep = Annotated[Platform, Depends(platform)]


def session(p: PlatformDep) -> Iterator[Session]:
    with p.db.session() as s:
        yield s


# scope="function": commit before the response goes out, so a client that got an answer sees
# its write on the very next request (FastAPI's default would commit after sending).
SessionDep = Annotated[Session, Depends(session, scope="function")]


def verified(p: Platform, authorization: str) -> Principal | None:
    """The token checked against the database (401 if unknown, revoked or expired), then
    believed for `token_cache_seconds` (see tokencache.py)."""
    external = p.identity.resolve if p.identity.configured else None
    with p.db.session() as s:
        who = principal_for(s, authorization, external)
        # our own tokens only: other issuers' bearers have their own caches (identity/)
        if who is not None and not who.issuer:
            token = s.get(Token, who.token_id)
            p.tokens.put(authorization, who, as_utc(token.expires_at) if token else None)
    return who


SIGN_IN_COOKIE = "score_token"  # the portal's sign-in: the token itself, HttpOnly
PORTAL_HEADER = "pyscore-portal"


def portal_bearer(request: Request) -> str | None:
    """The portal's sign-in cookie stands for its token on a read that the portal's own
    scripts make (the genome viewer asking htsget and DRS): GET or HEAD, carrying the
    `Pyscore-Portal` header. A page of another origin cannot add that header without a
    preflight, which CORS never allows for it, and no form or link can add it at all; the
    cookie itself is SameSite=Strict."""
    if request.method not in ("GET", "HEAD") or PORTAL_HEADER not in request.headers:
        return None
    token = request.cookies.get(SIGN_IN_COOKIE)
    return f"Bearer {token}" if token else None


async def principal(request: Request, p: PlatformDep) -> Principal | None:
    authorization = request.headers.get("authorization") or portal_bearer(request)
    if not authorization:
        audit.identified(audit.ANONYMOUS)
        return None
    who = p.tokens.get(authorization)
    if who is not None:
        audit.identified(who.token_id, who.user, who.issuer)
        return who
    return await run_in_threadpool(verified, p, authorization)


PrincipalDep = Annotated[Optional[Principal], Depends(principal)]


def base_url(request: Request) -> str:
    """Where clients reach this server: `public_url`, else this request's scheme and Host
    (checked by edge.HostCheck against the names of the listening address)."""
    public = request.app.state.platform.settings.public_url
    return (public or str(request.base_url)).rstrip("/")


async def signer(request: Request, p: PlatformDep) -> Signer:
    return Signer(
        p.store,
        base_url(request),
        p.settings.download_expiry_seconds,
        p.settings.upload_expiry_seconds,
    )


SignerDep = Annotated[Signer, Depends(signer)]


async def quick_read(p: Platform, work: Callable[[], T]) -> T:
    """Run a route's few-row read and the CPU work after it: on the event loop with SQLite
    (tens of microseconds, less than the hop to a thread and back), in the thread pool
    with a database across the network. `work` must only read: a write could wait for
    SQLite's write lock, and the whole process with it."""
    if p.db.local:
        return work()
    return await run_in_threadpool(work)


def json_bytes(body: Any) -> Response:
    """A JSON answer encoded at once (msgspec), not through pydantic and json.dumps."""
    import msgspec

    return Response(msgspec.json.encode(body), media_type="application/json")


def batch_limit(p: Platform) -> int:
    """A batch lookup's body: ~100 bytes an id, room for long ones, never over max_body_bytes."""
    return min(p.settings.max_body_bytes, 4096 + 512 * max(p.settings.batch_max_ids, 0))


def finish_limit(p: Platform) -> int:
    """A batch of finished uploads' body: as `batch_limit`, plus ~90 bytes for each of up to
    FINISH_PARTS parts (the most a client puts in one batch)."""
    return min(p.settings.max_body_bytes, batch_limit(p) + 160 * FINISH_PARTS)


def json_body(kind: type[T], limit: Callable[[Platform], int]) -> Callable[[Request], Awaitable[T]]:
    """A dependency reading a JSON body of `kind` (a wire dataclass, checked by msgspec) of at
    most `limit(platform)` bytes: 413 beyond, 400 if malformed. Declare the body in the
    route's OpenAPI with `body_schema(kind)`."""

    async def read(request: Request) -> T:
        import msgspec

        cap = limit(request.app.state.platform)
        # the rest of the body is not read, so the connection cannot serve another request
        too_large = HTTPException(
            413,
            f"The request body is larger than this call's limit of {cap} bytes",
            headers={"Connection": "close"},
        )
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared[:20]) > cap:
            raise too_large
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                raise too_large
            chunks.append(chunk)
        try:
            return msgspec.json.decode(b"".join(chunks), type=kind)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ApiError(400, "malformed.body", f"Invalid request body: {exc}") from None

    return read


EXTENSION_KEY = "x-pyscore-extension"


def extension(what: str) -> dict[str, Any]:
    """`openapi_extra` marking a route (or a behaviour of one) as pyscore's own, not the
    original's: clients and the generated API reference can tell them apart."""
    return {EXTENSION_KEY: what}


def body_schema(kind: type) -> dict[str, Any]:
    """`openapi_extra` declaring a required JSON request body of `kind` (its schema inline)."""
    from pydantic import TypeAdapter

    schema = TypeAdapter(kind).json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.rpartition("/")[2]])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline(schema)}},
        }
    }
