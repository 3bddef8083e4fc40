"""What the HTTP edge settles before any route: which proxy to believe, which Host names this
server answers for, and the headers that keep its pages out of other sites' frames.

- `trusted_proxies` (addresses or networks): only a peer among them may say, through
  X-Forwarded-Proto/-Host/-For, what scheme and host the client used and who the client is.
  Nobody else's X-Forwarded-* is read.
- Hosts: when `public_url` is set, every URL the server writes starts with it and the Host
  header is never echoed. When it is not, URLs are built from the Host header, which is then
  checked against `allowed_hosts` plus the names of the address the server listens on (a
  wildcard bind adds this machine's names and addresses), so a forged Host cannot reach a
  signed URL, the ping body or a page hint. `/isAlive` is never checked (load balancers).
- Methods: only GET, HEAD, POST, PUT, PATCH, DELETE and OPTIONS are served. granian passes
  any token as a method (up to ~390 KB), and metrics label and log lines name the method, so
  the other methods of IANA's registry (TRACE, CONNECT, QUERY, WebDAV's), which no route
  takes, are answered 405 and any other 501, before anything counts, logs or records them
  (`KnownMethods`, outermost); labels name a method `other` should one pass (`method_of`).
- Pages get a Content-Security-Policy (own origin only, no framing; a page that sets its own,
  the genome viewer's, keeps it); every answer gets
  X-Frame-Options: DENY and X-Content-Type-Options: nosniff.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

BIND_ENV = "PYSCORE_BIND"  # host:port that `score-server serve` listens on, for its workers
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
NO_CSP = ("/docs", "/redoc")  # Swagger UI and ReDoc load their code from a CDN


METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# The rest of IANA's HTTP Method Registry: methods HTTP defines that no route here allows
# (405, as RFC 9110 asks); a method outside it is one the server does not know (501).
# fmt: off
NOT_ALLOWED = frozenset((
    "ACL", "BASELINE-CONTROL", "BIND", "CHECKIN", "CHECKOUT", "CONNECT", "COPY", "LABEL",
    "LINK", "LOCK", "MERGE", "MKACTIVITY", "MKCALENDAR", "MKCOL", "MKREDIRECTREF",
    "MKWORKSPACE", "MOVE", "ORDERPATCH", "PRI", "PROPFIND", "PROPPATCH", "QUERY", "REBIND",
    "REPORT", "SEARCH", "TRACE", "UNBIND", "UNCHECKOUT", "UNLINK", "UNLOCK", "UPDATE",
    "UPDATEREDIRECTREF", "VERSION-CONTROL",
))
# fmt: on
ALLOW = ", ".join(sorted(METHODS)).encode()


def method_of(scope: Scope) -> str:
    """The request's method as a bounded value (metrics labels, log fields): `other` for a
    method this server does not speak."""
    method = scope.get("method", "")
    return method if method in METHODS else "other"


class KnownMethods:
    """ASGI middleware, outside every other: a method not in METHODS is answered here and
    leaves no trace, so made-up methods cannot grow /metrics, the request log or the audit
    trail. A registered method (NOT_ALLOWED: TRACE, CONNECT, QUERY, WebDAV's) gets 405 with
    Allow, as RFC 9110 asks of a method known but allowed nowhere; anything else 501."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method")
        if scope["type"] != "http" or method in METHODS:
            await self.app(scope, receive, send)
            return
        status, body = (
            (405, b"method not allowed\n")
            if method in NOT_ALLOWED
            else (501, b"method not implemented\n")
        )
        headers = [
            (b"content-type", b"text/plain"),
            (b"content-length", str(len(body)).encode()),
            (b"x-content-type-options", b"nosniff"),
        ]
        if status == 405:
            headers.append((b"allow", ALLOW))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def networks(entries: list[str]) -> list[Any]:
    return [ipaddress.ip_network(e.strip(), strict=False) for e in entries if e.strip()]


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def set_header(scope: Scope, name: bytes, value: str) -> None:
    scope["headers"] = [(k, v) for k, v in scope["headers"] if k != name] + [
        (name, value.encode("latin-1"))
    ]


