"""A dependency failing under a running server, injected at an exact point: the database
away or its connection dropped mid-transaction (a TCP proxy between the server and
PostgreSQL: tests/tcpproxy.py). What a client must see: 503 with Retry-After and the API's
JSON error (never a 500), one log line rather than a traceback per request, nothing half
done, and the same request succeeding once the dependency is back, with no operator."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from pyscore.server.settings import Settings
from tests.api import bearer, database, song_error, submit, upload
from tests.conftest import CLIENT, Server, init_server, local_store_only
from tests.faultproxy import FaultProxy
from tests.publish import md5, song_payload
from tests.tcpproxy import TcpProxy

POSTGRES = os.environ.get("PYSCORE_TEST_POSTGRES", "")
postgres_only = pytest.mark.skipif(
    not POSTGRES, reason="drops PostgreSQL connections (the PostgreSQL passes run it)"
)


@dataclass
class Faulty:
    """A serving platform whose database connections go through `db` (a TcpProxy)."""

    server: Server
    db: TcpProxy
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
    db = TcpProxy(port)
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
    # a line says why (not a traceback; at most one per 10 s), the request log says each
    said = [line for line in log.splitlines() if "database unavailable" in line]
    assert 1 <= len(said) <= 4, said


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


S3 = os.environ.get("PYSCORE_TEST_S3", "")
s3_only = pytest.mark.skipif(not S3, reason="an S3 store's failures (the S3 pass runs it)")


def store_unavailable(r: httpx.Response) -> None:
    song_error(r, 503, "object.store.unavailable")
    assert r.headers.get("Retry-After", "").isdigit(), r.headers


@s3_only
def test_an_upload_while_the_store_answers_503_is_503_at_each_step_then_completes(tmp_path):
    """The S3 store answers 503 (a proxy in front of it) at each step of an upload that
    needs it: beginning it, recording a part (the store lists its parts), completing it.
    Each is answered 503 with Retry-After, never a 500 nor a final 400, and the same call
    succeeds once the store is back."""
    server = init_server(tmp_path / "data")
    store = FaultProxy(urlparse(S3.split(",")[0]).port, data_path="/")
    Settings.update(server.data_dir, s3_endpoint=store.url)
    server.start()
    http = httpx.Client(base_url=server.url, headers=bearer(server.admin_token), timeout=120)

    def refusing(on: bool) -> None:
        store.faults.status, store.faults.statuses = 503, (10**6 if on else 0)

    try:
        r = http.post("/studies/S3F/", json={"studyId": "S3F", "name": "S3F"})
        assert r.status_code == 200, r.text
        data = os.urandom(5000)
        analysis_id, ids = submit(http, song_payload("S3F", {"a.bam": data}))
        begin = (f"/upload/{ids['a.bam']}/uploads", {"fileSize": len(data), "md5": md5(data)})
        refusing(True)
        store_unavailable(http.post(begin[0], params=begin[1]))
        refusing(False)
        r = http.post(begin[0], params=begin[1])
        assert r.status_code == 200, r.text
        spec = r.json()
        [part] = spec["parts"]
        put = httpx.put(part["url"], content=data, timeout=60)
        assert put.status_code == 200, put.text
        finalize = (
            f"/upload/{ids['a.bam']}/parts",
            {
                "uploadId": spec["uploadId"],
                "partNumber": 1,
                "md5": md5(data),
                "etag": put.headers["ETag"],
            },
        )
        refusing(True)
        store_unavailable(http.post(finalize[0], params=finalize[1]))
        refusing(False)
        r = http.post(finalize[0], params=finalize[1])
        assert r.status_code == 200, r.text
        complete = (f"/upload/{ids['a.bam']}", {"uploadId": spec["uploadId"]})
        refusing(True)
        store_unavailable(http.post(complete[0], params=complete[1]))
        refusing(False)
        r = http.post(complete[0], params=complete[1])
        assert r.status_code == 200, r.text
        r = http.put(f"/studies/S3F/analysis/publish/{analysis_id}")
        assert r.status_code == 200, r.text
        got = httpx.get(
            http.get(f"/download/{ids['a.bam']}?offset=0&length=-1").json()["parts"][0]["url"]
        )
        assert got.content == data
        log = (server.data_dir / "server.log").read_text(errors="replace")
        assert "Traceback" not in log, log[-3000:]
        assert "object store unavailable" in log
    finally:
        http.close()
        server.stop()
        store.close()


def begin(http: httpx.Client, object_id: str, data: bytes) -> dict:
    """An upload of `data` (one part) begun: its specification."""
    r = http.post(f"/upload/{object_id}/uploads", params={"fileSize": len(data), "md5": md5(data)})
    assert r.status_code == 200, r.text
    return r.json()


def record(http: httpx.Client, object_id: str, spec: dict, data: bytes, etag: str) -> None:
    """The upload's one part, sent, recorded (`POST /upload/{id}/parts`)."""
    r = http.post(
        f"/upload/{object_id}/parts",
        params={"uploadId": spec["uploadId"], "partNumber": 1, "md5": md5(data), "etag": etag},
    )
    assert r.status_code == 200, r.text


