"""Shared fixtures: a real score-server on 127.0.0.1 with the demo study, and CLI runners."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

BIN = Path(sys.executable).parent
SERVER = str(BIN / "score-server")
CLIENT = str(BIN / "score-client")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(
    *args: str,
    env: dict | None = None,
    timeout: float = 120,
    cwd: Path | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        list(args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The single stderr line of a failed run (asserting there is exactly one, no traceback)."""
    assert result.returncode != 0, f"expected failure; stderr: {result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{result.stderr}"
    return lines[0]


def serve_refused(data_dir: Path, env: dict[str, str]) -> str:
    """The one line of error of a `score-server serve` that must not start (exit 2) with
    these settings in its environment."""
    port = str(free_port())
    out = run(SERVER, "serve", "--data-dir", str(data_dir), "--port", port, env=env, timeout=60)
    assert out.returncode == 2, out.stderr
    return one_line_error(out)


def cli_token(data_dir: Path, scopes: str, *extra: str) -> tuple[str, str]:
    """(token id, secret) made by the real `score-server token create` (`extra`: more of its
    arguments, such as --user or --expires-in)."""
    out = run(
        SERVER,
        "token",
        "create",
        "--data-dir",
        str(data_dir),
        "--scopes",
        scopes,
        *extra,
        check=True,
    )
    found = re.search(r"Token (\w+) for", out.stderr)
    assert found, out.stderr
    return found[1], out.stdout.strip().splitlines()[-1]


def audit_trail(server: Server, *filters: str, at_least: int = 1) -> list[dict]:
    """The audit records matching `filters` (`score-server audit` options), once there are
    `at_least` (records are written within a moment of the answer; the bound only ends a
    wait for records that never come)."""
    deadline = time.monotonic() + 60
    while True:
        out = run(
            SERVER,
            "audit",
            "--data-dir",
            str(server.data_dir),
            "--format",
            "json",
            *filters,
            check=True,
        ).stdout
        if len(out.splitlines()) >= at_least or time.monotonic() > deadline:
            return [json.loads(line) for line in out.splitlines()]
        time.sleep(0.3)


def journaled(journal: Path) -> int:
    """Bytes a client's resume journal (`<out>/.score-client/<id>.journal`) records as on
    disk: what a re-run will not fetch again (0 before the client has one)."""
    from pyscore.client.ranges import Journal

    try:
        identity = json.loads(journal.read_text().split("\n")[0])
    except (OSError, ValueError):
        return 0
    return Journal(journal, identity).load().total()


def cli_revoke(data_dir: Path, token_id: str) -> None:
    """`score-server token revoke`, the real command."""
    run(SERVER, "token", "revoke", "--data-dir", str(data_dir), token_id, check=True)


