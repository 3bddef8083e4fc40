"""One JSON line per request, with a request id, and the request's audit context.

Each request gets an id: the caller's `X-Request-ID` when it is sane (1-128 characters of
letters, digits and `._:-`, so a proxy's id carries through), else a new random one. It is
echoed in the answer's `X-Request-ID` and written in the log line and the audit records, so
an operator can follow one request from the proxy's log to ours to the trail.

The line: {"time", "level", "request_id", "method", "route" (the template), "path",
"status", "duration_ms", "principal" (token id or subject, never a secret; "anonymous"
without a token; null where the route does not ask, as /studies/all), "client",
"user_agent"}, to stderr (`request_log` setting: "-" stderr, "off", or a file path).
Lines are written in small batches, within 50 ms of the request. Invisible characters a
caller sent (in `path`, `user_agent`) are JSON escapes, so a line drives no terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import sys
import time
import unicodedata
from collections.abc import Callable
from typing import Any, Optional

import msgspec
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pyscore.server import audit
from pyscore.server.web.edge import method_of
from pyscore.wire.tsv import HIDDEN

HEADER = b"x-request-id"
SANE_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
QUIET_PATHS = ("/health/live", "/health/ready", "/metrics", "/isAlive")


class LineSink:
    """Where request lines go: a file descriptor, appended to (lines of several worker
    processes sharing a file never mix: each write holds whole lines). Lines are gathered
    and written together at most `delay` seconds after the first of them (or once `limit`
    bytes wait): a system call per request costs, in a server whose threads share the
    GIL, more than the line itself. Called from the event loop only."""

    def __init__(
        self, fd: int, owned: bool = False, delay: float = 0.05, limit: int = 64 * 1024
    ) -> None:
        self.fd, self.owned, self.delay, self.limit = fd, owned, delay, limit
        self.waiting: list[bytes] = []
        self.size = 0
        self.timer: Optional[asyncio.TimerHandle] = None

    def write(self, line: bytes) -> None:
        self.waiting.append(line + b"\n")
        self.size += len(line) + 1
        if self.size >= self.limit:
            self.flush()
        elif self.timer is None:
            try:
                self.timer = asyncio.get_running_loop().call_later(self.delay, self.flush)
            except RuntimeError:  # no loop (a test calling directly): write at once
                self.flush()

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.waiting:
            return
        data = b"".join(self.waiting)
        self.waiting.clear()
        self.size = 0
        with contextlib.suppress(OSError):  # a closed or full log must not fail a request
            os.write(self.fd, data)

    def close(self) -> None:
        self.flush()
        if self.owned:
            os.close(self.fd)


def request_sink(target: str) -> Optional[LineSink]:
    """`request_log`: "-" (standard error), "off", or a file path."""
    if target == "off":
        return None
    if target in ("", "-"):
        return LineSink(sys.stderr.fileno())
    return LineSink(os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), owned=True)


_encode = msgspec.json.Encoder().encode


def encode(line: dict[str, Any]) -> bytes:
    """A log line as JSON with no character a terminal or log viewer acts on: msgspec
    escapes C0 controls but leaves C1 controls (CSI, NEL), DEL, U+2028/2029 and format
    characters (bidirectional overrides) raw, so those are written as JSON escapes (the
    categories wire/tsv.py escapes in TSV cells): the same value to a JSON reader."""
    text = _encode(line).decode()
    if text.isprintable():  # the common case, at C speed (false for any hidden character)
        return text.encode()
    return "".join(_escape(c) if unicodedata.category(c) in HIDDEN else c for c in text).encode()


def _escape(char: str) -> str:
    return json.dumps(char)[1:-1]  # ASCII only: \uXXXX, a surrogate pair beyond U+FFFF


_second: tuple[int, str] = (-1, "")


def stamp() -> str:
    """Now, as 2026-11-30T14:00:00.123Z (the seconds formatted once a second)."""
    global _second
    now = time.time()
    whole = int(now)
    if whole != _second[0]:
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{_second[1]}.{int((now - whole) * 1000):03d}Z"


def route_of(scope: Scope) -> str:
    """The matched route's template (bounded label values), or `unmatched`."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


def header(scope: Scope, name: bytes) -> bytes:
    for k, v in scope.get("headers", []):
        if k == name:
            return bytes(v)
    return b""


class RequestLog:
    """ASGI middleware, outside every other but the proxy headers' (so `client` is the real
    client): opens the audit context, names the request, and at its end writes the log line
    and hands the audit records to `record` (audit.Writer.put)."""

    def __init__(
        self,
        app: ASGIApp,
        sink: Optional[LineSink],
        record: Optional[Callable[[list[audit.Record]], None]] = None,
        observe: Optional[Callable[[list[audit.Record], list[str]], None]] = None,
        quiet: tuple[str, ...] = QUIET_PATHS,
    ) -> None:
        self.app, self.sink, self.record, self.observe = app, sink, record, observe
        self.quiet = quiet

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = header(scope, HEADER)
        request_id = given.decode() if SANE_ID.match(given) else secrets.token_hex(12)
        client = scope.get("client") or ("", 0)
        ctx = audit.begin(
            request_id,
            str(client[0]),
            header(scope, b"user-agent").decode("latin-1"),
            method_of(scope),
        )
        status = 500
        id_header = (b"x-request-id", request_id.encode())

        async def named(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                message = {**message, "headers": [*headers, id_header]}
            await send(message)

        try:
            await self.app(scope, receive, named)
        finally:
            self.finish(scope, ctx, status, started)

    def finish(self, scope: Scope, ctx: audit.Context, status: int, started: float) -> None:
        route = route_of(scope)
        method = method_of(scope)
        records = audit.finish(ctx, status, f"{method} {route}", scope.get("path_params") or {})
        refusals = audit.refusal_codes(ctx, status)
        if self.observe is not None:
            self.observe(records, refusals)
        if records and self.record is not None:
            self.record(records)
        path = scope.get("path", "")
        if self.sink is not None and not (path in self.quiet and status < 400):
            line: dict[str, Any] = {
                "time": stamp(),
                "level": "error" if status >= 500 else "info",
                "request_id": ctx.request_id,
                "method": method,
                "route": route,
                "path": path[:512],
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "principal": ctx.who.id or None,  # None: the route did not ask
                "client": ctx.client,
                "user_agent": ctx.user_agent,
            }
            if ctx.who.issuer:
                line["issuer"] = ctx.who.issuer
            self.sink.write(encode(line))
