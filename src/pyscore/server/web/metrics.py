"""Prometheus metrics at `/metrics`, right with several worker processes.

`score-server serve` gives each run a fresh PROMETHEUS_MULTIPROC_DIR (multiproc.py): every
worker process writes its samples to files there, and whichever worker answers a scrape
adds up all of them (prometheus-client's multiprocess mode). Without that variable (the app
in a test, one process) the process's own registry is read.

Series:
- pyscore_http_requests_total{method,route,status}: answers, by route template
  (`/download/{object_id}`, never the object id itself; `unmatched` for unknown paths) and
  method (one of edge.METHODS, else `other`): every label has a bounded set of values
- pyscore_http_request_duration_seconds{method,route}: latency histogram
- pyscore_store_bytes_served_total: object bytes the local store sent on signed GETs
- pyscore_uploads_in_progress: multipart uploads begun and not yet completed (database)
- pyscore_upload_parts_receiving: part bodies being received by the local store
- pyscore_authorization_refusals_total{reason}: 401/403 by reason (missing_scope, no_token,
  invalid_token, expired_token, revoked_token, wrong_audience, untrusted_issuer, ...)
- pyscore_audit_records_total{outcome}, pyscore_audit_records_dropped_total
- pyscore_dependency_unavailable_total{dependency}: requests answered 503 + Retry-After
  because the database or the object store (or its disk) was away (errors.Outages)
- pyscore_db_pool_connections_in_use (sampled at most once a second per worker, while it
  answers requests), pyscore_db_pool_size: the database pools of all workers
- pyscore_events_pending{sink}, pyscore_events_oldest_pending_age_seconds{sink} (the lag),
  pyscore_events_delivered_total{sink}, pyscore_events_failures_total{sink} (attempts that
  failed), pyscore_events_sink_failing{sink} (1 while its last attempt failed): read from the
  database at scrape time, so any worker gives the same answer (events/)

Each request costs a few writes to memory-mapped files (a counter, the histogram's sum and
bucket, an audit outcome): a spec request takes well under a millisecond, so gauges that would
cost two writes a request (requests in progress, connections in use) are left out or
sampled.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any, Optional

import anyio.to_thread
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pyscore.server.web.edge import method_of
from pyscore.server.web.logging import route_of
from pyscore.server.web.multiproc import ENV

PATH = "/metrics"

REQUESTS = Counter(
    "pyscore_http_requests_total",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "pyscore_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by route template",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0),
)
STORE_BYTES = Counter(
    "pyscore_store_bytes_served",
    "Object bytes the local store sent on signed GETs",
)
PARTS_RECEIVING = Gauge(
    "pyscore_upload_parts_receiving",
    "Upload part bodies the local store is receiving",
    multiprocess_mode="livesum",
)
REFUSALS = Counter(
    "pyscore_authorization_refusals",
    "Requests refused access (401/403), by reason",
    ["reason"],
)
AUDIT_RECORDS = Counter(
    "pyscore_audit_records",
    "Audit records made, by outcome",
    ["outcome"],
)
AUDIT_DROPPED = Counter(
    "pyscore_audit_records_dropped",
    "Audit records dropped because the database did not take them in time",
)
UNAVAILABLE = Counter(
    "pyscore_dependency_unavailable",
    "Requests answered 503 because a dependency was away, by dependency (database, object_store)",
    ["dependency"],
)
POOL_IN_USE = Gauge(
    "pyscore_db_pool_connections_in_use",
    "Database connections checked out of the pools",
    multiprocess_mode="livesum",
)
POOL_SIZE = Gauge(
    "pyscore_db_pool_size",
    "Database connections the pools keep (each may open a few more under load)",
    multiprocess_mode="livesum",
)


def process_ended(pid: int) -> None:
    """Drop a finished worker's live gauges (its counters stay in the totals)."""
    if os.environ.get(ENV):
        multiprocess.mark_process_dead(pid)


def instrument_pool(engine: Any) -> None:
    """This process's pool size (its use is sampled by `Metrics`, see `pool`)."""
    POOL_SIZE.inc(engine.pool.size())