@dataclass
class Server:
    url: str
    data_dir: Path
    admin_token: str
    process: subprocess.Popen | None = None
    port: int = 0
    manifest: Path | None = None

    def token(self, scopes: str, *extra: str) -> str:
        return cli_token(self.data_dir, scopes, *extra)[1]

    def client_env(self, token: str | None = None) -> dict[str, str]:
        env = {
            "METADATA_URL": self.url,
            "STORAGE_URL": self.url,
            "ACCESSTOKEN": token or "",
            "SCORE_CLIENT_CONF_DIR": str(self.data_dir / "no-conf"),
        }
        return env

    def client(
        self,
        *args: str,
        token: str | None = None,
        timeout: float = 120,
        cwd: Path | None = None,
        env: dict | None = None,
    ) -> subprocess.CompletedProcess:
        return run(
            CLIENT, *args, env={**self.client_env(token), **(env or {})}, timeout=timeout, cwd=cwd
        )

    def start(self, *extra: str, env: dict[str, str] | None = None) -> None:
        """Serve on 127.0.0.1 (`extra`: more `serve` arguments; `env`: more environment,
        such as PYSCORE_<FIELD> settings)."""
        self.port = self.port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with open(self.data_dir / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [
                    SERVER,
                    "serve",
                    "--data-dir",
                    str(self.data_dir),
                    "--port",
                    str(self.port),
                    *extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        deadline = time.monotonic() + 60  # a bound for a busy machine, not a time limit
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/isAlive", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError((self.data_dir / "server.log").read_text())
            time.sleep(0.1)
        raise RuntimeError("score-server did not start in 60 s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Server:
        """`with init_server(...) as server:` serves for the block and stops at its end."""
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def backend_args() -> list[str]:
    """Which database and store a new test platform uses, from the environment:
    PYSCORE_TEST_POSTGRES=postgresql://user@host:port/db (a fresh database per platform) and
    PYSCORE_TEST_S3=endpoint,access_key,secret_key (a fresh bucket per platform). Unset: the
    embedded default, SQLite and the local store."""
    args: list[str] = []
    tag = uuid.uuid4().hex[:12]
    postgres = os.environ.get("PYSCORE_TEST_POSTGRES")
    if postgres:
        import psycopg

        with psycopg.connect(postgres, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE pyscore_{tag}")
        args += ["--database-url", postgres.rsplit("/", 1)[0] + f"/pyscore_{tag}"]
    s3 = os.environ.get("PYSCORE_TEST_S3")
    if s3:
        endpoint, key, secret = s3.split(",")
        args += [
            "--store",
            f"s3://pyscore-{tag}/objects",
            "--s3-endpoint",
            endpoint,
            "--s3-access-key",
            key,
            "--s3-secret-key",
            secret,
        ]
    return args


LOCAL_STORE = not os.environ.get("PYSCORE_TEST_S3")
local_store_only = pytest.mark.skipif(
    not LOCAL_STORE,
    reason="exercises the local store's own URLs (the S3 run covers presigned S3 URLs)",
)
sqlite_only = pytest.mark.skipif(
    bool(os.environ.get("PYSCORE_TEST_POSTGRES")), reason="holds SQLite's write lock"
)


@contextmanager
def database_write_locked(data_dir: Path) -> Iterator[None]:
    """Another process holds SQLite's write lock for a moment, as `score-server token create`
    or a second server process may."""
    con = sqlite3.connect(data_dir / "pyscore.sqlite", isolation_level=None, timeout=5)
    con.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        con.execute("COMMIT")
        con.close()


def init_server(data_dir: Path, *extra: str) -> Server:
    out = run(SERVER, "init", "--data-dir", str(data_dir), *backend_args(), *extra, check=True)
    return Server(url="", data_dir=data_dir, admin_token=out.stdout.strip().splitlines()[-1])


def init_demo_server(data_dir: Path) -> Server:
    """A new platform with the demo study published (`score-server demo`), not yet serving."""
    server = init_server(data_dir)
    out = run(SERVER, "demo", "--data-dir", str(data_dir), check=True, timeout=300)
    server.manifest = Path(out.stdout.strip().splitlines()[-1])
    return server


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory: pytest.TempPathFactory):
    """A server with the demo study published; shared by tests that only read."""
    with init_demo_server(tmp_path_factory.mktemp("platform") / "data") as server:
        yield server


@pytest.fixture
def fresh_server(tmp_path: Path):
    """An empty platform of the test's own, for tests that write."""
    with init_server(tmp_path / "data") as server:
        yield server


@pytest.fixture(scope="session")
def demo_files(demo_server: Server) -> Path:
    assert demo_server.manifest is not None
    return demo_server.manifest.parent  # <data-dir>/demo-files/DEMO


def need(tool: str) -> str:
    """A peer tool; CI (PYSCORE_REQUIRE_TOOLS=1) fails rather than skips without it."""
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("PYSCORE_REQUIRE_TOOLS"):
            pytest.fail(f"{tool} is required but not installed")
        pytest.skip(f"{tool} is not installed (scripts/test.sh installs it)")
    return path
