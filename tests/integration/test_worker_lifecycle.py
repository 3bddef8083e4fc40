"""`score-server serve` stopped (SIGTERM) or killed (`kill -9`) leaves no worker behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import init_server
from tests.processes import alive, children


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("workers", [1, 2])
def test_workers_end_with_a_killed_server(tmp_path, workers):
    server = init_server(tmp_path / "data")
    server.start("--workers", str(workers))
    pid = server.process.pid
    try:
        workers_pids = children(pid)
        assert len(workers_pids) >= workers, workers_pids
        os.kill(pid, signal.SIGKILL)
        server.process.wait(10)
        deadline = time.monotonic() + 60  # they notice within ~5.5 s; bounded, not timed
        while time.monotonic() < deadline and (
            any(alive(w) for w in workers_pids) or port_open(server.port)
        ):
            time.sleep(0.2)
        left = [w for w in workers_pids if alive(w)]
        assert not left, f"workers {left} outlived their server"
        assert not port_open(server.port), "the port is still served"
    finally:
        for w in children(pid) + (workers_pids if "workers_pids" in locals() else []):
            if alive(w):
                os.kill(w, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_stopped_server_ends_with_its_workers(tmp_path):
    """SIGTERM (systemd's stop, Ctrl-C's cousin) ends the server and its workers, each time:
    granian 2.5 (Python 3.9) left a worker deadlocked in about one stop in three, and the
    server waiting on it for ever."""
    server = init_server(tmp_path / "data")
    for _ in range(4):
        server.start("--workers", "2")
        pid = server.process.pid
        workers_pids = children(pid)
        try:
            for _ in range(10):
                assert httpx.get(f"{server.url}/isAlive", timeout=10).status_code == 200
            server.process.send_signal(signal.SIGTERM)
            try:
                server.process.wait(30)  # the bound on a graceful stop is 5 s
            except subprocess.TimeoutExpired:
                pytest.fail("score-server did not stop within 30 s of SIGTERM")
            left = [w for w in workers_pids if alive(w)]
            assert not left, f"workers {left} outlived their server"
        finally:
            for w in [pid, *workers_pids]:
                if alive(w):
                    os.kill(w, signal.SIGKILL)
            server.process.wait(10)