class ProxyHeaders:
    """Believe X-Forwarded-* only from `trusted` peers; take the last hop they add."""

    def __init__(self, app: ASGIApp, trusted: list[str]) -> None:
        self.app, self.trusted = app, networks(trusted)

    def believes(self, address: str | None) -> bool:
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            return False
        return any(ip in net for net in self.trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] == "http" and self.trusted and client and self.believes(client[0]):
            proto = header(scope, b"x-forwarded-proto")
            if proto:
                scheme = proto.split(",")[-1].strip().lower()
                if scheme in ("http", "https"):
                    scope["scheme"] = scheme
            host = header(scope, b"x-forwarded-host")
            if host:
                set_header(scope, b"host", host.split(",")[-1].strip())
            forwarded_for = header(scope, b"x-forwarded-for")
            if forwarded_for:
                hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
                # the nearest hop a trusted proxy did not add is the client
                while len(hops) > 1 and self.believes(hops[-1]):
                    hops.pop()
                if hops:
                    scope["client"] = (hops[-1], 0)
        await self.app(scope, receive, send)


def bind_names(bind: str) -> set[str]:
    """The host names (any port: a proxy on this machine may use its own) that name the
    address `host:port` a server listens on."""
    host = bind.rpartition(":")[0].strip("[]")
    names = {host, "localhost", "127.0.0.1", "::1"}
    if host in ("0.0.0.0", "::", ""):
        names.discard("")
        hostname = socket.gethostname()
        names |= {hostname, socket.getfqdn()}
        with contextlib.suppress(OSError):
            names |= {str(info[4][0]) for info in socket.getaddrinfo(hostname, None)}
    return {n.lower() for n in names}


def host_name(host: str) -> str:
    """`name:port`, `[v6]:port` or `name` -> the name alone."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class HostCheck:
    """When URLs are built from the Host header, answer only the hosts that name us: a
    configured `name` or `name:port`, or a name of the listening address with any port."""

    def __init__(
        self, app: ASGIApp, allowed: set[str], refuse: Callable[[Scope, str], Any]
    ) -> None:
        self.app, self.allowed, self.refuse = app, allowed, refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") != "/isAlive":
            host = (header(scope, b"host") or "").lower()
            if host and host not in self.allowed and host_name(host) not in self.allowed:
                await self.refuse(scope, host)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def allowed_hosts(configured: list[str]) -> set[str] | None:
    """The Host values to accept, or None to accept any (no bind known, none configured)."""
    bind = os.environ.get(BIND_ENV, "")
    hosts = {h.strip().lower() for h in configured if h.strip()}
    if bind:
        hosts |= bind_names(bind)
    return hosts or None


class SecurityHeaders:
    """X-Frame-Options and nosniff everywhere; a CSP on the server's own HTML pages; and
    `extra` headers on every answer (the extensions a client may discover, e.g. batches)."""

    def __init__(self, app: ASGIApp, extra: tuple[tuple[str, str], ...] = ()) -> None:
        self.app = app
        self.every = [(b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff")]
        self.every += [(k.lower().encode(), v.encode()) for k, v in extra]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                kind = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                headers += self.every
                own = any(k.lower() == b"content-security-policy" for k, _ in headers)
                if kind.startswith(b"text/html") and not path.startswith(NO_CSP) and not own:
                    headers.append((b"content-security-policy", CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def same_origin_form(headers: Any, base_url: str) -> bool:
    """Whether a form POST comes from this server's own pages: the browser's Sec-Fetch-Site,
    else its Origin, must say so (a request with neither comes from no browser, so no
    other site can have sent it)."""
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = headers.get("origin")
    if origin is None:
        return True
    own = urlsplit(base_url)
    return origin.rstrip("/").lower() == f"{own.scheme}://{own.netloc}".lower()
