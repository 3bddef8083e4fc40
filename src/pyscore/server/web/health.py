"""`/health/live` (the process answers) and `/health/ready` (it can serve: the database
answers a query and the object store finds the sentinel object written at init; 503 and
which check failed when not; what it reports beside, such as event sinks, never changes
that). Answered before admission control and the Host check, so a load balancer's probe is
never queued behind work nor refused for the name it uses."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Optional

import anyio
import anyio.to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

from pyscore.server.web.errors import cause

LIVE, READY = "/health/live", "/health/ready"
TIMEOUT = 5.0


class Health:
    """ASGI middleware. `checks`: name -> a blocking function that raises when not ready.
    `reports`: name -> a blocking function whose JSON value the ready answer carries under
    that name, whatever it is (what an operator should know that does not stop serving,
    such as event sinks that are down)."""

    def __init__(
        self,
        app: ASGIApp,
        checks: dict[str, Callable[[], object]],
        reports: Optional[dict[str, Callable[[], object]]] = None,
    ) -> None:
        self.app, self.checks, self.reports = app, checks, reports or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path") if scope["type"] == "http" else None
        if path == LIVE:
            await answer(send, 200, {"status": "up"})
        elif path == READY:
            results = {name: await self.run(check) for name, check in self.checks.items()}
            ok = all(r == "ok" for r in results.values())
            body: dict[str, object] = {"status": "ready" if ok else "unavailable"}
            body["checks"] = results
            for name, report in self.reports.items():
                value, problem = await self.call(report)
                body[name] = problem or value
            await answer(send, 200 if ok else 503, body)
        else:
            await self.app(scope, receive, send)

    async def run(self, check: Callable[[], object]) -> str:
        return (await self.call(check))[1] or "ok"

    async def call(self, fn: Callable[[], object]) -> tuple[object, str]:
        """What `fn` returned, or why it did not ("" if it did)."""
        try:
            with anyio.fail_after(TIMEOUT):
                # abandon_on_cancel: a hung database must not hang the probe
                value = await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)
        except TimeoutError:
            return None, f"timed out after {TIMEOUT:g} s"
        except Exception as exc:
            # a dependency's Unavailable (a 503 to requests) says here what it met
            return None, cause(exc.__cause__ or exc)
        return value, ""


async def answer(send: Send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
