"""A dependency failing under a running server, injected at an exact point: the database
away or its connection dropped mid-transaction (a TCP proxy between the server and
PostgreSQL: tests/tcpfault.py). What a client must see: 503 with Retry-After and the API's
JSON error (never a 500), one log line rather than a traceback per request, nothing half
done, and the same request succeeding once the dependency is back, with no operator."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlparse

import httpx
import pytest

from pyscore.server.settings import Settings
from tests.api import bearer, database, song_error, submit, upload
from tests.conftest import Server, init_server
from tests.publish import song_payload
from tests.tcpfault import TcpFault

POSTGRES = os.environ.get("PYSCORE_TEST_POSTGRES", "")
postgres_only = pytest.mark.skipif(
    not POSTGRES, reason="drops PostgreSQL connections (the PostgreSQL passes run it)"
)


@dataclass
class Faulty:
    """A serving platform whose database connections go through `db` (a TcpFault)."""

    server: Server
    db: TcpFault
    http: httpx.Client

    def log(self) -> str:
        return (self.server.data_dir / "server.log").read_text(errors="replace")

    def ready(self) -> None:
        """Wait until /health/ready answers 200 (bounded: it must come back by itself)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.http.get("/health/ready").status_code == 200:
                return
            time.sleep(0.2)
        pytest.fail(f"/health/ready did not come back: {self.http.get('/health/ready').text}")

    def analysis(self, study: str, analysis_id: str) -> dict:
        r = self.http.get(f"/studies/{study}/analysis/{analysis_id}")
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture
def faulty(tmp_path) -> Iterator[Faulty]:
    server = init_server(tmp_path / "data")
    port = urlparse(POSTGRES).port
    db = TcpFault(port)
    url = Settings.load(server.data_dir).database_url
    Settings.update(server.data_dir, database_url=url.replace(f":{port}/", f":{db.port}/"))
    server.start()
    http = httpx.Client(base_url=server.url, headers=bearer(server.admin_token), timeout=60)
    try:
        yield Faulty(server, db, http)
    finally:
        http.close()
        server.stop()
        db.close()


def unpublished(faulty: Faulty, study: str = "FAULTS") -> str:
    """A study and an analysis of two files, uploaded, not yet published: its id."""
    r = faulty.http.post(f"/studies/{study}/", json={"studyId": study, "name": study})
    assert r.status_code == 200, r.text
    files = {"a.bam": os.urandom(3000), "a.bam.bai": os.urandom(300)}
    analysis_id, object_ids = submit(faulty.http, song_payload(study, files))
    for name, data in files.items():
        upload(faulty.http, object_ids[name], data)
    return analysis_id


def unavailable(r: httpx.Response) -> None:
    """The answer to a request whose dependency is away: 503, Retry-After in seconds, and
    Song's error JSON naming the database."""
    song_error(r, 503, "database.unavailable")
    assert r.headers.get("Retry-After", "").isdigit(), r.headers


@postgres_only
def test_a_publish_while_the_database_is_away_is_503_then_succeeds(faulty):
    analysis_id = unpublished(faulty)
    faulty.db.down()
    publish = f"/studies/FAULTS/analysis/publish/{analysis_id}"
    for _ in range(3):
        unavailable(faulty.http.put(publish))
    unavailable(faulty.http.get("/studies/FAULTS/analysis"))
    assert faulty.http.get("/health/ready").status_code == 503
    faulty.db.up()
    faulty.ready()
    r = faulty.http.put(publish)
    assert r.status_code == 200, r.text
    assert faulty.analysis("FAULTS", analysis_id)["analysisState"] == "PUBLISHED"
    log = faulty.log()
    assert "Traceback" not in log, log[-3000:]
    # one line says why (not one per request, nor a traceback), and the request log says each
    said = [line for line in log.splitlines() if "database unavailable" in line]
    assert len(said) == 1, said


@postgres_only
def test_a_publish_whose_connection_drops_mid_transaction_changes_nothing(faulty):
    """The connection is lost after the analysis's new state was sent, before its event (the
    same transaction): nothing of the publish stays, the answer says to retry, a retry
    publishes once."""
    analysis_id = unpublished(faulty)
    faulty.db.cut_on(b"INSERT INTO analysis_events")
    publish = f"/studies/FAULTS/analysis/publish/{analysis_id}"
    unavailable(faulty.http.put(publish))
    assert faulty.db.cuts == 1
    assert faulty.analysis("FAULTS", analysis_id)["analysisState"] == "UNPUBLISHED"
    r = faulty.http.put(publish)
    assert r.status_code == 200, r.text
    assert faulty.analysis("FAULTS", analysis_id)["analysisState"] == "PUBLISHED"
    from sqlalchemy import select

    from pyscore.server.events.outbox import Event

    with database(faulty.server.data_dir) as s:
        actions = s.scalars(select(Event.action).where(Event.analysis_id == analysis_id)).all()
    assert sorted(actions).count("PUBLISH") == 1, actions
    assert "Traceback" not in faulty.log()
