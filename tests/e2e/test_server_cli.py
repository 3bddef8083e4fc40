"""An operator's first hour with `score-server`, run as they would run it: the messages and
exit codes of the first mistakes (a PostgreSQL URL without its driver, a study command in the
wrong order), the admin commands' one grammar, what `signing-key rotate --drop-old` promises,
a second demo study beside the first, and `scripts/postgres.sh` as a trial's database."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SERVER, free_port, one_line_error, run
from tests.publish import file_md5

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_SH = ROOT / "scripts" / "postgres.sh"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
NO_DRIVER = (
    "score-server: error: a postgresql:// database needs the psycopg driver, which is not "
    "installed: pip install 'pyscore[postgres]'"
)


@pytest.fixture
def platform(tmp_path: Path) -> Path:
    """A fresh SQLite platform's data directory (no server: these are offline commands)."""
    data = tmp_path / "data"
    run(SERVER, "init", "--data-dir", str(data), check=True)
    return data


def without_psycopg(tmp_path: Path) -> dict[str, str]:
    """The environment of a machine where pyscore was installed without its `postgres` extra:
    `import psycopg` fails exactly as it does there."""
    shim = tmp_path / "no-psycopg"
    (shim / "psycopg").mkdir(parents=True)
    (shim / "psycopg" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'psycopg'\", name='psycopg')\n"
    )
    return {"PYTHONPATH": str(shim)}


# -- issue 29, item 8: a PostgreSQL URL without the driver ------------------------------------
def test_init_with_postgresql_but_no_driver_names_the_extra(tmp_path: Path) -> None:
    data = tmp_path / "data"
    url = "postgresql://pyscore:secret@127.0.0.1:5432/pyscore"
    no_driver = without_psycopg(tmp_path)
    result = run(SERVER, "init", f"--data-dir={data}", f"--database-url={url}", env=no_driver)
    assert result.returncode == 2
    assert one_line_error(result) == NO_DRIVER
    assert not data.exists()  # nothing half-made to clean up before the next try


def test_commands_on_a_postgresql_platform_without_the_driver_name_the_extra(
    platform: Path, tmp_path: Path
) -> None:
    env = {
        **without_psycopg(tmp_path),
        "PYSCORE_DATABASE_URL": "postgresql://pyscore@127.0.0.1:5432/pyscore",
    }
    for command in (["token", "list"], ["serve", "--port", "9"], ["study", "list"]):
        result = run(SERVER, *command, "--data-dir", str(platform), env=env)
        assert result.returncode == 2, command
        assert one_line_error(result) == NO_DRIVER, command


# -- issue 29, item 8: one grammar for the admin commands -------------------------------------
def studies(data: Path) -> list[str]:
    out = run(SERVER, "study", "list", "--data-dir", str(data), check=True).stdout
    lines = out.splitlines()
    assert lines[0] == "id\tname\torganization"
    return [line.split("\t")[0] for line in lines[1:]]


def test_study_create_and_list_read_like_token_create(platform: Path) -> None:
    d = str(platform)
    result = run(SERVER, "study", "create", "PACA-CA", "--data-dir", d, "--name", "Pancreatic")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Created study PACA-CA\n"
    run(SERVER, "study", "create", "--data-dir", d, "BRCA-UK", check=True)
    assert studies(platform) == ["BRCA-UK", "PACA-CA"]
    listed = run(SERVER, "study", "list", "--data-dir", d, check=True).stdout
    assert "PACA-CA\tPancreatic\t\n" in listed

    again = run(SERVER, "study", "create", "PACA-CA", "--data-dir", d)
    assert again.returncode == 2
    assert one_line_error(again) == "score-server: error: The studyId 'PACA-CA' already exists"


def test_study_create_without_a_name_creates_nothing(platform: Path) -> None:
    result = run(SERVER, "study", "create", "--data-dir", str(platform))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "score-server study create: error: the following arguments are required: STUDY_ID"
    )
    assert studies(platform) == []  # there was a study named "create" here once