class DatabaseGauges(Collector):
    """Gauges read from the database at scrape time: the same answer from any worker.
    `event_sinks`: the sinks' `events.outbox.SinkStatus`es."""

    def __init__(
        self, count_uploads: Callable[[], int], event_sinks: Callable[[], list] = list
    ) -> None:
        self.count_uploads = count_uploads
        self.event_sinks = event_sinks

    def collect(self) -> Iterator[Metric]:
        try:
            value = float(self.count_uploads())
            sinks = self.event_sinks()
        except Exception:  # the database is away: say nothing rather than a wrong number
            return
        yield GaugeMetricFamily(
            "pyscore_uploads_in_progress",
            "Multipart uploads begun and not yet completed or cancelled",
            value=value,
        )
        if not sinks:
            return
        label = ["sink"]
        pending = GaugeMetricFamily(
            "pyscore_events_pending", "Events the sink has not taken yet", labels=label
        )
        age = GaugeMetricFamily(
            "pyscore_events_oldest_pending_age_seconds",
            "Age of the oldest event the sink has not taken (0: none waits)",
            labels=label,
        )
        delivered = CounterMetricFamily(
            "pyscore_events_delivered", "Events the sink has taken", labels=label
        )
        failures = CounterMetricFamily(
            "pyscore_events_failures", "Deliveries to the sink that failed", labels=label
        )
        failing = GaugeMetricFamily(
            "pyscore_events_sink_failing", "1 while the sink's last attempt failed", labels=label
        )
        for sink in sinks:
            pending.add_metric([sink.name], sink.pending)
            age.add_metric([sink.name], sink.lag_seconds())
            delivered.add_metric([sink.name], sink.delivered)
            failures.add_metric([sink.name], sink.failures)
            failing.add_metric([sink.name], float(sink.failing_since is not None))
        yield from (pending, age, delivered, failures, failing)

    def describe(self) -> list:
        return []


def exposition(extra: Optional[Collector] = None) -> bytes:
    if os.environ.get(ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    if extra is not None:
        own = CollectorRegistry(auto_describe=False)
        own.register(extra)
        body += generate_latest(own)
    return body


_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def observe_audit(records: list[Any], refusals: list[str]) -> None:
    """Count a request's audit records by outcome and its refusals by reason."""
    for record in records:
        _child(AUDIT_RECORDS, record.outcome).inc()
    for code in refusals:
        _child(REFUSALS, code or "other").inc()


_labelled: dict[tuple[int, str], Any] = {}


def _child(metric: Any, label: str) -> Any:
    """metric.labels(label), looked up once per label value (labels() takes a lock)."""
    key = (id(metric), label)
    child = _labelled.get(key)
    if child is None:
        child = _labelled[key] = metric.labels(label)
    return child


class Metrics:
    """ASGI middleware: answers GET /metrics, and measures every other request."""

    def __init__(
        self, app: ASGIApp, extra: Optional[Collector] = None, pool: Optional[Any] = None
    ) -> None:
        self.app, self.extra = app, extra
        self.pool = pool  # a SQLAlchemy pool whose checked-out connections are sampled
        self.sampled = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope.get("path") == PATH:
            await self.answer(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        store_get = scope.get("method") == "GET" and scope.get("path", "").startswith(
            "/store/objects/"
        )
        part_put = scope.get("method") == "PUT" and scope.get("path", "").startswith(
            "/store/uploads/"
        )
        sent = 0
        length = 0

        async def measured(message: Message) -> None:
            nonlocal status, sent, length
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
                if store_get:
                    for k, v in message.get("headers", []):
                        if k.lower() == b"content-length":
                            length = int(v)
            elif store_get and kind == "http.response.body":
                sent += len(message.get("body", b""))
            elif store_get and kind == "http.response.pathsend":
                sent += length  # zero-copy: the whole body, as declared
            await send(message)

        if part_put:
            PARTS_RECEIVING.inc()
        try:
            await self.app(scope, receive, measured)
        finally:
            if part_put:
                PARTS_RECEIVING.dec()
            method = method_of(scope)
            route = route_of(scope)
            counted = _children.get((method, route, status))
            if counted is None:  # labels() costs a lock and a lookup: once per series
                counted = _children[method, route, status] = (
                    REQUESTS.labels(method, route, str(status)),
                    LATENCY.labels(method, route),
                )
            now = time.perf_counter()
            counted[0].inc()
            counted[1].observe(now - started)
            if self.pool is not None and now - self.sampled >= 1.0:
                self.sampled = now
                POOL_IN_USE.set(self.pool.checkedout())
            if sent and 200 <= status < 300:
                STORE_BYTES.inc(sent)

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") not in ("GET", "HEAD"):
            await _plain(send, 405, b"GET only\n")
            return
        body = await anyio.to_thread.run_sync(exposition, self.extra)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", CONTENT_TYPE_LATEST.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )


async def _plain(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
