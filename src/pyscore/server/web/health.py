"""`/health/live` (the process answers) and `/health/ready` (it can serve: the database
answers a query and the object store finds the sentinel object written at init; 503 and
which check failed when not). Answered before admission control and the Host check, so a
load balancer's probe is never queued behind work nor refused for the name it uses."""

from __future__ import annotations

import json
from collections.abc import Callable

import anyio
import anyio.to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

LIVE, READY = "/health/live", "/health/ready"
TIMEOUT = 5.0


class Health:
    """ASGI middleware. `checks`: name -> a blocking function that raises when not ready."""

    def __init__(self, app: ASGIApp, checks: dict[str, Callable[[], object]]) -> None:
        self.app, self.checks = app, checks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path") if scope["type"] == "http" else None
        if path == LIVE:
            await answer(send, 200, {"status": "up"})
        elif path == READY:
            results = {name: await self.run(check) for name, check in self.checks.items()}
            ok = all(r == "ok" for r in results.values())
            await answer(
                send,
                200 if ok else 503,
                {"status": "ready" if ok else "unavailable", "checks": results},
            )
        else:
            await self.app(scope, receive, send)

    async def run(self, check: Callable[[], object]) -> str:
        try:
            with anyio.fail_after(TIMEOUT):
                # abandon_on_cancel: a hung database must not hang the probe
                await anyio.to_thread.run_sync(check, abandon_on_cancel=True)
        except TimeoutError:
            return f"timed out after {TIMEOUT:g} s"
        except Exception as exc:
            lines = str(exc).strip().splitlines()
            return f"{type(exc).__name__}: {lines[0][:200] if lines else ''}"
        return "ok"


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
