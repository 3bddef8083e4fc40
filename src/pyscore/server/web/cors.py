"""CORS for browser clients (igv.js, igv-web, notebook widgets): pages of other origins read
htsget, DRS, the metadata reads and the local store's signed URLs, if the operator lists them
in `cors_origins` (off by default).

What those clients trip over when a server gets CORS half right (igv.js issues 1005, 1293,
1468, 1570, 2023), answered here in one place for every covered route:
- the preflight (OPTIONS + Access-Control-Request-Method) is answered 204 before any route,
  token or admission slot, with a Max-Age so a viewer's many ranged reads need few of them;
- the data URLs (the local store's signed ranges, htsget's data blocks) answer it as the
  ticket does, and every status (200, 206, 304, 403, 404, 416, 5xx) carries the echoed origin;
- Content-Range, Content-Length, Accept-Ranges and ETag are exposed, so a reader can tell a
  206 from a 200 and know the object's size.
Credentials (cookies) are never allowed across origins: a page of another origin sends its
own bearer token. An origin outside the list gets no CORS header at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pyscore.server.web.edge import header

READS = frozenset({"GET", "HEAD"})
# Path prefixes that answer CORS, and the methods a page of an allowed origin may use there.
# Song's writes (POST/PUT on /studies/...) and the storage API's uploads stay same-origin.
COVERED = (
    ("/htsget/", READS | {"POST"}),  # tickets (GET, or POST with a JSON body)
    ("/ga4gh/drs/", READS | {"POST"}),
    ("/store/objects/", READS),  # the local store's signed GETs
    ("/studies/", READS),  # Song's metadata reads
    ("/schemas", READS),
    ("/schema/", READS),
    ("/entities", READS),
    ("/isAlive", READS),
)
ALLOW_HEADERS = ("Authorization", "Range", "Cache-Control", "Content-Type")
EXPOSE_HEADERS = ("Content-Range", "Content-Length", "Accept-Ranges", "ETag", "Content-Encoding")
MAX_AGE = 7200  # seconds; Chromium caps a preflight's life at 2 h, Firefox at 24 h
ANY = "*"


def methods_for(path: str) -> frozenset[str] | None:
    """The methods a cross-origin page may use on `path`, or None: no CORS there."""
    return next((methods for prefix, methods in COVERED if path.startswith(prefix)), None)


def normalize_origin(entry: str) -> str:
    """`scheme://host[:port]` as browsers send it in Origin (lower case, no default port, no
    slash); `*` stays `*`. Anything else (a path, a query, another scheme) is a ValueError."""
    entry = entry.strip()
    if entry == ANY:
        return ANY
    parts = urlsplit(entry.rstrip("/"))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"cors_origins: {entry!r} is not an origin like https://viewer.example.org"
        )
    if parts.path or parts.query or parts.fragment or parts.username:
        raise ValueError(f"cors_origins: {entry!r} has more than scheme://host[:port]")
    host = parts.hostname
    if ":" in host:  # IPv6
        host = f"[{host}]"
    default = {"http": 80, "https": 443}[parts.scheme]
    port = "" if parts.port in (None, default) else f":{parts.port}"
    return f"{parts.scheme}://{host}{port}"


class Origins:
    """The allow-list: exact origins, or `*` for any (public data only: the token a page
    sends is still checked, but any site may then ask with it)."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.exact = {normalize_origin(e) for e in entries if e.strip()}
        self.any = ANY in self.exact
        self.exact.discard(ANY)

    def __bool__(self) -> bool:
        return self.any or bool(self.exact)

    def allows(self, origin: str | None) -> bool:
        if not origin or origin == "null":
            return False
        return self.any or origin.lower() in self.exact

    def listed(self) -> list[str]:
        """The entries, as a bucket CORS rule names them."""
        return [ANY] if self.any else sorted(self.exact)


def bucket_rule(origins: Origins) -> dict:
    """The S3 bucket CORS rule that makes presigned URLs answer as our own routes do
    (`score-server cors apply` puts it on the configured bucket)."""
    return {
        "CORSRules": [
            {
                "AllowedOrigins": origins.listed(),
                "AllowedMethods": sorted(READS),
                "AllowedHeaders": list(ALLOW_HEADERS),
                "ExposeHeaders": list(EXPOSE_HEADERS),
                "MaxAgeSeconds": MAX_AGE,
            }
        ]
    }


class Cors:
    """ASGI middleware, outside admission control and the routes: preflights of allowed
    origins are answered here, and every answer on a covered path gets `Vary: Origin` (and,
    for an allowed origin and method, the CORS headers)."""

    def __init__(self, app: ASGIApp, origins: Origins) -> None:
        self.app, self.origins = app, origins
        self.expose = ", ".join(EXPOSE_HEADERS).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        methods = methods_for(scope.get("path", "")) if scope["type"] == "http" else None
        if methods is None:
            await self.app(scope, receive, send)
            return
        origin = header(scope, b"origin")
        allowed = self.origins.allows(origin)
        method = scope["method"]
        wanted = (header(scope, b"access-control-request-method") or "").upper()
        if method == "OPTIONS" and allowed and wanted in methods:
            await self._preflight(send, origin or "", methods)
            return
        extra = [(b"vary", b"Origin")]
        if allowed and method in methods:
            extra += [
                (b"access-control-allow-origin", (origin or "").encode("latin-1")),
                (b"access-control-expose-headers", self.expose),
            ]

        async def with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"vary"]
                vary = [v for k, v in message.get("headers", []) if k.lower() == b"vary"]
                if vary:  # keep what the route varies on, and add Origin
                    extra[0] = (b"vary", b", ".join([*vary, b"Origin"]))
                message = {**message, "headers": headers + extra}
            await send(message)

        await self.app(scope, receive, with_cors)

    async def _preflight(self, send: Send, origin: str, methods: frozenset[str]) -> None:
        headers = [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-methods", ", ".join(sorted(methods)).encode()),
            (b"access-control-allow-headers", ", ".join(ALLOW_HEADERS).encode()),
            (b"access-control-max-age", str(MAX_AGE).encode()),
            (b"vary", b"Origin"),
            (b"content-length", b"0"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
