"""Admission control: at most N requests of the APIs at work per process, a bounded wait for
the others, then 503 + Retry-After rather than a stall.

Why: synchronous routes run in a thread pool and hold a pooled database connection from their
first query until their session closes, which takes another trip through the pool. With more
requests at work than threads or connections, threads wait for connections held by requests
waiting for a thread, and nothing answers until the pool's timeout. With admission, a process
never has more requests at work than `max_concurrent_requests`, and the thread pool and the
database pool are sized above that (`capacity.py`), so neither
is ever waited for. Requests that need neither (`/isAlive`, the local store's byte
streams, static files) are not counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

EXEMPT_PREFIXES = ("/store/", "/portal/static/")
EXEMPT_PATHS = ("/isAlive",)


class Busy(Exception):
    """No slot freed within the queue timeout: answer 503 with Retry-After."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("busy")
        self.retry_after = retry_after


class Admission:
    """Counts requests at work; lets a bounded number wait up to `timeout` seconds."""

    def __init__(self, limit: int, timeout: float, max_waiting: int | None = None) -> None:
        self.limit = max(1, limit)
        self.timeout = max(0.0, timeout)
        self.max_waiting = self.limit * 16 if max_waiting is None else max_waiting
        self.active = 0
        self.waiting = 0
        self._freed: asyncio.Condition | None = None  # made in the serving loop

    def retry_after(self) -> int:
        return max(1, min(30, int(self.timeout) or 1))

    async def enter(self) -> None:
        if self.active < self.limit and not self.waiting:
            self.active += 1
            return
        if self.timeout <= 0 or self.waiting >= self.max_waiting:
            raise Busy(self.retry_after())
        if self._freed is None:
            self._freed = asyncio.Condition()
        self.waiting += 1
        try:
            async with self._freed:
                await asyncio.wait_for(
                    self._freed.wait_for(lambda: self.active < self.limit), self.timeout
                )
                self.active += 1
        except asyncio.TimeoutError:
            raise Busy(self.retry_after()) from None
        finally:
            self.waiting -= 1

    async def leave(self) -> None:
        self.active -= 1
        if self._freed is not None:
            async with self._freed:
                self._freed.notify(1)


def exempt(path: str) -> bool:
    return path in EXEMPT_PATHS or path.startswith(EXEMPT_PREFIXES)


class AdmissionMiddleware:
    """ASGI middleware around the whole app (outside FastAPI's own handlers)."""

    def __init__(
        self, app: ASGIApp, admission: Admission, busy: Callable[[Scope, int], Any]
    ) -> None:
        self.app, self.admission, self.busy = app, admission, busy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or exempt(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        try:
            await self.admission.enter()
        except Busy as exc:
            await self.busy(scope, exc.retry_after)(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            await self.admission.leave()


# -- request bodies ------------------------------------------------------------------------
BODY_EXEMPT_PREFIXES = ("/store/uploads/",)  # part PUTs: bounded by their signed range


class BodyLimitMiddleware:
    """Refuses request bodies over `max_bytes` with 413: at once when Content-Length says
    so, else as soon as a streamed body passes the cap (nothing buffers more than that)."""

    def __init__(self, app: ASGIApp, max_bytes: int, too_large: Callable[[Scope], Any]) -> None:
        self.app, self.max_bytes, self.too_large = app, max_bytes, too_large

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or self.max_bytes <= 0
            or scope.get("path", "").startswith(BODY_EXEMPT_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None:
            try:
                too_big = int(declared[:20]) > self.max_bytes or len(declared) > 19
            except ValueError:
                too_big = False  # the server has refused a malformed length already
            if too_big:
                await self.too_large(scope)(scope, receive, send)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counted, send)


class BodyTooLarge(HTTPException):
    """Raised from `receive`: an HTTPException, so every reader of the body (FastAPI's form
    parsing included) lets it through to the 413 answer."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413, f"The request body is larger than the server's limit of {limit} bytes"
        )