def sent(http: httpx.Client, object_id: str, data: bytes) -> str:
    """An upload of `data` begun, its one part sent and recorded, not completed: its id."""
    spec = begin(http, object_id, data)
    put = httpx.put(spec["parts"][0]["url"], content=data, timeout=60)
    assert put.status_code == 200, put.text
    record(http, object_id, spec, data, put.headers["ETag"])
    return spec["uploadId"]


@postgres_only
def test_an_upload_completed_in_the_store_but_not_recorded_completes_on_retry(faulty):
    """The store has made the object (a rename, or S3's CompleteMultipartUpload) when the
    database connection drops before its row is written: the client is told to retry, and
    the retry completes the upload (the store's completion is not asked twice), not a 404
    that leaves bytes without a row and an upload no one can finish."""
    r = faulty.http.post("/studies/UP/", json={"studyId": "UP", "name": "UP"})
    assert r.status_code == 200, r.text
    data = os.urandom(4000)
    analysis_id, ids = submit(faulty.http, song_payload("UP", {"u.bam": data}))
    upload_id = sent(faulty.http, ids["u.bam"], data)
    faulty.db.cut_on(b"INSERT INTO objects")
    complete = f"/upload/{ids['u.bam']}"
    unavailable(faulty.http.post(complete, params={"uploadId": upload_id}))
    assert faulty.db.cuts == 1
    r = faulty.http.post(complete, params={"uploadId": upload_id})
    assert r.status_code == 200, r.text
    r = faulty.http.put(f"/studies/UP/analysis/publish/{analysis_id}")
    assert r.status_code == 200, r.text
    spec = faulty.http.get(f"/download/{ids['u.bam']}?offset=0&length=-1").json()
    assert httpx.get(spec["parts"][0]["url"]).content == data


def batch_begun(http: httpx.Client, object_id: str, data: bytes) -> dict:
    """`POST /upload/batch/start` of one object, as score-client begins uploads: its item."""
    wanted = {"objectId": object_id, "fileSize": len(data), "md5": md5(data)}
    r = http.post("/upload/batch/start", json={"uploads": [wanted]})
    assert r.status_code == 200, r.text
    [item] = r.json()["results"]
    assert item["status"] == 200, item
    return item


def batch_sent(item: dict, data: bytes) -> dict:
    """Each part of a begun upload PUT to its URL: the finish request's upload."""
    parts = []
    for part in item["parts"]:
        chunk = data[part["offset"] : part["offset"] + part["partSize"]]
        put = httpx.put(part["url"], content=chunk, timeout=60)
        assert put.status_code == 200, put.text
        parts.append(
            {"partNumber": part["partNumber"], "md5": md5(chunk), "etag": put.headers["ETag"]}
        )
    return {"objectId": item["objectId"], "uploadId": item["uploadId"], "parts": parts}


