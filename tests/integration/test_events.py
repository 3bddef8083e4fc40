"""Analysis events against a running server: the messages SONG would send (its
AnalysisMessage, kafka/AnalysisMessage.java), in order per analysis, to a webhook that was
down for a while, to Maestro's index API, to a real Apache Kafka broker that was stopped
during the changes (PYSCORE_TEST_KAFKA, started by scripts/kafka.sh; read back with kcat);
none for a change that rolled back; `events replay` and `events status`; lag and failures on
/metrics and /health/ready."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api import bearer, database, submit, upload
from tests.conftest import (
    SERVER,
    Server,
    free_port,
    init_server,
    need,
    one_line_error,
    run,
    serve_refused,
)
from tests.mounts import wait_until
from tests.publish import song_payload

ROOT = Path(__file__).resolve().parents[2]
SECRET = "webhook-secret"
FAST_RETRIES = {"PYSCORE_EVENTS_RETRY_SECONDS": "0.1", "PYSCORE_EVENTS_RETRY_MAX_SECONDS": "0.5"}
MESSAGE_KEYS = ["analysisId", "studyId", "state", "action", "songServerId", "analysis"]
MAESTRO_OK = b'[{"indexName":"file_centric_1.0","successful":true,"failureData":{"failingIds":{}}}]'


class Receiver:
    """An HTTP endpoint on 127.0.0.1 that keeps every request (method, path, headers, body)
    and answers 200 with `answer`; started only when the test says (until then, the port
    refuses connections: a receiver that is down)."""

    def __init__(self, answer: bytes = b"{}") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.answer = answer
        self.got: list[tuple[str, str, dict[str, str], bytes]] = []
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                receiver.got.append((self.command, self.path, dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(receiver.answer)))
                self.end_headers()
                self.wfile.write(receiver.answer)

            do_POST = do_DELETE = handle_one

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def wait_for(self, count: int) -> list[tuple[str, str, dict[str, str], bytes]]:
        assert wait_until(lambda: len(self.got) >= count, 60, 0.1), self.got
        return self.got

    def messages(self) -> list[dict]:
        return [json.loads(body) for _, _, _, body in self.got]


@pytest.fixture
def receivers():
    made: list[Receiver] = []

    def make(answer: bytes = b"{}") -> Receiver:
        made.append(Receiver(answer))
        return made[-1]

    yield make
    for r in made:
        r.stop()


def serve_with(tmp_path: Path, sinks: list[dict], *extra: str) -> Server:
    server = init_server(tmp_path / "data")
    env = {"PYSCORE_EVENTS": json.dumps(sinks), **FAST_RETRIES}
    server.start(*extra, env=env)
    return server


class Analysis:
    """An analysis of one file, driven over HTTP; `seen` is the analysis as GET answered it
    after each change, the body SONG's message would carry."""

    def __init__(self, http: httpx.Client, study: str, name: str = "a.bam") -> None:
        self.http, self.study = http, study
        self.data = f"bytes of {name} {uuid.uuid4()}".encode()
        self.id, objects = submit(http, song_payload(study, {name: self.data}))
        self.object_id = objects[name]
        self.seen = [("CREATE", self.get())]

    def get(self) -> dict:
        r = self.http.get(f"/studies/{self.study}/analysis/{self.id}")
        assert r.status_code == 200, r.text
        return r.json()

    def upload(self) -> None:
        upload(self.http, self.object_id, self.data)

    def change(self, action: str) -> None:
        """publish, unpublish, suppress; or `update`: a curated PATCH of the experiment, for
        which SONG sends PUBLISH and the state the analysis is in (AnalysisServiceSender's
        updateAnalysis and patchUpdateAnalysis), with the updated analysis."""
        if action == "update":
            patch = {"experiment": {"libraryStrategy": "WXS", "alignmentTool": str(uuid.uuid4())}}
            r = self.http.patch(f"/studies/{self.study}/analysis/{self.id}", json=patch)
            action = "publish"
        else:
            r = self.http.put(f"/studies/{self.study}/analysis/{action}/{self.id}")
        assert r.status_code == 200, r.text
        self.seen.append((action.upper(), self.get()))

    def expected(self, server_id: str = "song.overture") -> list[dict]:
        return [
            {
                "analysisId": self.id,
                "studyId": self.study,
                "state": body["analysisState"],
                "action": action,
                "songServerId": server_id,
                "analysis": body,
            }
            for action, body in self.seen
        ]


