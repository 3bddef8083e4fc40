"""The ASGI app: one process serves the metadata API, the storage API, htsget, DRS and the portal.

Everything a request needs is reached through `Platform`, built once per process from the
settings; nothing a second process would need lives only in memory here.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Optional

import anyio
import anyio.to_thread
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from pyscore import __version__
from pyscore.server import audit, edge, errors, keys, limits
from pyscore.server.auth import Principal, principal_for
from pyscore.server.db import Database
from pyscore.server.identity import Identity
from pyscore.server.objects import Signer
from pyscore.server.settings import Settings
from pyscore.server.store import ObjectStore, open_store
from pyscore.server.tables import UploadPart


@dataclass
class Platform:
    settings: Settings
    db: Database
    store: ObjectStore
    identity: Identity = field(default_factory=Identity)  # bearers of other issuers
    trail: audit.Writer | None = None  # the audit trail's writer (server processes)

    @classmethod
    def open(cls, settings: Settings) -> Platform:
        db = Database(settings.database_url, limits.pool_size(settings.max_concurrent_requests))
        with db.session() as session:
            keys.ensure(session)  # made at init; carried over from a single legacy key

        def load() -> list[dict]:
            with db.session() as session:
                return keys.load_ring(session)

        ring = keys.KeyRing(load, settings.url_signing_pepper)
        return cls(
            settings, db, open_store(settings, ring), Identity.from_settings(settings.identity)
        )


def platform(request: Request) -> Platform:
    return request.app.state.platform


PlatformDep = Annotated[Platform, Depends(platform)]


def session(p: PlatformDep) -> Iterator[Session]:
    with p.db.session() as s:
        yield s


# scope="function": commit before the response goes out, so a client that got an answer sees
# its write on the very next request (FastAPI's default would commit after sending).
SessionDep = Annotated[Session, Depends(session, scope="function")]


def principal(request: Request, s: SessionDep, p: PlatformDep) -> Principal | None:
    external = p.identity.resolve if p.identity.configured else None
    return principal_for(s, request.headers.get("authorization"), external)


PrincipalDep = Annotated[Optional[Principal], Depends(principal)]


def base_url(request: Request) -> str:
    """Where clients reach this server: `public_url`, else this request's scheme and Host
    (checked by edge.HostCheck against the names of the listening address)."""
    public = request.app.state.platform.settings.public_url
    return (public or str(request.base_url)).rstrip("/")


def signer(request: Request, p: PlatformDep) -> Signer:
    return Signer(
        p.store,
        base_url(request),
        p.settings.download_expiry_seconds,
        p.settings.upload_expiry_seconds,
    )


SignerDep = Annotated[Signer, Depends(signer)]


def busy(scope: dict, retry_after: int) -> JSONResponse:
    """The answer to a request shed by admission control."""
    response = errors.render(
        Request(scope),
        errors.ApiError(
            503, "server.busy", f"The server is busy; retry in {retry_after} s (Retry-After)"
        ),
    )
    response.headers["Retry-After"] = str(retry_after)
    return response


def wrong_host(scope: dict, host: str) -> JSONResponse:
    error = errors.ApiError(
        400,
        "host.not.allowed",
        f"This server does not answer for host {host[:100]!r}; its operator can set "
        "public_url, or add the name to allowed_hosts",
    )
    # described by the address it reached, not by the Host refused
    unnamed = {**scope, "headers": [h for h in scope["headers"] if h[0] != b"host"]}
    return errors.render(Request(unnamed), error)


def too_large(scope: dict) -> JSONResponse:
    limit = scope["app"].state.platform.settings.max_body_bytes
    error = errors.ApiError(
        413,
        "payload.too.large",
        f"The request body is larger than the server's limit of {limit} bytes",
    )
    response = errors.render(Request(scope), error)
    response.headers["Connection"] = "close"  # the rest of the body is not read
    return response


def create_app(settings: Settings) -> FastAPI:
    from pyscore.server import drs, htsget, portal, score, song
    from pyscore.server.web import health, logging, metrics

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # enough threads that an admitted request never waits for one (see limits.py)
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = limits.thread_tokens(settings.max_concurrent_requests)
        yield
        if trail is not None:  # the records still queued reach the database
            await anyio.to_thread.run_sync(trail.close)

    app = FastAPI(
        title="pyscore",
        version=__version__,
        description="Song- and Score-compatible genomics data platform",
        lifespan=lifespan,
    )
    app.state.platform = Platform.open(settings)
    trail = app.state.platform.trail = audit.Writer(
        app.state.platform.db.session, settings.audit_log, on_drop=metrics.AUDIT_DROPPED.inc
    )
    metrics.instrument_pool(
        app.state.platform.db.engine, limits.pool_size(settings.max_concurrent_requests)
    )
    errors.install(app)
    app.add_middleware(
        limits.BodyLimitMiddleware, max_bytes=settings.max_body_bytes, too_large=too_large
    )
    app.add_middleware(
        limits.AdmissionMiddleware,
        admission=limits.Admission(
            settings.max_concurrent_requests, settings.queue_timeout_seconds
        ),
        busy=busy,
    )
    # outermost last: proxies are believed (or not) first, then the Host is checked
    app.add_middleware(edge.SecurityHeaders)
    hosts = None if settings.public_url else edge.allowed_hosts(settings.allowed_hosts)
    if hosts is not None:
        app.add_middleware(edge.HostCheck, allowed=hosts, refuse=wrong_host)
    # operators' endpoints and the request log: before admission and the Host check
    app.add_middleware(health.Health, checks=ready_checks(app.state.platform))
    app.add_middleware(
        metrics.Metrics, extra=metrics.DatabaseGauges(uploads_counter(app.state.platform))
    )
    app.add_middleware(
        logging.RequestLog,
        logger=logging.request_logger(settings.request_log),
        record=trail.put,
        observe=metrics.observe_audit,
    )
    app.add_middleware(edge.ProxyHeaders, trusted=settings.trusted_proxies)
    # every route documents the errors it may answer, in its API's shape
    app.include_router(song.router, responses=errors.documented(errors.SongError))
    app.include_router(score.router, responses=errors.documented(errors.SongError))
    app.include_router(
        htsget.router, responses=errors.documented(errors.HtsgetError, media=htsget.MEDIA)
    )
    app.include_router(drs.router, responses=errors.documented(errors.DrsError))
    portal.install(app)
    store = app.state.platform.store
    if store.kind == "local":
        from pyscore.server.store import local

        platform = app.state.platform

        def finalized(upload_id: str, part_number: int) -> bool:
            with platform.db.session() as s:
                return s.get(UploadPart, (upload_id, part_number)) is not None

        app.include_router(local.router(store, finalized))  # type: ignore[arg-type]
    return app


def ready_checks(platform: Platform) -> dict:
    """What /health/ready asks: the database answers, the store holds the sentinel."""
    from sqlalchemy import text

    from pyscore.server.objects import SENTINEL

    def database() -> None:
        with platform.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def store() -> None:
        if platform.store.stat(SENTINEL) is None:
            raise RuntimeError(f"the sentinel object {SENTINEL!r} is missing")

    return {"database": database, "object_store": store}


def uploads_counter(platform: Platform):
    from sqlalchemy import func, select

    from pyscore.server.tables import Upload

    def count() -> int:
        with platform.db.session() as s:
            return int(s.scalar(select(func.count()).select_from(Upload)) or 0)

    return count


def end_with_parent(interval: float = 0.5, grace: float = 5.0) -> None:
    """Make this worker process end when the process that started it does, even by
    `kill -9` (which gives the parent no chance to stop its workers): a daemon thread
    watches for the worker being handed to another parent, then asks it to stop (SIGTERM,
    so requests in flight finish) and, after `grace` seconds, ends it."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        print(
            f"pyscore worker {os.getpid()}: its server process {parent} is gone; stopping",
            file=sys.stderr,
            flush=True,
        )
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace)
        os._exit(1)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()


def factory() -> FastAPI:
    """Entry for ASGI servers started in worker processes: settings come from the data dir."""
    import atexit

    from pyscore.server.web import metrics

    end_with_parent()
    atexit.register(metrics.process_ended, os.getpid())
    return create_app(Settings.load(Path(os.environ["PYSCORE_DATA_DIR"])))