def finished_unrecorded(faulty: Faulty, study: str, data: bytes) -> tuple[str, str, dict]:
    """An upload begun and sent by score-client's batch calls, whose finish the store
    carried out (S3's CompleteMultipartUpload, the local store's rename) while the
    database's record of it was lost with its connection (503): the analysis id, the
    object id and the finish request's upload."""
    r = faulty.http.post(f"/studies/{study}/", json={"studyId": study, "name": study})
    assert r.status_code == 200, r.text
    analysis_id, ids = submit(faulty.http, song_payload(study, {"f.bam": data}))
    done = batch_sent(batch_begun(faulty.http, ids["f.bam"], data), data)
    faulty.db.cut_on(b"INSERT INTO objects")
    unavailable(faulty.http.post("/upload/batch/finish", json={"uploads": [done]}))
    assert faulty.db.cuts == 1
    return analysis_id, ids["f.bam"], done


def finish(faulty: Faulty, done: dict) -> None:
    """`POST /upload/batch/finish` of one upload, which must complete."""
    r = faulty.http.post("/upload/batch/finish", json={"uploads": [done]})
    assert r.status_code == 200, r.text
    assert r.json()["results"] == [{"objectId": done["objectId"], "status": 200}]


def published_as(faulty: Faulty, study: str, analysis_id: str, object_id: str, data: bytes):
    r = faulty.http.put(f"/studies/{study}/analysis/publish/{analysis_id}")
    assert r.status_code == 200, r.text
    spec = faulty.http.get(f"/download/{object_id}?offset=0&length=-1").json()
    got = b"".join(httpx.get(p["url"], timeout=60).content for p in spec["parts"])
    assert md5(got) == md5(data)
    if S3:
        from pyscore.server.store.s3 import S3Store

        store = S3Store.from_settings(Settings.load(faulty.server.data_dir))
        bucket, key = store.object_bucket(object_id), store.data_key(object_id)
        left = store.client.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", [])
        assert not left, left
    assert "Traceback" not in faulty.log()


@postgres_only
def test_a_finish_retried_after_the_store_completed_it_completes(faulty):
    """The client retries a finish answered 503 whose completion the store had carried
    out: the store no longer knows the upload (S3: NoSuchUpload), so its parts cannot be
    listed; the object it made is checked against the parts sent (S3's multipart ETag) and
    recorded, not refused as parts that never reached the store."""
    data = os.urandom(6 * 1024 * 1024 + 1000)  # two parts
    analysis_id, object_id, done = finished_unrecorded(faulty, "RETRY", data)
    finish(faulty, done)
    published_as(faulty, "RETRY", analysis_id, object_id, data)


@postgres_only
def test_a_rerun_after_the_store_completed_an_unrecorded_upload_begins_it_again(faulty):
    """A re-run finds the upload's record still open, but the store no longer has it: it
    must not be resumed (its part URLs would meet NoSuchUpload, the chaos run's failure),
    it is begun again, and the object the store made meanwhile is replaced by the new one."""
    data = os.urandom(6 * 1024 * 1024 + 1000)
    analysis_id, object_id, done = finished_unrecorded(faulty, "RERUN", data)
    item = batch_begun(faulty.http, object_id, data)
    assert not item["resumed"], item
    assert item["uploadId"] != done["uploadId"]
    finish(faulty, batch_sent(item, data))
    published_as(faulty, "RERUN", analysis_id, object_id, data)


@postgres_only
def test_the_status_of_an_upload_the_store_no_longer_has_is_404(faulty):
    """The original client asks the status to resume and begins anew (overwrite) on a 404:
    an upload the store completed or aborted behind the record's back is no upload to
    resume."""
    data = os.urandom(3000)
    analysis_id, object_id, _ = finished_unrecorded(faulty, "STATUS", data)
    r = faulty.http.get(f"/upload/{object_id}/status", params={"fileSize": len(data)})
    song_error(r, 404, "upload.not.found")
    spec = faulty.http.post(
        f"/upload/{object_id}/uploads",
        params={"fileSize": len(data), "md5": md5(data), "overwrite": "true"},
    )
    assert spec.status_code == 200, spec.text
    put = httpx.put(spec.json()["parts"][0]["url"], content=data, timeout=60)
    assert put.status_code == 200, put.text
    record(faulty.http, object_id, spec.json(), data, put.headers["ETag"])
    r = faulty.http.post(f"/upload/{object_id}", params={"uploadId": spec.json()["uploadId"]})
    assert r.status_code == 200, r.text
    published_as(faulty, "STATUS", analysis_id, object_id, data)