def platform_http(server: Server, study: str) -> httpx.Client:
    http = httpx.Client(base_url=server.url, headers=bearer(server.admin_token), timeout=30)
    r = http.post(f"/studies/{study}/", json={"studyId": study})
    assert r.status_code == 200, r.text
    return http


def sink_metrics(server: Server, sink: str) -> dict[str, float]:
    """This sink's pyscore_events_* samples on /metrics, by name."""
    text = httpx.get(f"{server.url}/metrics").text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("pyscore_events_") and sample.labels.get("sink") == sink
    }


def test_a_webhook_down_for_a_while_misses_nothing_and_gets_songs_messages_in_order(
    tmp_path, receivers
):
    """Two workers share the outbox; the receiver is down through seven changes of an
    analysis (each answered at once; curated updates among them), /health/ready stays ready
    and says the sink fails, /metrics counts what waits; started, it gets each of SONG's
    messages once, in order, signed; then nothing waits."""
    hook = receivers()
    server = serve_with(
        tmp_path, [{"webhook": {"url": f"{hook.url}/song", "secret": SECRET}}], "--workers", "2"
    )
    try:
        http = platform_http(server, "EV1")
        a = Analysis(http, "EV1")
        a.upload()
        for action in ("publish", "update", "unpublish", "update", "publish", "suppress"):
            a.change(action)
        assert wait_until(
            lambda: sink_metrics(server, "webhook").get("pyscore_events_failures_total", 0) >= 2,
            30,
            0.1,
        )
        waiting = sink_metrics(server, "webhook")
        assert waiting["pyscore_events_pending"] == 7
        assert waiting["pyscore_events_sink_failing"] == 1
        assert waiting["pyscore_events_oldest_pending_age_seconds"] > 0
        ready = httpx.get(f"{server.url}/health/ready")
        assert ready.status_code == 200, ready.text  # a sink that is down: still serving
        report = ready.json()["events"]["webhook"]
        assert report["state"] == "failing" and report["pending"] == 7, report
        assert f"127.0.0.1:{hook.port}" in report["last_error"], report

        hook.start()
        hook.wait_for(7)
        assert wait_until(
            lambda: sink_metrics(server, "webhook")["pyscore_events_pending"] == 0, 30
        )
        assert len(hook.got) == 7, [m["action"] for m in hook.messages()]  # once each
        assert hook.messages() == a.expected()
        assert [(m["action"], m["state"]) for m in hook.messages()] == [
            ("CREATE", "UNPUBLISHED"),
            ("PUBLISH", "PUBLISHED"),
            ("PUBLISH", "PUBLISHED"),  # an update of a published analysis
            ("UNPUBLISH", "UNPUBLISHED"),
            ("PUBLISH", "UNPUBLISHED"),  # an update: SONG's action, the analysis's state
            ("PUBLISH", "PUBLISHED"),
            ("SUPPRESS", "SUPPRESSED"),
        ]
        tools = [m["analysis"]["experiment"].get("alignmentTool") for m in hook.messages()]
        assert tools[2] and tools[4] and tools[2] != tools[4]  # each the analysis as updated
        assert [list(m) for m in hook.messages()] == [MESSAGE_KEYS] * 7  # SONG's field order
        ids = []
        for method, path, headers, body in hook.got:
            assert (method, path) == ("POST", "/song")
            assert headers["Content-Type"] == "application/json"
            signed = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            assert headers["X-Pyscore-Signature-256"] == f"sha256={signed}"
            ids.append(int(headers["X-Pyscore-Event-Id"]))
        assert ids == sorted(set(ids)), ids
        done = sink_metrics(server, "webhook")
        assert done["pyscore_events_delivered_total"] == 7
        assert done["pyscore_events_sink_failing"] == 0
        report = httpx.get(f"{server.url}/health/ready").json()["events"]["webhook"]
        assert report["state"] == "ok" and report["pending"] == 0, report
    finally:
        server.stop()


def test_a_change_that_rolls_back_sends_nothing(tmp_path, receivers):
    """A submission made in a transaction that then fails leaves no event; the next change,
    committed, is the only message the sink gets."""
    from pyscore.server import metadata
    from pyscore.server.events.outbox import Event

    hook = receivers()
    hook.start()
    server = serve_with(tmp_path, [{"webhook": {"url": hook.url}}])
    try:
        http = platform_http(server, "EV2")
        lost = []
        with pytest.raises(RuntimeError), database(server.data_dir) as s:
            payload = song_payload("EV2", {"lost.bam": b"never committed"})
            lost.append(metadata.submit(s, "EV2", payload))
            raise RuntimeError("the request fails after the change")
        kept = Analysis(http, "EV2")
        hook.wait_for(1)
        with database(server.data_dir) as s:
            assert s.query(Event).filter(Event.analysis_id == lost[0]).count() == 0
            assert s.query(Event).count() == 1
        assert [m["analysisId"] for m in hook.messages()] == [kept.id]
        assert "X-Pyscore-Signature-256" not in hook.got[0][2]  # no secret, no signature
    finally:
        server.stop()


