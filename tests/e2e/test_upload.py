"""score-client upload and submit through the real CLI against a real score-server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.api import bearer
from tests.conftest import CLIENT, init_server, local_store_only
from tests.faultproxy import FaultProxy
from tests.publish import MiB, file_md5, random_file, song_payload

PART = 8  # MiB


@pytest.fixture
def platform(tmp_path):
    with (
        init_server(tmp_path / "data", "--part-size", str(PART)) as server,
        httpx.Client(base_url=server.url, headers=bearer(server.admin_token)) as http,
    ):
        assert http.post("/studies/UP/", json={"studyId": "UP", "name": "up"}).status_code == 200
        server.writer = server.token("PROGRAMDATA-UP.WRITE PROGRAMDATA-UP.READ")
        server.http = http
        yield server


def submit(platform, files: list[Path], tag: str = "1") -> tuple[str, list[dict]]:
    r = platform.http.post("/submit/UP", json=song_payload("UP", files, donor=f"d{tag}"))
    assert r.status_code == 200, r.text
    analysis_id = r.json()["analysisId"]
    files = platform.http.get(f"/studies/UP/analysis/{analysis_id}/files")
    assert files.status_code == 200, files.text
    return analysis_id, files.json()


def song_manifest(path: Path, analysis_id: str, files: list[dict], folder: Path) -> Path:
    """Exactly what overture-song's ManifestClient writes (no trailing newline)."""
    lines = [f"{analysis_id}\t\t"] + [
        f"{f['objectId']}\t{folder.resolve()}/{f['fileName']}\t{f['fileMd5sum']}" for f in files
    ]
    path.write_text("\n".join(lines))
    return path


def download_md5(platform, object_id: str, tmp: Path) -> str:
    out = tmp / f"dl-{object_id}"
    r = platform.client(
        "download",
        "--object-id",
        object_id,
        "--output-dir",
        str(out),
        "--index",
        "false",
        "--output-layout",
        "id",
        token=platform.writer,
    )
    assert r.returncode == 0, r.stderr
    return file_md5(out / object_id)