@contextmanager
def small_disk(path: Path, size: str) -> Iterator[None]:
    """`path` on a filesystem of its own of `size` (a tmpfs; what is there stays there)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small filesystem needs root")
    held = path.with_name(path.name + ".held")
    path.rename(held)
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)])
    if mounted.returncode != 0:
        held.rename(path)
        pytest.skip("cannot mount a tmpfs here")
    try:
        shutil.copytree(held, path, dirs_exist_ok=True)
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(path: Path) -> Path:
    """Take every free byte of the filesystem under `path`; the file that holds them."""
    filler = path / "filler"
    free = os.statvfs(path).f_bavail * os.statvfs(path).f_frsize
    subprocess.run(["fallocate", "-l", str(free), str(filler)], check=True)
    return filler


@local_store_only
def test_a_part_sent_while_the_disk_is_full_is_503_and_leaves_nothing(tmp_path):
    """The local store's disk fills while a part's body is being written (ENOSPC): the
    client is told to retry (503, Retry-After, JSON), the half-written body is removed,
    and once there is room again the same part goes in and the upload completes."""
    server = init_server(tmp_path / "data")
    with small_disk(server.data_dir / "objects", "8m"), server:
        http = httpx.Client(base_url=server.url, headers=bearer(server.admin_token), timeout=60)
        r = http.post("/studies/DISK/", json={"studyId": "DISK", "name": "DISK"})
        assert r.status_code == 200, r.text
        data = os.urandom(3 * 1024 * 1024)
        _, ids = submit(http, song_payload("DISK", {"d.bam": data}))
        spec = begin(http, ids["d.bam"], data)
        [part] = spec["parts"]
        filler = fill(server.data_dir / "objects")
        put = httpx.put(part["url"], content=data, timeout=60)
        song_error(put, 503, "object.store.unavailable", "full")
        assert put.headers.get("Retry-After", "").isdigit(), put.headers
        uploads = server.data_dir / "objects" / "upload"
        assert not [p for p in uploads.rglob("*") if p.name.startswith(".body-")]
        filler.unlink()
        put = httpx.put(part["url"], content=data, timeout=60)
        assert put.status_code == 200, put.text
        record(http, ids["d.bam"], spec, data, put.headers["ETag"])
        r = http.post(f"/upload/{ids['d.bam']}", params={"uploadId": spec["uploadId"]})
        assert r.status_code == 200, r.text
        assert (server.data_dir / "objects" / "data" / ids["d.bam"]).read_bytes() == data
        log = (server.data_dir / "server.log").read_text(errors="replace")
        assert "Traceback" not in log, log[-3000:]
        http.close()


@s3_only
def test_score_client_submits_through_a_short_store_outage(tmp_path):
    """`score-client submit` of two files (batch uploads) while the S3 store answers 503 for
    a few seconds: the whole batch is answered 503 with Retry-After (not each file refused
    inside a 200, which ended the file's upload at once), so the client retries, finishes
    and publishes."""
    server = init_server(tmp_path / "data")
    store = FaultProxy(urlparse(S3.split(",")[0]).port, data_path="/")
    Settings.update(server.data_dir, s3_endpoint=store.url)
    server.start()
    http = httpx.Client(base_url=server.url, headers=bearer(server.admin_token), timeout=120)
    try:
        r = http.post("/studies/OUT/", json={"studyId": "OUT", "name": "OUT"})
        assert r.status_code == 200, r.text
        files = {"o1.bam": os.urandom(200_000), "o2.bam": os.urandom(300_000)}
        for name, data in files.items():
            (tmp_path / name).write_bytes(data)
        (tmp_path / "payload.json").write_text(json.dumps(song_payload("OUT", files)))
        store.faults.status, store.faults.statuses = 503, 10**6
        client = subprocess.Popen(
            [
                *(CLIENT, "--silent", "submit", "--study-id", "OUT", "--publish"),
                *("--payload", str(tmp_path / "payload.json"), "--dir", str(tmp_path)),
            ],
            env={**os.environ, **server.client_env(server.admin_token)},
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(3)  # the client meets the outage (it retries for longer than this)
        store.faults.statuses = 0
        _, err = client.communicate(timeout=300)
        assert client.returncode == 0, err
        for name, data in files.items():
            [entity] = http.get("/entities", params={"fileName": name}).json()["content"]
            spec = http.get(f"/download/{entity['id']}?offset=0&length=-1")
            assert spec.status_code == 200, spec.text  # published
            assert httpx.get(spec.json()["parts"][0]["url"]).content == data
    finally:
        http.close()
        server.stop()
        store.close()


def test_a_killed_servers_metrics_directory_goes_with_the_next_start(tmp_path):
    """`kill -9` gives a server no chance to remove its temporary metrics directory; the
    next `serve` on the machine removes it (it names the dead server's pid), so restarts
    after kills do not pile them up."""
    server = init_server(tmp_path / "data")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    server.start("--workers", "2", env={"TMPDIR": str(tmp)})
    assert server.process is not None
    [first] = list(tmp.iterdir())
    server.process.kill()
    server.process.wait(10)
    server.port = 0  # the killed server's workers may hold its port for a few seconds
    server.start(env={"TMPDIR": str(tmp)})
    try:
        assert first.name.startswith("pyscore-metrics-")
        assert not first.exists(), sorted(p.name for p in tmp.iterdir())
        assert len(list(tmp.iterdir())) == 1
    finally:
        server.stop()


@s3_only
def test_a_multipart_upload_the_store_made_after_its_answer_timed_out_is_aborted(tmp_path):
    """A frozen store answers a CreateMultipartUpload after the server gave up on it (and
    began another): that upload is no one's. Completing the object's upload aborts the ones
    begun before it for the same object, so no stray upload holds the bucket's space."""
    from pyscore.server.store.s3 import S3Store

    server = init_server(tmp_path / "data")
    with server:
        http = httpx.Client(base_url=server.url, headers=bearer(server.admin_token), timeout=60)
        r = http.post("/studies/STRAY/", json={"studyId": "STRAY", "name": "STRAY"})
        assert r.status_code == 200, r.text
        data = os.urandom(5000)
        _, ids = submit(http, song_payload("STRAY", {"s.bam": data}))
        store = S3Store.from_settings(Settings.load(server.data_dir))
        bucket, key = store.object_bucket(ids["s.bam"]), store.data_key(ids["s.bam"])
        stray = store.client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        upload(http, ids["s.bam"], data)
        left = store.client.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", [])
        assert stray not in [u["UploadId"] for u in left], left
        assert not left, left
        http.close()


@postgres_only
def test_a_worker_started_while_the_database_is_away_waits_for_it(tmp_path, capfd):
    """A worker restarted (after a kill, by granian) while PostgreSQL restarts: it says so in
    one line and starts once the database is back, not a traceback per attempt (found by
    bench/chaos.py: a server killed and started again just before PostgreSQL stopped)."""
    import threading

    from pyscore.server.app import create_app

    server = init_server(tmp_path / "data")
    port = urlparse(POSTGRES).port
    db = TcpProxy(port)
    try:
        url = Settings.load(server.data_dir).database_url
        Settings.update(server.data_dir, database_url=url.replace(f":{port}/", f":{db.port}/"))
        db.down()
        made: list = []
        worker = threading.Thread(
            target=lambda: made.append(create_app(Settings.load(server.data_dir))), daemon=True
        )
        worker.start()
        deadline = time.monotonic() + 60
        while "database unavailable" not in capfd.readouterr().err:  # bounded below
            assert time.monotonic() < deadline, "the worker never said it waits"
            assert worker.is_alive(), "the worker gave up while the database was away"
            time.sleep(0.1)
        db.up()
        worker.join(60)
        assert made, "the worker did not start once the database was back"
        assert made[0].state.platform.db is not None
        assert "Traceback" not in capfd.readouterr().err
    finally:
        db.close()