@pytest.mark.skipif(
    not os.environ.get("PYSCORE_TEST_POSTGRES"),
    reason="SQLite lets one transaction write at a time: commits cannot overtake there",
)
def test_an_event_committed_after_a_later_one_is_still_sent(tmp_path, receivers):
    """Transaction A records its event first but commits last, after B's event was sent: A's
    is sent too (events go in commit order, not in the order their rows were inserted)."""
    from pyscore.server import metadata

    hook = receivers()
    hook.start()
    server = serve_with(tmp_path, [{"webhook": {"url": hook.url}}])
    try:
        http = platform_http(server, "EV4")
        with database(server.data_dir) as a:
            first = metadata.submit(a, "EV4", song_payload("EV4", {"a.bam": b"A"}, donor="DA"))
            second = Analysis(http, "EV4")  # B: begun after A, committed before it
            hook.wait_for(1)
        hook.wait_for(2)
        assert [m["analysisId"] for m in hook.messages()] == [second.id, first]
    finally:
        server.stop()


def test_maestro_is_asked_to_index_or_remove_and_replay_sends_what_each_analysis_is_now(
    tmp_path, receivers
):
    """Maestro's own API (POST .../analysis/{id} on PUBLISHED, DELETE otherwise, under the
    repository code), beside a webhook; `events replay --sink maestro` asks Maestro again for
    each analysis as it is now, and the webhook gets nothing more; `events status` says what
    each sink took; a sink or time that is wrong is one line of error."""
    hook, maestro = receivers(), receivers(MAESTRO_OK)
    hook.start()
    maestro.start()
    sinks = [
        {"webhook": {"url": hook.url}},
        {"maestro": {"url": maestro.url + "/", "repository": "collab"}},
    ]
    server = serve_with(tmp_path, sinks)
    try:
        http = platform_http(server, "EV3")
        published, suppressed = Analysis(http, "EV3", "p.bam"), Analysis(http, "EV3", "s.bam")
        published.upload()
        published.change("publish")
        suppressed.change("suppress")
        maestro.wait_for(4)
        hook.wait_for(4)
        path = "/index/repository/collab/study/EV3/analysis/"
        assert [(m, p) for m, p, _, _ in maestro.got] == [
            ("DELETE", path + published.id),  # created: UNPUBLISHED, not in the index
            ("DELETE", path + suppressed.id),
            ("POST", path + published.id),
            ("DELETE", path + suppressed.id),
        ]

        status = run(
            SERVER,
            "events",
            "status",
            "--data-dir",
            str(server.data_dir),
            env={"PYSCORE_EVENTS": json.dumps(sinks)},
            check=True,
        )
        rows = [line.split("\t") for line in status.stdout.splitlines()]
        assert rows[0][:5] == ["sink", "pending", "oldest_pending", "delivered", "failures"]
        assert sorted((r[0], r[1], r[3]) for r in rows[1:]) == [
            ("maestro", "0", "4"),
            ("webhook", "0", "4"),
        ]

        replay = run(
            SERVER,
            "events",
            "replay",
            "--data-dir",
            str(server.data_dir),
            "--since",
            "1h",
            "--sink",
            "maestro",
            env={"PYSCORE_EVENTS": json.dumps(sinks)},
            check=True,
        )
        assert "Queued 2 event(s) for sink 'maestro'" in replay.stdout
        maestro.wait_for(6)
        assert sorted((m, p) for m, p, _, _ in maestro.got[4:]) == sorted(
            [("POST", path + published.id), ("DELETE", path + suppressed.id)]
        )
        assert wait_until(
            lambda: sink_metrics(server, "maestro")["pyscore_events_pending"] == 0, 30
        )
        assert len(hook.got) == 4

        for bad, said in (
            (["--since", "1h", "--sink", "kafka"], "no event sink named 'kafka'"),
            (["--since", "yesterday"], "bad time 'yesterday'"),
        ):
            failed = run(
                SERVER,
                "events",
                "replay",
                "--data-dir",
                str(server.data_dir),
                *bad,
                env={"PYSCORE_EVENTS": json.dumps(sinks)},
            )
            assert failed.returncode == 2
            assert said in one_line_error(failed)
    finally:
        server.stop()


