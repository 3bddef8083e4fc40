"""What an operator watches: a real Prometheus scraping /metrics from a server with two
worker processes, one JSON log line per request under a request id, and the health checks a
load balancer asks."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.api import bearer
from tests.conftest import LOCAL_STORE, Server, free_port, init_server, need


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    server = init_server(tmp_path_factory.mktemp("ops") / "data")
    server.start("--workers", "2")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, served: Server):
    """Debian's Prometheus on loopback, scraping the server every second."""
    binary = need("prometheus")
    work = tmp_path_factory.mktemp("prometheus")
    config = work / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: pyscore\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{served.port}']}}]\n"
    )
    port = free_port()
    with open(work / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"Prometheus did not start: {(work / 'prometheus.log').read_text()}")
        time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(10)


def query(prometheus: str, promql: str) -> float | None:
    r = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=5)
    assert r.status_code == 200, r.text
    result = r.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def until(prometheus: str, promql: str, expected: float, seconds: float = 60) -> float | None:
    """The query's value once it equals `expected` (scrapes come every second), else the
    last value seen after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        value = query(prometheus, promql)
        if value == expected or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def test_prometheus_reads_counters_of_every_worker(served: Server, prometheus: str) -> None:
    requests = 'sum(pyscore_http_requests_total{route="/studies/all",status="200"})'
    refusals = 'sum(pyscore_authorization_refusals_total{reason="invalid_token"})'
    assert until(prometheus, "up", 1.0) == 1.0  # the target is scraped
    before = query(prometheus, requests) or 0.0
    for _ in range(40):  # a new connection each: both worker processes get some
        assert httpx.get(f"{served.url}/studies/all", timeout=10).status_code == 200
    for _ in range(3):
        r = httpx.get(f"{served.url}/listing", headers=bearer("nobody-issued-this"))
        assert r.status_code == 401
    assert until(prometheus, requests, before + 40) == before + 40
    assert until(prometheus, refusals, 3.0) == 3.0
    # the latency histogram counts the same requests
    latency = 'sum(pyscore_http_request_duration_seconds_count{route="/studies/all"})'
    assert until(prometheus, latency, before + 40) == before + 40
    # two workers' database pools, 40 connections each: both processes are in the sum
    assert until(prometheus, "sum(pyscore_db_pool_size)", 80.0) == 80.0
    assert query(prometheus, "pyscore_uploads_in_progress") == 0.0


def log_lines(server: Server, request_id: str, seconds: float = 60) -> list[dict]:
    deadline = time.monotonic() + seconds
    while True:
        lines = [
            json.loads(line)
            for line in (server.data_dir / "server.log").read_text().splitlines()
            if line.startswith("{") and request_id in line
        ]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.2)


def test_one_json_line_per_request_under_its_request_id(served: Server) -> None:
    r = httpx.get(
        f"{served.url}/listing",
        headers={"X-Request-ID": "lb-7f3a.42", "Authorization": f"Bearer {served.admin_token}"},
    )
    assert r.status_code == 200 and r.headers["X-Request-ID"] == "lb-7f3a.42"
    (line,) = log_lines(served, "lb-7f3a.42")
    assert (line["method"], line["route"], line["status"], line["client"]) == (
        "GET",
        "/listing",
        200,
        "127.0.0.1",
    )
    # the admin token's id (12 hex digits), never the token
    assert isinstance(line["duration_ms"], float) and len(line["principal"]) == 12
    assert served.admin_token not in (served.data_dir / "server.log").read_text()
    # an id that is not sane (spaces, too long) is replaced by one of ours
    for given in ("two words", "x" * 200):
        r = httpx.get(f"{served.url}/no/such/path", headers={"X-Request-ID": given})
        ours = r.headers["X-Request-ID"]
        assert r.status_code == 404 and ours != given and len(ours) == 24
        (line,) = log_lines(served, ours)
        assert (line["route"], line["status"], line["principal"]) == ("unmatched", 404, None)


def test_health_says_when_the_platform_cannot_serve(served: Server) -> None:
    live = httpx.get(f"{served.url}/health/live")
    assert live.status_code == 200 and live.json() == {"status": "up"}
    ready = httpx.get(f"{served.url}/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "object_store": "ok"}
    # a load balancer probing by address is answered whatever Host it sends
    probe = httpx.get(f"{served.url}/health/ready", headers={"Host": "10.0.0.7"})
    assert probe.status_code == 200
    if not LOCAL_STORE:
        return
    (sentinel,) = (p for p in (served.data_dir / "objects").rglob("heliograph") if p.is_file())
    moved = sentinel.with_name("heliograph.away")
    os.rename(sentinel, moved)
    try:
        r = httpx.get(f"{served.url}/health/ready")
        assert r.status_code == 503, r.text
        assert r.json()["checks"]["database"] == "ok"
        assert "sentinel" in r.json()["checks"]["object_store"]
        assert httpx.get(f"{served.url}/health/live").status_code == 200
    finally:
        os.rename(moved, Path(sentinel))
    assert httpx.get(f"{served.url}/health/ready").status_code == 200
