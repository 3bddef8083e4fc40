"""What an anonymous caller or a submitter can make the server keep or print (issue 20,
items 1, 2 and 8): metrics series and request-log lines from made-up methods, terminal
controls in `score-server audit`, forged rows and formulas in the TSV exports. Each is
reproduced against a real server, as an attacker and an operator would see it."""

from __future__ import annotations

import http.client
import re
import subprocess
import time
import uuid

import httpx
import pytest

from tests.conftest import SERVER, Server, init_server
from tests.integration.test_hostile import World

KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
FORMULA_STARTS = ("=", "+", "-", "@")


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory):
    with init_server(tmp_path_factory.mktemp("edge") / "data") as server:
        w = World(server)
        try:
            yield w
        finally:
            w.http.close()


def send(server: Server, method: str, path: str, headers: dict[str, str] | None = None) -> int:
    """The status of one request sent as given (http.client sends any method token)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def series(metrics: str) -> set[str]:
    """Each sample's name and labels (not its value)."""
    return {line.rsplit(" ", 1)[0] for line in metrics.splitlines() if line and line[0] != "#"}


def logged(server: Server, request_id: str) -> str:
    """The server's log once the line of `request_id` is in it (lines go out in batches);
    at most 10 s."""
    log = server.data_dir / "server.log"
    deadline = time.monotonic() + 10
    while request_id not in (text := log.read_text(errors="replace")):
        assert time.monotonic() < deadline, f"{request_id} never logged"
        time.sleep(0.1)
    return text


def audit_output(server: Server, *args: str) -> bytes:
    """`score-server audit` as an operator runs it: its bytes, exactly as a terminal gets them."""
    out = subprocess.run(
        [SERVER, "audit", "--data-dir", str(server.data_dir), *args],
        capture_output=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


# -- 1: made-up methods are 501 and leave nothing behind -----------------------------------
def test_made_up_methods_are_501_and_leave_nothing_behind(edge: World) -> None:
    server = edge.server
    mark, where = uuid.uuid4().hex, uuid.uuid4().hex
    for i in range(5):  # unknown paths share one route label
        assert send(server, "GET", f"/nowhere/{where}/{i}") == 404
    object_path = f"/download/{uuid.uuid4()}"
    # the methods this server speaks are answered as before
    assert send(server, "OPTIONS", object_path) == 405
    assert send(server, "HEAD", "/metrics") == send(server, "GET", "/isAlive") == 200
    before = httpx.get(f"{server.url}/metrics").text
    assert where not in before
    assert {'route="unmatched"'} <= {m for m in re.findall(r'route="[^"]*"', before)}

    made_up = [f"M{i}{mark}" + "X" * 8000 for i in range(20)]
    for method in made_up:
        for path in (object_path, "/metrics", "/isAlive"):
            assert send(server, method, path, {"Authorization": "Bearer bogus"}) == 501
    for method in ("TRACE", "CONNECT", "get"):
        assert send(server, method, object_path) == 501, method

    after = httpx.get(f"{server.url}/metrics").text
    assert mark not in after
    assert series(after) == series(before)
    assert set(re.findall(r'method="([^"]*)"', after)) <= KNOWN_METHODS
    end = f"end-{where}"
    assert send(server, "GET", "/nowhere", {"X-Request-ID": end}) == 404
    log = logged(server, end)
    assert mark not in log and "TRACE" not in log
    assert mark.encode() not in audit_output(server, "--format", "json", "--since", "1h")