def test_upload_by_song_manifest_then_publish(platform, tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    bam = random_file(folder / "x.bam", 20 * MiB + 3)
    bai = random_file(folder / "x.bam.bai", 5000, seed=9)
    analysis_id, files = submit(platform, [bam, bai])
    manifest = song_manifest(tmp_path / "manifest.txt", analysis_id, files, folder)
    r = platform.client("upload", "--manifest", str(manifest), token=platform.writer)
    assert r.returncode == 0, r.stderr
    published = platform.http.put(f"/studies/UP/analysis/publish/{analysis_id}")
    assert published.status_code == 200, published.text
    by_name = {f["fileName"]: f["objectId"] for f in files}
    assert download_md5(platform, by_name["x.bam"], tmp_path) == file_md5(bam)
    assert download_md5(platform, by_name["x.bam.bai"], tmp_path) == file_md5(bai)


def test_upload_by_object_id(platform, tmp_path):
    f = random_file(tmp_path / "y.bam", 3 * MiB)
    _, files = submit(platform, [f], tag="2")
    r = platform.client(
        "upload",
        "--object-id",
        files[0]["objectId"],
        "--file",
        str(f),
        "--md5",
        file_md5(f),
        token=platform.writer,
    )
    assert r.returncode == 0, r.stderr
    assert platform.http.get(f"/upload/{files[0]['objectId']}").json() is True


def test_wrong_md5_refused(platform, tmp_path):
    f = random_file(tmp_path / "z.bam", MiB)
    _, files = submit(platform, [f], tag="3")
    r = platform.client(
        "upload",
        "--object-id",
        files[0]["objectId"],
        "--file",
        str(f),
        "--md5",
        "0" * 32,
        token=platform.writer,
    )
    assert r.returncode == 2, r.stderr
    assert "MD5" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert platform.http.get(f"/upload/{files[0]['objectId']}").json() is False


def test_changed_local_file_refused_before_completion(platform, tmp_path):
    f = random_file(tmp_path / "w.bam", 2 * MiB)
    _, files = submit(platform, [f], tag="4")
    declared = file_md5(f)
    random_file(f, 2 * MiB, seed=77)  # same size, other bytes
    r = platform.client(
        "upload",
        "--object-id",
        files[0]["objectId"],
        "--file",
        str(f),
        "--md5",
        declared,
        token=platform.writer,
    )
    assert r.returncode == 4, r.stderr
    assert platform.http.get(f"/upload/{files[0]['objectId']}").json() is False


def test_empty_file_refused(platform, tmp_path):
    empty = tmp_path / "e.bam"
    empty.write_bytes(b"")
    r = platform.client(
        "upload",
        "--object-id",
        "5b0e8f1c-6c1e-4b3a-9a51-1f0d2c3b4a59",
        "--file",
        str(empty),
        "--md5",
        "d41d8cd98f00b204e9800998ecf8427e",
        "--verify-connection",
        "false",
        token=platform.writer,
    )
    assert r.returncode == 2 and "empty" in r.stderr


def test_upload_to_published_analysis_refused(platform, tmp_path):
    f = random_file(tmp_path / "p.bam", MiB)
    analysis_id, files = submit(platform, [f], tag="5")
    oid = files[0]["objectId"]
    args = ("upload", "--object-id", oid, "--file", str(f), "--md5", file_md5(f))
    assert platform.client(*args, token=platform.writer).returncode == 0
    assert platform.http.put(f"/studies/UP/analysis/publish/{analysis_id}").status_code == 200
    r = platform.client(*args, "--force", token=platform.writer)
    assert r.returncode != 0
    assert "PUBLISHED" in r.stderr and "Traceback" not in r.stderr


@local_store_only  # the proxy must sit in the byte path
def test_resume_after_kill_sends_only_missing_parts(platform, tmp_path):
    f = random_file(tmp_path / "big.bam", 48 * MiB)
    analysis_id, files = submit(platform, [f], tag="6")
    oid = files[0]["objectId"]
    proxy = FaultProxy(platform.port)
    try:
        proxy.faults.delay_request, proxy.faults.delays = 0.6, 1000  # slow each part
        env = {
            **os.environ,
            **platform.client_env(platform.writer),
            "METADATA_URL": proxy.url,
            "STORAGE_URL": proxy.url,
            "TRANSPORT_PARALLEL": "2",
        }
        args = [CLIENT, "upload", "--object-id", oid, "--file", str(f), "--md5", file_md5(f)]
        client = subprocess.Popen(
            args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

        def recorded() -> list[dict]:
            status = platform.http.get(f"/upload/{oid}/status", params={"fileSize": 48 * MiB})
            parts = status.json()["parts"] if status.status_code == 200 else []
            return [p for p in parts if p.get("md5")]

        # killed once a part is recorded while another is held in the proxy (not yet sent):
        # part done on any machine, not after a guess of how long recording takes
        deadline = time.monotonic() + 60
        while not (recorded() and proxy.stats.held) and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(client.pid, signal.SIGKILL)
        client.wait()
        status = platform.http.get(f"/upload/{oid}/status", params={"fileSize": 48 * MiB})
        done = [p for p in status.json()["parts"] if p.get("md5")]
        assert 0 < len(done) < 6, status.text
        before = proxy.stats.put_requests
        proxy.faults.delays = 0
        r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert proxy.stats.put_requests - before == 6 - len(done)
    finally:
        proxy.close()
    assert platform.http.put(f"/studies/UP/analysis/publish/{analysis_id}").status_code == 200
    assert download_md5(platform, oid, tmp_path) == file_md5(f)


@local_store_only  # the proxy must sit in the byte path
def test_submit_resumes_after_interruption_one_analysis(platform, tmp_path):
    folder = tmp_path / "sub"
    folder.mkdir()
    bam = random_file(folder / "s.bam", 40 * MiB, seed=5)
    bai = random_file(folder / "s.bam.bai", 900, seed=6)
    doc = tmp_path / "payload.json"
    doc.write_text(json.dumps(song_payload("UP", [bam, bai], donor="d7")))
    proxy = FaultProxy(platform.port)
    try:
        proxy.faults.rate = 4 * MiB
        env = {
            **os.environ,
            **platform.client_env(platform.writer),
            "METADATA_URL": proxy.url,
            "STORAGE_URL": proxy.url,
        }
        args = [
            CLIENT,
            "submit",
            "--study-id",
            "UP",
            "--payload",
            str(doc),
            "--dir",
            str(folder),
            "--publish",
        ]
        client = subprocess.Popen(
            args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while proxy.stats.put_bytes < 8 * MiB and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(client.pid, signal.SIGKILL)
        client.wait()
        proxy.faults.rate = 0
        r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    finally:
        proxy.close()
    analyses = platform.http.get(
        "/studies/UP/analysis", params={"analysisStates": "PUBLISHED,UNPUBLISHED"}
    ).json()
    mine = [a for a in analyses if {f["fileName"] for f in a["files"]} == {"s.bam", "s.bam.bai"}]
    assert len(mine) == 1
    assert mine[0]["analysisState"] == "PUBLISHED"
    assert r.stdout.strip() == mine[0]["analysisId"]
