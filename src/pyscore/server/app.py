"""The ASGI app: one process serves the metadata API, the storage API, htsget, DRS and the
portal. Wiring only: each protocol's routes live in their own package, the shared dependencies
in `web/deps.py`, the platform in `platform.py`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread
from fastapi import FastAPI

from pyscore import __version__
from pyscore.server import audit, capacity, db
from pyscore.server.drs import routes as drs
from pyscore.server.events import outbox
from pyscore.server.events.delivery import Delivery
from pyscore.server.htsget import routes as htsget
from pyscore.server.platform import Platform
from pyscore.server.portal import routes as portal
from pyscore.server.score import routes as score
from pyscore.server.settings import Settings
from pyscore.server.song import routes as song
from pyscore.server.store.base import ServesItsUrls
from pyscore.server.tables import UploadPart
from pyscore.server.web import cors, edge, errors, health, limits, logging, metrics, signed
from pyscore.server.web.workers import end_with_parent
from pyscore.wire import batch
from pyscore.wire.htsget import MEDIA_TYPE


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # enough threads that an admitted request never waits for one (see limits.py)
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = capacity.thread_tokens(settings.max_concurrent_requests)
        # before any request: see its doc
        await anyio.to_thread.run_sync(when_the_database_answers, delivery.start)
        yield
        await anyio.to_thread.run_sync(delivery.stop)
        if sink is not None:
            sink.flush()  # the request lines still gathered
        await anyio.to_thread.run_sync(trail.close)  # records still queued reach the database

    app = FastAPI(
        title="pyscore",
        version=__version__,
        description="Song- and Score-compatible genomics data platform",
        lifespan=lifespan,
    )
    app.state.platform = when_the_database_answers(lambda: Platform.open(settings))
    trail = app.state.platform.trail = audit.Writer(
        app.state.platform.db.session, settings.audit_log, on_drop=metrics.AUDIT_DROPPED.inc
    )
    metrics.instrument_pool(app.state.platform.db.engine)
    # analysis events: this process's share of their delivery (events/delivery.py)
    delivery = Delivery.from_settings(app.state.platform.db.session, settings)
    sinks = sink_status(app.state.platform, delivery.names)
    sink = logging.request_sink(settings.request_log)
    errors.install(app, errors.Outages(lambda d: metrics.UNAVAILABLE.labels(d).inc()))
    # Starlette types add_middleware with a ParamSpec protocol that mypy, checking for Python
    # 3.9, cannot match to a middleware class; called through a plain Callable instead.
    add_middleware: Callable[..., None] = app.add_middleware
    add_middleware(
        limits.BodyLimitMiddleware, max_bytes=settings.max_body_bytes, too_large=errors.too_large
    )
    add_middleware(
        limits.AdmissionMiddleware,
        admission=limits.Admission(
            settings.max_concurrent_requests, settings.queue_timeout_seconds
        ),
        busy=errors.busy,
    )
    # outermost last: proxies are believed (or not) first, then the Host is checked
    add_middleware(edge.SecurityHeaders, extra=batch.advertised(settings.batch_max_ids))
    origins = cors.Origins(settings.cors_origins)
    if origins:  # preflights answered before admission; every answer of a covered route
        add_middleware(cors.Cors, origins=origins)
    hosts = None if settings.public_url else edge.allowed_hosts(settings.allowed_hosts)
    if hosts is not None:
        add_middleware(edge.HostCheck, allowed=hosts, refuse=errors.wrong_host)
    # the operator's endpoints and the request log: before admission and the Host check
    add_middleware(
        health.Health,
        checks=ready_checks(app.state.platform),
        # a sink that is down never makes the server unready: it can serve, and its events
        # wait; the answer says so (and /metrics)
        reports={"events": lambda: {s.name: s.report() for s in sinks()}} if delivery.names else {},
    )
    add_middleware(
        metrics.Metrics,
        extra=metrics.DatabaseGauges(uploads_counter(app.state.platform), sinks),
        pool=app.state.platform.db.engine.pool,
    )
    add_middleware(
        logging.RequestLog,
        sink=sink,
        record=trail.put,
        observe=metrics.observe_audit,
    )
    add_middleware(edge.ProxyHeaders, trusted=settings.trusted_proxies)
    # outermost: a made-up method is refused before anything counts or logs it
    add_middleware(edge.KnownMethods)
    platform = app.state.platform
    if isinstance(platform.store, ServesItsUrls):  # the local store: we answer its URLs

        def finalized(upload_id: str, part_number: int) -> bool:
            with platform.db.session() as s:
                return s.get(UploadPart, (upload_id, part_number)) is not None

        # first: every data byte goes through these, and routes are matched in order
        app.include_router(signed.router(platform.store, finalized))
    # every route documents the errors it may answer, in its API's shape
    app.include_router(song.router, responses=errors.documented(errors.SongError))
    app.include_router(score.router, responses=errors.documented(errors.SongError))
    app.include_router(
        htsget.router, responses=errors.documented(errors.HtsgetError, media=MEDIA_TYPE)
    )
    app.include_router(drs.router, responses=errors.documented(errors.DrsError))
    portal.install(app)
    return app


def ready_checks(platform: Platform) -> dict[str, Callable[[], object]]:
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


T = TypeVar("T")
START_WAIT_SECONDS = 300.0  # then the worker fails, and says why


def when_the_database_answers(start: Callable[[], T]) -> T:
    """A worker that starts while the database is away (restarting, failing over) waits for
    it, said in one line, instead of dying with a traceback for granian to start it again
    and again; past START_WAIT_SECONDS (or on any other error) it fails as before."""
    deadline, said = time.monotonic() + START_WAIT_SECONDS, False
    while True:
        try:
            return start()
        except Exception as exc:
            if not db.outage(exc) or time.monotonic() > deadline:
                raise
            if not said:
                said = True
                print(
                    f"score-server: worker {os.getpid()} starting: database unavailable "
                    f"({errors.cause(exc)}); waiting for it",
                    file=sys.stderr,
                    flush=True,
                )
            time.sleep(1.0)


def sink_status(platform: Platform, names: list[str]) -> Callable[[], list[outbox.SinkStatus]]:
    """Each event sink's lag and failures, read from the database."""

    def read() -> list[outbox.SinkStatus]:
        if not names:
            return []
        with platform.db.session() as s:
            return outbox.status(s, names)

    return read


def uploads_counter(platform: Platform) -> Callable[[], int]:
    from sqlalchemy import func, select

    from pyscore.server.tables import Upload

    def count() -> int:
        with platform.db.session() as s:
            return int(s.scalar(select(func.count()).select_from(Upload)) or 0)

    return count


def factory() -> FastAPI:
    """Entry for ASGI servers started in worker processes: settings come from the data dir."""
    import atexit

    end_with_parent()
    atexit.register(metrics.process_ended, os.getpid())
    return create_app(Settings.load(Path(os.environ["PYSCORE_DATA_DIR"])))