def test_serve_refuses_an_events_setting_it_cannot_use(tmp_path):
    server = init_server(tmp_path / "data")
    for sinks, said in (
        ([{"kafka": {"topic": "x"}}], 'events[0].kafka: "bootstrap" is required'),
        ([{"webhook": {"url": "ftp://x"}}], "events[0].webhook.url: expected an http(s) URL"),
        ([{"webhook": {"url": "http://a"}}, {"webhook": {"url": "http://b"}}], "give each a"),
        ([{"rabbit": {}}], "expected one of {kafka, webhook, maestro"),
    ):
        assert said in serve_refused(server.data_dir, {"PYSCORE_EVENTS": json.dumps(sinks)})


# -- a real Kafka broker ----------------------------------------------------------------------
KAFKA = os.environ.get("PYSCORE_TEST_KAFKA", "")
KAFKA_DIR = os.environ.get("PYSCORE_TEST_KAFKA_DIR", "")


def need_kafka() -> None:
    """A broker, from scripts/kafka.sh; CI's PostgreSQL pass (PYSCORE_REQUIRE_KAFKA=1) fails
    rather than skips without one."""
    if KAFKA and KAFKA_DIR:
        return
    why = "no Kafka broker: scripts/kafka.sh start DIR PORT, then PYSCORE_TEST_KAFKA=host:port "
    why += "PYSCORE_TEST_KAFKA_DIR=DIR (scripts/test.sh does so for its PostgreSQL pass)"
    if os.environ.get("PYSCORE_REQUIRE_KAFKA"):
        pytest.fail(why)
    pytest.skip(why)


def kafka_script(*args: str) -> None:
    run("bash", str(ROOT / "scripts" / "kafka.sh"), *args, check=True, timeout=120)


def consume(topic: str) -> list[dict]:
    """Every record of `topic`, read by kcat (librdkafka, not our producer's wrapper)."""
    kcat = need("kcat")
    out = subprocess.run(
        [kcat, "-b", KAFKA, "-t", topic, "-C", "-e", "-o", "beginning", "-J", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "Unknown topic" in out.stderr:
        return []
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def test_kafka_gets_songs_messages_in_order_across_a_broker_stopped_during_the_changes(
    tmp_path,
):
    """Create and publish with the broker up; stop it; unpublish, a curated update,
    publish, suppress (each answered at once); start it again: the topic holds SONG's six
    messages in order, keyed by analysisId, each value byte for byte the JSON Jackson would
    write."""
    need_kafka()
    topic = f"song-analysis-{uuid.uuid4().hex[:8]}"
    server = serve_with(tmp_path, [{"kafka": {"bootstrap": KAFKA, "topic": topic}}])
    stopped = False
    try:
        http = platform_http(server, "EVK")
        a = Analysis(http, "EVK")
        a.upload()
        a.change("publish")
        assert wait_until(lambda: len(consume(topic)) >= 2, 60, 0.5)

        kafka_script("stop", KAFKA_DIR)
        stopped = True
        for action in ("unpublish", "update", "publish", "suppress"):
            a.change(action)
        assert wait_until(
            lambda: sink_metrics(server, "kafka").get("pyscore_events_sink_failing") == 1, 60, 0.2
        )
        ready = httpx.get(f"{server.url}/health/ready")
        assert ready.status_code == 200
        assert ready.json()["events"]["kafka"]["pending"] == 4

        kafka_script("start", KAFKA_DIR)
        stopped = False
        assert wait_until(lambda: len(consume(topic)) >= 6, 90, 0.5)
        records = consume(topic)
        assert [r["key"] for r in records] == [a.id] * 6
        expected = a.expected()
        assert [(m["action"], m["state"]) for m in expected[2:4]] == [
            ("UNPUBLISH", "UNPUBLISHED"),
            ("PUBLISH", "UNPUBLISHED"),  # the update, as SONG sends it
        ]
        assert [json.loads(r["payload"]) for r in records] == expected
        assert [r["payload"] for r in records] == [
            json.dumps(m, separators=(",", ":"), ensure_ascii=False) for m in expected
        ]
        assert wait_until(lambda: sink_metrics(server, "kafka")["pyscore_events_pending"] == 0, 30)
    finally:
        if stopped:
            kafka_script("start", KAFKA_DIR)
        server.stop()
