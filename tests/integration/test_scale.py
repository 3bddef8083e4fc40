"""Scale-out: several server processes over one PostgreSQL and one S3 store, and object bytes
that never pass through the server. Runs in CI's PostgreSQL + Ceph RGW pass."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import httpx
import pytest

from tests.api import bearer
from tests.conftest import CLIENT, LOCAL_STORE, SERVER, Server, init_server, run
from tests.faultproxy import FaultProxy
from tests.publish import MiB, file_md5, random_file, song_payload

needs_s3 = pytest.mark.skipif(
    not os.environ.get("PYSCORE_TEST_S3"), reason="needs PYSCORE_TEST_S3 (CI's Ceph RGW pass)"
)
needs_shared_db = pytest.mark.skipif(
    not os.environ.get("PYSCORE_TEST_POSTGRES"),
    reason="needs PYSCORE_TEST_POSTGRES (CI's PostgreSQL pass)",
)


def second_host(server: Server, data_dir) -> Server:
    """Another server process on the same database and store: a copy of the settings file,
    as a second host would have (and, for the local store, the same objects directory, as a
    shared file system would give it)."""
    data_dir.mkdir()
    shutil.copy(server.data_dir / "server.json", data_dir / "server.json")
    if LOCAL_STORE:
        (data_dir / "objects").symlink_to(server.data_dir / "objects")
    other = Server(url="", data_dir=data_dir, admin_token=server.admin_token)
    other.start()
    return other


@needs_s3
def test_bytes_go_to_the_object_store_not_the_server(tmp_path):
    server = init_server(tmp_path / "data", "--part-size", "8")
    server.start()
    proxy = FaultProxy(server.port)  # counts every byte the server sends or receives
    try:
        http = httpx.Client(base_url=proxy.url, headers=bearer(server.admin_token))
        assert http.post("/studies/SC/", json={"studyId": "SC"}).status_code == 200
        folder = tmp_path / "f"
        folder.mkdir()
        big = random_file(folder / "big.bam", 20 * MiB)
        doc = tmp_path / "payload.json"
        doc.write_text(json.dumps(song_payload("SC", [big])))
        env = {
            **os.environ,
            "METADATA_URL": proxy.url,
            "STORAGE_URL": proxy.url,
            "ACCESSTOKEN": server.admin_token,
        }
        r = subprocess.run(
            [
                CLIENT,
                "submit",
                "--study-id",
                "SC",
                "--payload",
                str(doc),
                "--dir",
                str(folder),
                "--publish",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr
        oid = http.get(f"/studies/SC/analysis/{r.stdout.strip()}/files").json()[0]["objectId"]
        spec = http.get(f"/download/{oid}").json()
        assert all(
            p["url"].startswith(os.environ["PYSCORE_TEST_S3"].split(",")[0]) for p in spec["parts"]
        )
        out = tmp_path / "out"
        r = subprocess.run(
            [CLIENT, "download", "--object-id", oid, "--output-dir", str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr
        assert file_md5(out / "big.bam") == file_md5(big)
        assert proxy.stats.put_bytes == 0 and proxy.stats.data_bytes == 0
        assert proxy.stats.data_requests == 0
    finally:
        proxy.close()
        server.stop()


@needs_shared_db
def test_upload_and_download_across_two_processes(tmp_path):
    a = init_server(tmp_path / "a", "--part-size", "8")
    a.start()
    b = second_host(a, tmp_path / "b")
    try:
        admin = bearer(a.admin_token)
        assert (
            httpx.post(f"{a.url}/studies/SC/", json={"studyId": "SC"}, headers=admin).status_code
            == 200
        )
        f = random_file(tmp_path / "x.bam", 40 * MiB)
        analysis_id = httpx.post(
            f"{b.url}/submit/SC", json=song_payload("SC", [f]), headers=admin
        ).json()["analysisId"]
        oid = httpx.get(f"{a.url}/studies/SC/analysis/{analysis_id}/files").json()[0]["objectId"]
        writer = a.token("PROGRAMDATA-SC.WRITE PROGRAMDATA-SC.READ")
        args = [
            CLIENT,
            "upload",
            "--object-id",
            oid,
            "--file",
            str(f),
            "--md5",
            file_md5(f),
            "--parallel",
            "1",
        ]
        # start on A, stop half way, finish on B
        proc = subprocess.Popen(
            args,
            env={**os.environ, **a.client_env(writer)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        done = 0
        while time.monotonic() < deadline and proc.poll() is None:
            status = httpx.get(
                f"{b.url}/upload/{oid}/status", headers=admin, params={"fileSize": 40 * MiB}
            )
            if status.status_code == 200:
                done = sum(1 for p in status.json()["parts"] if p.get("md5"))
                if done >= 2:
                    break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        r = subprocess.run(
            args,
            env={**os.environ, **b.client_env(writer)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr
        assert (
            httpx.put(
                f"{a.url}/studies/SC/analysis/publish/{analysis_id}", headers=admin
            ).status_code
            == 200
        )
        out = tmp_path / "out"
        r = subprocess.run(
            [CLIENT, "download", "--object-id", oid, "--output-dir", str(out)],
            env={**os.environ, **b.client_env(writer)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr
        assert file_md5(out / "x.bam") == file_md5(f)
        # a token revoked through one host is refused by both within the 5 s for which a
        # process believes a token it verified (token_cache_seconds)
        reader = a.token("PROGRAMDATA-SC.READ")
        auth = bearer(reader)
        assert httpx.get(f"{b.url}/download/{oid}", headers=auth).status_code == 200
        assert httpx.get(f"{a.url}/download/{oid}", headers=auth).status_code == 200
        listed = run(SERVER, "token", "list", "--data-dir", str(a.data_dir), check=True)
        token_id = listed.stdout.strip().splitlines()[-1].split("\t")[0]
        run(SERVER, "token", "revoke", "--data-dir", str(a.data_dir), token_id, check=True)
        time.sleep(5.2)
        assert httpx.get(f"{b.url}/download/{oid}", headers=auth).status_code == 401
        assert httpx.get(f"{a.url}/download/{oid}", headers=auth).status_code == 401
    finally:
        b.stop()
        a.stop()


def test_several_workers_serve_one_platform(tmp_path):
    """`serve --workers 2`: every process answers, and writes through one are seen by all."""
    server = init_server(tmp_path / "data")
    server.start("--workers", "2")
    try:
        admin = bearer(server.admin_token)
        with httpx.Client(base_url=server.url, headers=admin) as http:
            for i in range(20):  # new connections spread over the workers
                r = httpx.post(
                    f"{server.url}/studies/W{i}/", json={"studyId": f"W{i}"}, headers=admin
                )
                assert r.status_code == 200, r.text
            for _ in range(10):
                assert len(httpx.get(f"{server.url}/studies/all").json()) == 20
            assert http.get("/isAlive").json() is True
    finally:
        server.stop()
