"""Errors as HTTP answers, in each API's own shape.

Song's shape is the default (the overture-song SDK refuses anything else); GA4GH routes answer
in their own spec's shape. No API answers an error in HTML (only the web page's file pages do,
to a browser: portal/routes.py). Domain code raises
`pyscore.server.errors.ApiError`; only this module turns it into a response.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from pyscore.server import db
from pyscore.server.errors import ApiError, Unavailable
from pyscore.wire.htsget import MEDIA_TYPE


# -- what the OpenAPI document declares of errors -------------------------------------------
@dataclass
class SongError:
    errorId: str
    httpStatusCode: int
    httpStatusName: str
    requestUrl: str
    datetime: str
    timestamp: int
    message: str
    debugMessage: str
    stackTrace: list[str]


@dataclass
class HtsgetErrorDetail:
    error: str
    message: str


@dataclass
class HtsgetError:
    htsget: HtsgetErrorDetail


@dataclass
class DrsError:
    msg: str
    status_code: int


WHY = {
    400: "Malformed or refused request (a final refusal: not worth retrying)",
    401: "No valid access token (missing, unknown, revoked or expired)",
    403: "The token lacks the scope the message names",
    404: "No such resource",
    409: "Conflicts with the current state (Song's answers)",
    413: "Request body over the server's limit",
    503: "Server busy, or a dependency (database, object store) unavailable: retry after "
    "Retry-After seconds",
}


def documented(model: type, codes: tuple[int, ...] = tuple(WHY), media: str = "") -> dict:
    """The `responses` of a router: each error status with its body's schema."""
    out: dict = {}
    for code in codes:
        entry: dict = {"description": WHY[code], "model": model}
        # errors are JSON even on routes that answer text (the schema is the model's)
        ref = {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
        entry["content"] = {media or "application/json": ref}
        if code == 503:
            entry["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
        out[code] = entry
    return out


def request_url(request: Request) -> str:
    """The full URL asked for, under `public_url` when one is set (the Host header is then
    never echoed)."""
    platform = getattr(request.app.state, "platform", None) if "app" in request.scope else None
    public = platform.settings.public_url.rstrip("/") if platform else ""
    if not public:
        return str(request.url)
    query = request.url.query
    return public + request.url.path + (f"?{query}" if query else "")


def song_body(request: Request, error: ApiError) -> dict:
    """SongError, field for field: `timestamp` in epoch milliseconds (a long), `datetime` the
    same instant in ISO form in the server's zone, `requestUrl` the full URL with its query,
    as Song's handler writes them."""
    millis = int(time.time() * 1000)
    return {
        "errorId": error.error_id,
        "httpStatusCode": error.status,
        "httpStatusName": HTTPStatus(error.status).name,
        "requestUrl": request_url(request),
        "datetime": datetime.fromtimestamp(millis / 1000).astimezone().isoformat(),
        "timestamp": millis,
        "message": error.message,
        "debugMessage": "",
        "stackTrace": [],
    }


HTSGET_ERRORS = {
    400: "InvalidInput",
    401: "InvalidAuthentication",
    403: "PermissionDenied",
    404: "NotFound",
    413: "PayloadTooLarge",
}


def render(request: Request, error: ApiError) -> JSONResponse:
    path = request.url.path
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    if isinstance(error, Unavailable):
        headers = {"Retry-After": str(error.retry_after)}
    if path.startswith("/htsget/"):
        kind = (
            error.error_id
            if error.error_id[:1].isupper()
            else HTSGET_ERRORS.get(error.status, "InvalidInput")
        )
        body: dict = {"htsget": {"error": kind, "message": error.message}}
        return JSONResponse(
            body,
            error.status,
            headers=headers,
            media_type=MEDIA_TYPE,
        )
    if path.startswith("/ga4gh/drs/"):
        return JSONResponse(
            {"msg": error.message, "status_code": error.status}, error.status, headers=headers
        )
    return JSONResponse(song_body(request, error), error.status, headers=headers)


def unavailable(exc: BaseException) -> Unavailable | None:
    """The 503 for a failure that says a dependency is away, not that the request or our
    code is wrong; None for any other failure."""
    if db.outage(exc):
        return Unavailable(
            "database", "The database is unavailable; retry after Retry-After seconds"
        )
    return None


def cause(exc: BaseException) -> str:
    """An exception in one short line (its type and the first line of its text)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200] if lines else ''}"


class Outages:
    """What an operator reads of a dependency that is away: one line on stderr when
    requests start meeting it, then at most one every `every` seconds while they go on,
    with how many met it meanwhile; never a traceback per request. `count` (a metric) is
    called once per request answered 503 for it. Used on the event loop only."""

    def __init__(self, count: Callable[[str], None] | None = None, every: float = 10.0) -> None:
        self.count, self.every = count, every
        self.last: dict[str, tuple[float, int]] = {}  # dependency -> (last line, since)

    def met(self, request: Request, error: Unavailable, why: str) -> None:
        if self.count is not None:
            self.count(error.dependency)
        now = time.monotonic()
        said, since = self.last.get(error.dependency, (-self.every, 0))
        if now - said < self.every:
            self.last[error.dependency] = (said, since + 1)
            return
        self.last[error.dependency] = (now, 0)
        more = f"; {since} more answered so since the last line" if since else ""
        print(
            f"pyscore: {error.dependency.replace('_', ' ')} unavailable ({why}): "
            f"{request.method} {request.url.path[:200]} answered 503, Retry-After "
            f"{error.retry_after}{more}",
            file=sys.stderr,
            flush=True,
        )


def install(app: FastAPI, outages: Outages | None = None) -> None:
    """Route every failure, including framework ones, through `render`; a dependency that
    is away through `outages` (see Outages) as a 503 with Retry-After."""
    outages = outages or Outages()

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        if isinstance(exc, Unavailable):
            outages.met(request, exc, cause(exc.__cause__ or exc))
        return render(request, exc)

    # Answered in ExceptionMiddleware, which (unlike the catch-all below) does not raise the
    # exception again for the ASGI server to log with its traceback.
    @app.exception_handler(SQLAlchemyError)
    async def _dependency(request: Request, exc: Exception) -> JSONResponse:
        error = unavailable(exc)
        if error is None:
            raise exc  # a bug or a refused statement: the catch-all's 500 and traceback
        outages.met(request, error, cause(exc))
        return render(request, error)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error_id = {
            404: "not.found",
            405: "method.not.allowed",
            413: "payload.too.large",
        }.get(exc.status_code, "http.error")
        response = render(request, ApiError(exc.status_code, error_id, str(exc.detail)))
        response.headers.update(exc.headers or {})  # e.g. Allow on a 405
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = f"Invalid request: {where}: {first.get('msg', 'malformed')}"
        return render(request, ApiError(400, "malformed.parameter", message))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        traceback.print_exception(type(exc), exc, exc.__traceback__)
        return render(request, ApiError(500, "unknown.error", f"Internal error: {exc!r}"[:300]))


# -- answers of the middlewares that shed or refuse requests ---------------------------
def busy(scope: dict, retry_after: int) -> JSONResponse:
    """The answer to a request shed by admission control."""
    response = render(
        Request(scope),
        ApiError(503, "server.busy", f"The server is busy; retry in {retry_after} s (Retry-After)"),
    )
    response.headers["Retry-After"] = str(retry_after)
    return response


def wrong_host(scope: dict, host: str) -> JSONResponse:
    error = ApiError(
        400,
        "host.not.allowed",
        f"This server does not answer for host {host[:100]!r}; its operator can set "
        "public_url, or add the name to allowed_hosts",
    )
    # described by the address it reached, not by the Host refused
    unnamed = {**scope, "headers": [h for h in scope["headers"] if h[0] != b"host"]}
    return render(Request(unnamed), error)


def too_large(scope: dict) -> JSONResponse:
    limit = scope["app"].state.platform.settings.max_body_bytes
    error = ApiError(
        413,
        "payload.too.large",
        f"The request body is larger than the server's limit of {limit} bytes",
    )
    response = render(Request(scope), error)
    response.headers["Connection"] = "close"  # the rest of the body is not read
    return response
