"""Downloads that survive what real links do: drops, stalls, 5xx, corruption, restarts,
expired URLs and kill -9. Faults come from tests/faultproxy.py on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pyscore.client.httpio import buffer_cap
from tests.conftest import CLIENT, init_server, journaled, local_store_only
from tests.faultproxy import CHUNK, FaultProxy
from tests.mounts import tmpfs, wait_until
from tests.publish import MiB, file_md5, publish, random_file

pytestmark = local_store_only  # the fault proxy must sit in the byte path

SIZE = 48 * MiB
PART = 8  # MiB: the server's part size for these tests
PARALLEL = 4


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    server = init_server(root / "data", "--part-size", str(PART))
    source = random_file(root / "big.bam", SIZE)
    small = random_file(root / "small.bam", 3 * MiB + 17, seed=2)
    ids = publish(server.data_dir, [source, small])
    with server:
        server.big_id, server.small_id = ids
        server.source, server.small = source, small
        server.reader = server.token("PROGRAMDATA-BIG.READ")
        yield server


@pytest.fixture
def proxy(platform):
    p = FaultProxy(platform.port)
    yield p
    p.close()


def download(
    platform, proxy, out: Path, *extra: str, env: dict | None = None, object_id: str | None = None
):
    env = {
        **platform.client_env(platform.reader),
        "METADATA_URL": proxy.url,
        "STORAGE_URL": proxy.url,
        "TRANSPORT_PARALLEL": str(PARALLEL),
        **(env or {}),
    }
    return subprocess.run(
        [
            CLIENT,
            "download",
            "--object-id",
            object_id or platform.big_id,
            "--output-dir",
            str(out),
            "--index",
            "false",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **env},
    )


def assert_complete(platform, out: Path, result) -> None:
    assert result.returncode == 0, result.stderr
    assert file_md5(out / "big.bam") == file_md5(platform.source)
    assert not (out / ".score-client").exists()


def test_clean_download_moves_each_byte_once(platform, proxy, tmp_path):
    result = download(platform, proxy, tmp_path)
    assert_complete(platform, tmp_path, result)
    assert proxy.stats.data_bytes == SIZE


def test_dropped_connections_mid_part(platform, proxy, tmp_path):
    proxy.faults.drop_after, proxy.faults.drops = 3 * MiB + 5, 3
    result = download(platform, proxy, tmp_path)
    assert_complete(platform, tmp_path, result)
    assert proxy.faults.drops == 0, "the faults were not exercised"
    assert proxy.stats.data_bytes < SIZE + 4 * MiB, "resumed within the part, not from scratch"


def test_stalls_mid_part(platform, proxy, tmp_path):
    """Two responses stall until the proxy closes (not for a while that a busy client could
    sleep through): only the client's read timeout ends them."""
    proxy.faults.stall_after, proxy.faults.stall_seconds, proxy.faults.stalls = MiB, 600, 2
    result = download(platform, proxy, tmp_path, env={"CLIENT_READTIMEOUTSECONDS": "1"})
    assert_complete(platform, tmp_path, result)
    assert "timed out" in result.stderr


def test_server_errors_retried(platform, proxy, tmp_path):
    proxy.faults.status, proxy.faults.statuses = 503, 3
    result = download(platform, proxy, tmp_path)
    assert_complete(platform, tmp_path, result)
    assert proxy.faults.statuses == 0


def test_corrupted_byte_detected_and_refetched(platform, proxy, tmp_path):
    proxy.faults.corrupt_offset, proxy.faults.corruptions = 20 * MiB + 123, 1
    result = download(platform, proxy, tmp_path)
    assert_complete(platform, tmp_path, result)
    assert "MD5" in result.stderr and "retrying" in result.stderr


def test_a_small_file_hashed_as_it_came_is_refetched_when_corrupted(platform, proxy, tmp_path):
    """A small file's MD5 is taken from the bytes as they arrive: a flipped byte is still
    caught, the file fetched again, and nothing wrong is ever under its name."""
    proxy.faults.corrupt_offset, proxy.faults.corruptions = MiB + 5, 1
    result = download(platform, proxy, tmp_path, object_id=platform.small_id)
    assert result.returncode == 0, result.stderr
    assert "MD5" in result.stderr and "retrying" in result.stderr
    assert file_md5(tmp_path / "small.bam") == file_md5(platform.small)
    assert not (tmp_path / ".score-client").exists()


