"""What a server replica does at start, as a container or a Kubernetes pod starts it:
settings and secrets from the environment and from files (`PYSCORE_<FIELD>_FILE`), a schema
migrated once by `score-server migrate` and never by `serve` (which refuses, or waits for
it), and the bad inputs of a deployment, each one line and a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from pyscore.server.db import migrate, schema_revisions
from tests.conftest import SERVER, free_port, one_line_error, run


@pytest.fixture
def platform(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    run(SERVER, "init", "--data-dir", str(data), check=True)
    return data


def studies(data: Path, env: dict[str, str]) -> list[str]:
    out = run(SERVER, "study", "list", "--data-dir", str(data), env=env, check=True).stdout
    return [line.split("\t")[0] for line in out.splitlines()[1:]]


# -- secrets from files --------------------------------------------------------------------
def test_a_setting_is_read_from_the_file_its_FILE_variable_names(tmp_path: Path) -> None:
    """The database URL as a mounted secret: another platform's database, named in a file
    (with the newline `echo` leaves), is the one the commands open."""
    first, second = tmp_path / "first", tmp_path / "second"
    for data in (first, second):
        run(SERVER, "init", "--data-dir", str(data), check=True)
    run(SERVER, "study", "create", "--data-dir", str(first), "FROM-FILE", check=True)
    secret = tmp_path / "database_url"
    secret.write_text(f"sqlite:///{first / 'pyscore.sqlite'}\n")
    assert studies(second, {}) == []
    assert studies(second, {"PYSCORE_DATABASE_URL_FILE": str(secret)}) == ["FROM-FILE"]


def test_a_missing_secret_file_is_one_line(platform: Path, tmp_path: Path) -> None:
    missing = tmp_path / "secrets" / "url_signing_pepper"
    env = {"PYSCORE_URL_SIGNING_PEPPER_FILE": str(missing)}
    result = run(SERVER, "serve", "--data-dir", str(platform), "--port", "0", env=env)
    assert result.returncode == 2
    assert one_line_error(result) == (
        f"score-server: error: PYSCORE_URL_SIGNING_PEPPER_FILE: cannot read {missing}: "
        "No such file or directory"
    )


def test_a_setting_given_twice_is_refused(platform: Path, tmp_path: Path) -> None:
    (tmp_path / "pepper").write_text("00" * 32)
    env = {"PYSCORE_URL_SIGNING_PEPPER": "11" * 32, "PYSCORE_URL_SIGNING_PEPPER_FILE": "x"}
    result = run(SERVER, "token", "list", "--data-dir", str(platform), env=env)
    assert one_line_error(result) == (
        "score-server: error: both PYSCORE_URL_SIGNING_PEPPER and "
        "PYSCORE_URL_SIGNING_PEPPER_FILE are set; keep one"
    )


# -- migrations: once, by `migrate`; servers refuse or wait ---------------------------------
def older_database(data: Path, revision: str | None) -> dict[str, str]:
    """A platform whose database is new (None) or at an older revision, as a release's
    replicas meet it before its migration job ran."""
    url = f"sqlite:///{data.parent / 'older.sqlite'}"
    if revision:
        migrate(url, revision)
    return {"PYSCORE_DATABASE_URL": url}


@pytest.mark.parametrize("revision", [None, "0003"])
def test_serve_refuses_a_database_not_migrated_to_its_version(
    platform: Path, revision: str | None
) -> None:
    env = older_database(platform, revision)
    result = run(SERVER, "serve", "--data-dir", str(platform), "--port", str(free_port()), env=env)
    assert result.returncode == 2
    line = one_line_error(result)
    assert line.startswith(
        f"score-server: error: the database schema is at {revision or 'nothing'}"
    )
    assert f"run 'score-server migrate --data-dir {platform}' once" in line
    assert schema_revisions(env["PYSCORE_DATABASE_URL"])[0] == revision  # not migrated


def test_replicas_wait_for_the_migration_job_then_serve(platform: Path) -> None:
    env = older_database(platform, "0003")
    port = free_port()
    log = platform.parent / "serve.log"
    with open(log, "wb") as out:
        replica = subprocess.Popen(
            [
                SERVER,
                "serve",
                "--data-dir",
                str(platform),
                "--port",
                str(port),
                "--wait-for-schema",
                "120",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
    try:
        deadline = time.monotonic() + 30
        while "waiting up to 120 s" not in log.read_text() and time.monotonic() < deadline:
            assert replica.poll() is None, log.read_text()
            time.sleep(0.2)
        assert "from 0003 to" in log.read_text()
        job = run(SERVER, "migrate", "--data-dir", str(platform), env=env)
        assert job.returncode == 0, job.stderr
        assert job.stdout.startswith("Database schema at ") and "(was 0003)" in job.stdout
        ready = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and replica.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert ready is not None and ready.status_code == 200, log.read_text()
    finally:
        replica.terminate()
        replica.wait(20)


def test_migrate_makes_a_new_database_servable(platform: Path) -> None:
    """A fresh database (a first deployment's migration job): schema, signing keys, analysis
    types; a second run changes nothing."""
    env = older_database(platform, None)
    first = run(SERVER, "migrate", "--data-dir", str(platform), env=env, check=True)
    assert first.stdout.strip().endswith("(was nothing: a new database)")
    again = run(SERVER, "migrate", "--data-dir", str(platform), env=env, check=True)
    head = again.stdout.split()[3]
    assert again.stdout.strip() == f"Database schema at {head} (was {head})"
    run(SERVER, "signing-key", "list", "--data-dir", str(platform), env=env, check=True)


def test_an_unreachable_database_at_start_is_one_line(platform: Path) -> None:
    env = {"PYSCORE_DATABASE_URL": f"postgresql://pyscore@127.0.0.1:{free_port()}/pyscore"}
    for command in (["serve", "--port", str(free_port())], ["migrate"]):
        result = run(SERVER, *command, "--data-dir", str(platform), env=env, timeout=60)
        assert result.returncode == 1, command
        assert one_line_error(result).startswith("score-server: error: database: "), command