@pytest.mark.parametrize("name", ["create", "list", "LIST"])
def test_a_study_command_is_refused_as_a_study_name(platform: Path, name: str) -> None:
    result = run(SERVER, "study", "create", name, "--data-dir", str(platform))
    assert result.returncode == 2
    assert one_line_error(result) == (
        f"score-server: error: '{name}' is a study command (create, list), not a study id; "
        "choose another id"
    )
    assert studies(platform) == []


def test_a_study_id_no_scope_could_name_is_refused(platform: Path) -> None:
    result = run(SERVER, "study", "create", "PACA CA", "--data-dir", str(platform))
    assert result.returncode == 2
    assert one_line_error(result) == (
        "score-server: error: study id 'PACA CA': use letters, digits, '.', '_' and '-' "
        "(scopes name it: PROGRAMDATA-<study>.READ)"
    )


def test_the_old_study_grammar_still_works_with_a_note(platform: Path) -> None:
    d = str(platform)
    result = run(SERVER, "study", "--data-dir", d, "OLD-1", "--organization", "OICR")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Created study OLD-1\n"
    assert result.stderr == (
        "score-server: warning: 'score-server study STUDY_ID' is deprecated; "
        "use 'score-server study create STUDY_ID'\n"
    )
    result = run(SERVER, "study", "OLD-2", f"--data-dir={d}")
    assert result.returncode == 0, result.stderr
    assert studies(platform) == ["OLD-1", "OLD-2"]
    # a verb is a verb in either order: `study --data-dir D list` lists, creates no "list"
    assert run(SERVER, "study", "--data-dir", d, "list", check=True).stdout.count("\n") == 3


# -- issue 29, item 8: what --drop-old promises ------------------------------------------------
def test_signing_key_drop_old_says_when_old_urls_stop(platform: Path) -> None:
    from pyscore.server.keys import REFRESH  # how long a server trusts its copy of the ring

    help_text = run(SERVER, "signing-key", "rotate", "--help", check=True).stdout
    assert "at once" not in help_text
    assert (
        " ".join(help_text.split()).count(
            "--drop-old void every URL signed so far (a leaked key): each running server stops "
            f"honouring them when it next reloads the key ring, within {REFRESH:.0f} s; the URLs "
            "it signs until then stop too"
        )
        == 1
    )
    result = run(SERVER, "signing-key", "rotate", "--drop-old", "--data-dir", str(platform))
    assert result.returncode == 0, result.stderr
    kid = result.stdout.strip()
    assert result.stderr == (
        f"New signing key {kid}; running servers sign with it and stop honouring every "
        "older key's URLs within 10 s (when they reload the key ring)\n"
    )
    kept = run(SERVER, "signing-key", "rotate", "--data-dir", str(platform), check=True)
    assert kept.stderr == (
        f"New signing key {kept.stdout.strip()}; running servers sign with it within 10 s "
        "(when they reload the key ring); 1 older key(s) still verify the URLs they signed\n"
    )


# -- issue 29, item 10: a second demo study beside the first ----------------------------------
def test_a_second_demo_study_keeps_the_first_ones_files(platform: Path) -> None:
    d = str(platform)
    first = run(SERVER, "demo", "--data-dir", d, "--reads", "60", timeout=300)
    assert first.returncode == 0, first.stderr
    demo_manifest = Path(first.stdout.strip())
    demo_dir = platform / "demo-files" / "DEMO"
    assert demo_manifest == demo_dir / "DEMO-manifest.tsv"
    said = first.stderr.splitlines()
    assert said[0] == f"Demo study DEMO published; files generated in {demo_dir}"
    assert said[1].startswith("The genome viewer's reference is now reference.fa (")  # the first
    before = {p.name: file_md5(p) for p in demo_dir.iterdir()}

    # fewer reads: files of the same names and other bytes, which used to replace the first's
    second = run(SERVER, "demo", "--data-dir", d, "--study-id", "OTHER", "--reads", "20")
    assert second.returncode == 0, second.stderr
    other_dir = platform / "demo-files" / "OTHER"
    assert Path(second.stdout.strip()) == other_dir / "OTHER-manifest.tsv"
    # the viewer keeps the first demo's reference
    assert second.stderr == f"Demo study OTHER published; files generated in {other_dir}\n"
    assert {p.name: file_md5(p) for p in demo_dir.iterdir()} == before
    assert file_md5(other_dir / "DONOR-1-N.bam") != before["DONOR-1-N.bam"]
    # each manifest describes the files beside it
    for manifest in (demo_manifest, other_dir / "OTHER-manifest.tsv"):
        lines = [line.split("\t") for line in manifest.read_text().splitlines()]
        col = {name: i for i, name in enumerate(lines[0])}
        for row in lines[1:]:
            assert row[col["md5sum"]] == file_md5(manifest.parent / row[col["file_name"]])