def test_persistent_corruption_reported_nothing_left(platform, proxy, tmp_path):
    proxy.faults.corrupt_offset, proxy.faults.corruptions = 7, 100
    result = download(platform, proxy, tmp_path)
    assert result.returncode == 4, result.stderr
    assert "MD5" in result.stderr
    assert not (tmp_path / "big.bam").exists()
    assert "Traceback" not in result.stderr


def test_expired_urls_renewed(tmp_path_factory, tmp_path):
    """URLs that expire while a request waits are renewed, and the download goes on."""
    root = tmp_path_factory.mktemp("expiry")
    server = init_server(root / "data", "--part-size", str(PART))
    source = random_file(root / "big.bam", 16 * MiB, seed=3)
    (object_id,) = publish(server.data_dir, [source], study="EXP", access="open")
    os.environ["PYSCORE_DOWNLOAD_EXPIRY_SECONDS"] = "2"
    try:
        server.start()
    finally:
        del os.environ["PYSCORE_DOWNLOAD_EXPIRY_SECONDS"]
    proxy = FaultProxy(server.port)
    try:
        proxy.faults.delay_request, proxy.faults.delays = 3.0, 1
        env = {**server.client_env(), "METADATA_URL": proxy.url, "STORAGE_URL": proxy.url}
        result = subprocess.run(
            [CLIENT, "download", "--object-id", object_id, "--output-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **env},
        )
        assert result.returncode == 0, result.stderr
        assert file_md5(tmp_path / "big.bam") == file_md5(source)
        assert 403 in proxy.stats.statuses, "no URL expired: the test did not test renewal"
        assert proxy.stats.spec_requests >= 2
    finally:
        proxy.close()
        server.stop()


def test_server_restart_mid_download(platform, proxy, tmp_path):
    proxy.faults.rate = 12 * MiB
    env = {
        **platform.client_env(platform.reader),
        "METADATA_URL": proxy.url,
        "STORAGE_URL": proxy.url,
        "TRANSPORT_PARALLEL": str(PARALLEL),
    }
    client = subprocess.Popen(
        [
            CLIENT,
            "download",
            "--object-id",
            platform.big_id,
            "--output-dir",
            str(tmp_path),
            "--index",
            "false",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    # stopped once its bytes flow (not a guessed second in), and found unfinished then
    deadline = time.monotonic() + 60
    while not proxy.stats.data_bytes and client.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    platform.stop()
    stopped_at, running = proxy.stats.data_bytes, client.poll() is None
    time.sleep(1.5)  # down for a while
    platform.start()
    proxy.faults.rate = 0
    _, err = client.communicate(timeout=120)
    assert 0 < stopped_at < SIZE and running, "stopped before or after the download"
    assert client.returncode == 0, err
    assert file_md5(tmp_path / "big.bam") == file_md5(platform.source)


def test_resume_after_kill_9_refetches_little(platform, proxy, tmp_path):
    proxy.faults.rate = 8 * MiB  # per response; 4 in parallel: ~32 MB/s
    env = {
        **platform.client_env(platform.reader),
        "METADATA_URL": proxy.url,
        "STORAGE_URL": proxy.url,
        "TRANSPORT_PARALLEL": str(PARALLEL),
    }
    client = subprocess.Popen(
        [
            CLIENT,
            "download",
            "--object-id",
            platform.big_id,
            "--output-dir",
            str(tmp_path),
            "--index",
            "false",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **env},
    )
    deadline = time.monotonic() + 30
    while proxy.stats.data_bytes < SIZE // 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(client.pid, signal.SIGKILL)
    client.wait()
    first = proxy.stats.data_bytes
    assert 0 < first < SIZE, "killed too late to test anything"
    assert not (tmp_path / "big.bam").exists(), "a partial file under the final name"
    proxy.faults.rate = 0
    result = download(platform, proxy, tmp_path)
    assert_complete(platform, tmp_path, result)
    second = proxy.stats.data_bytes - first
    refetched = first + second - SIZE
    assert refetched <= PARALLEL * PART * MiB, (first, second, refetched)


def test_many_small_files_concurrently(platform, proxy, tmp_path):
    """Two objects in one run: both arrive, verified."""
    result = download(platform, proxy, tmp_path, object_id=platform.small_id)
    assert result.returncode == 0, result.stderr
    assert file_md5(tmp_path / "small.bam") == file_md5(platform.small)


def test_disk_full_states_the_space_needed(platform, proxy, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    with tmpfs(small, "size=16m"):
        result = download(platform, proxy, small)
        assert result.returncode == 1, result.stderr
        assert "disk space" in result.stderr and "needs" in result.stderr
        assert "Traceback" not in result.stderr
        assert not (small / "big.bam").exists()


def test_many_small_files_move_at_once_not_one_after_another(tmp_path_factory, tmp_path):
    """16 files, each data request held 0.5 s by the proxy: the shared worker pool fetches
    them side by side (one after another, the proxy would never hold two at once)."""
    root = tmp_path_factory.mktemp("many")
    server = init_server(root / "data")
    files = [random_file(root / f"s{i:02d}.bam", 20_000 + i, seed=i) for i in range(16)]
    ids = publish(server.data_dir, files, study="MANY", access="open")
    with server:
        proxy = FaultProxy(server.port)
        try:
            proxy.faults.delay_request, proxy.faults.delays = 0.5, 1000
            env = {
                **os.environ,
                **server.client_env(),
                "METADATA_URL": proxy.url,
                "STORAGE_URL": proxy.url,
                "TRANSPORT_PARALLEL": "8",
            }
            result = subprocess.run(
                [
                    CLIENT,
                    "download",
                    "--object-id",
                    *ids,
                    "--output-dir",
                    str(tmp_path),
                    "--index",
                    "false",
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
        finally:
            proxy.close()
    assert result.returncode == 0, result.stderr
    for f in files:
        assert file_md5(tmp_path / f.name) == file_md5(f)
    assert proxy.stats.data_requests >= 16
    # small files go many at once (SMALL_SLOTS, whatever --parallel says); one after another
    # the proxy would never hold two
    assert proxy.stats.most_held >= 4, f"{proxy.stats.most_held} at most at once"


INTERRUPTED = "score-client: interrupted; re-run the same command to resume"


def test_ctrl_c_on_a_stalled_read_stops_at_once_and_the_rerun_resumes(platform, proxy, tmp_path):
    """Every data response stalls after a receive buffer's worth (and a chunk), far longer
    than the test waits, and the client would wait 600 s before calling a read timed out:
    SIGINT still ends it (exit 130, within the test's bound), its message is the last thing
    it says, no retry is announced, and the next run fetches only what the first one's
    journal does not hold. SIGINT comes once the journal holds each response's first buffer
    (written and synced however slow the machine), not a guessed moment after the stall."""
    buffer = buffer_cap(PARALLEL)  # what a response's reader hands on to be written at once
    proxy.faults.stall_after, proxy.faults.stall_seconds = buffer + CHUNK, 600
    proxy.faults.stalls = 100
    env = {
        **os.environ,
        **platform.client_env(platform.reader),
        "METADATA_URL": proxy.url,
        "STORAGE_URL": proxy.url,
        "TRANSPORT_PARALLEL": str(PARALLEL),
        "CLIENT_READTIMEOUTSECONDS": "600",
    }
    args = [CLIENT, "download", "--object-id", platform.big_id, "--output-dir", str(tmp_path)]
    client = subprocess.Popen(
        [*args, "--index", "false"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    journal = tmp_path / ".score-client" / f"{platform.big_id}.journal"
    try:
        assert wait_until(lambda: proxy.stats.stalled >= PARALLEL, 60), "the reads never stalled"
        held = PARALLEL * buffer
        assert wait_until(lambda: journaled(journal) >= held, 60), (journaled(journal), held)
        client.send_signal(signal.SIGINT)
        _, err = client.communicate(timeout=60)  # the bound: far below the read timeout
    finally:
        client.kill()
        client.wait()
    assert client.returncode == 130, err
    assert err.strip().splitlines()[-1] == INTERRUPTED, err
    assert "retrying" not in err and "Traceback" not in err, err
    first, kept = proxy.stats.data_bytes, journaled(journal)
    proxy.faults.stalls = 0
    result = download(platform, proxy, tmp_path)
    assert_complete(platform, tmp_path, result)
    assert proxy.stats.data_bytes - first == SIZE - kept, "not resumed from the journal"