def test_a_files_dir_holding_another_studys_demo_is_refused(platform: Path) -> None:
    d, files = str(platform), platform.parent / "shared"
    run(SERVER, "demo", "--data-dir", d, "--reads", "20", "--files-dir", str(files), check=True)
    before = {p.name: file_md5(p) for p in files.iterdir()}
    result = run(
        SERVER, "demo", "--data-dir", d, "--study-id", "OTHER", "--reads", "30",
        "--files-dir", str(files),
    )  # fmt: skip
    assert result.returncode == 2
    assert one_line_error(result) == (
        f"score-server: error: {files} holds the demo files of study DEMO; give study OTHER "
        "another --files-dir"
    )
    assert {p.name: file_md5(p) for p in files.iterdir()} == before


# -- issue 29, item 8: a PostgreSQL for a trial -----------------------------------------------
@pytest.fixture
def pg_dir() -> Iterator[Path]:
    """A directory PostgreSQL's own account can reach (pytest's are private to root)."""
    if not (PG_BIN / "initdb").exists():
        if os.environ.get("PYSCORE_REQUIRE_TOOLS"):
            pytest.fail("PostgreSQL 15 is required but not installed")
        pytest.skip("PostgreSQL 15 is not installed (scripts/postgres.sh installs it)")
    work = Path(tempfile.mkdtemp(prefix="pyscore-pg-"))
    work.chmod(0o755)
    try:
        yield work / "pg"
    finally:
        run("bash", str(POSTGRES_SH), "stop", str(work / "pg"))
        shutil.rmtree(work, ignore_errors=True)


def test_postgres_script_without_arguments_says_how_to_use_it() -> None:
    result = run("bash", str(POSTGRES_SH))
    assert result.returncode == 2
    assert one_line_error(result) == (
        "usage: scripts/postgres.sh start DIR [PORT] | stop DIR  (a throwaway PostgreSQL 15 "
        "on 127.0.0.1 for a trial or the tests)"
    )


def test_postgres_script_gives_a_trial_its_database(pg_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    started = run("bash", str(POSTGRES_SH), "start", str(pg_dir), str(port), timeout=300)
    assert started.returncode == 0, started.stderr
    # stdout stays the one line scripts/test.sh evals; the operator reads stderr
    assert started.stdout == f"export PYSCORE_TEST_POSTGRES={url}\n"
    assert started.stderr == (
        f"PostgreSQL 15 is running on 127.0.0.1:{port}, data and log in {pg_dir} "
        "(loopback only, no password, fsync off: for a trial or the tests, not for data "
        "you keep)\n"
        f"  a trial platform: score-server init --data-dir DIR --database-url {url}\n"
        f"  stop it:          bash scripts/postgres.sh stop {pg_dir}\n"
    )
    trial = run(SERVER, "init", "--data-dir", str(tmp_path / "data"), "--database-url", url)
    assert trial.returncode == 0, trial.stderr
    assert f"Database: 127.0.0.1:{port}/postgres" in trial.stdout
    stopped = run("bash", str(POSTGRES_SH), "stop", str(pg_dir))
    assert stopped.returncode == 0
    assert stopped.stderr == f"PostgreSQL in {pg_dir} stopped\n"
