"""What the command lines say when the input or the machine is wrong: one line, a non-zero
exit code, nothing half-made left behind."""

from __future__ import annotations

import os
import socket
import tempfile

import httpx
import pytest

from tests.api import bearer
from tests.conftest import CLIENT, SERVER, free_port, init_server, one_line_error, run
from tests.mounts import tmpfs
from tests.publish import file_md5, publish, random_file


def manifest_row(server, name: str):
    from pyscore.wire.manifest import parse_download

    rows = parse_download(server.manifest.read_text(), "m")
    return next(r for r in rows if r.fileName == name)


def test_malformed_md5_is_refused_before_any_call(demo_server, tmp_path):
    f = tmp_path / "a.bam"
    f.write_bytes(b"abc")
    result = demo_server.client(
        "upload",
        "--object-id",
        "5b0e8f1c-6c1e-4b3a-9a51-1f0d2c3b4a59",
        "--file",
        str(f),
        "--md5",
        "xyz",
    )
    assert result.returncode == 2
    assert "--md5" in one_line_error(result)


def test_download_by_analysis_id(demo_server, demo_files, tmp_path):
    bam = manifest_row(demo_server, "DONOR-1-N.bam")
    reader = demo_server.token("PROGRAMDATA-DEMO.READ")
    result = demo_server.client(
        "download",
        "--analysis-id",
        bam.analysisId,
        "--study-id",
        "DEMO",
        "--output-dir",
        str(tmp_path),
        "--output-layout",
        "bundle",
        token=reader,
    )
    assert result.returncode == 0, result.stderr
    got = sorted(p.name for p in (tmp_path / bam.analysisId).iterdir())
    assert got == ["DONOR-1-N.bam", "DONOR-1-N.bam.bai"]
    for name in got:
        assert file_md5(tmp_path / bam.analysisId / name) == file_md5(demo_files / name)
    missing = demo_server.client(
        "download",
        "--analysis-id",
        bam.analysisId,
        "--study-id",
        "NOPE",
        "--output-dir",
        str(tmp_path),
        token=reader,
    )
    assert missing.returncode == 2 and "NOPE" in one_line_error(missing)


def test_init_refuses_a_used_directory_and_changes_nothing(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "keep.txt").write_text("mine")
    result = run(SERVER, "init", "--data-dir", str(data))
    assert result.returncode == 2
    assert "not empty" in one_line_error(result)
    assert [p.name for p in data.iterdir()] == ["keep.txt"]


def test_init_that_cannot_reach_its_store_leaves_nothing(tmp_path):
    data = tmp_path / "data"
    result = run(
        SERVER,
        "init",
        "--data-dir",
        str(data),
        "--store",
        "s3://bucket",
        "--s3-endpoint",
        "http://127.0.0.1:9",
        "--s3-access-key",
        "a",
        "--s3-secret-key",
        "b",
    )
    assert result.returncode == 1
    assert "127.0.0.1:9" in one_line_error(result)
    assert not data.exists()


def test_unpublished_object_is_named_as_such_with_exit_1(tmp_path):
    """Not a usage error: the same line (and exit code) as against the original platform."""
    server = init_server(tmp_path / "data")
    source = random_file(tmp_path / "u.bam", 1000)
    (object_id,) = publish(server.data_dir, [source], study="UNP", access="open")
    with server:
        analysis = httpx.get(f"{server.url}/entities/{object_id}", timeout=30).json()["gnosId"]
        r = httpx.put(
            f"{server.url}/studies/UNP/analysis/unpublish/{analysis}",
            headers=bearer(server.admin_token),
            timeout=30,
        )
        assert r.status_code == 200, r.text
        result = server.client("url", "--object-id", object_id)
    assert result.returncode == 1
    line = one_line_error(result)
    assert f"its analysis {analysis} is UNPUBLISHED" in line and object_id in line


# -- the first hour: wrong settings fail at once and say which -------------------------------
FOREVER = {"STORAGE_RETRYNUMBER": "-1"}  # were anything retried, the run would hit its bound


def first_contact(server, setting: str, value: str, *args: str):
    """A run with one service URL wrong and retries unbounded: only failing on the first
    attempt ends it within the test's bound (the run's timeout). In a directory of its own
    (relative output directories land there)."""
    clinical = manifest_row(server, "clinical.tsv")
    command = args or ("download", "--object-id", clinical.objectId, "--output-dir", "out")
    with tempfile.TemporaryDirectory() as cwd:
        return server.client(*command, env={setting: value, **FOREVER}, timeout=60, cwd=cwd)


def test_a_refused_connection_names_the_setting_and_exits_2(demo_server, tmp_path):
    """By object id and by manifest (many lookups under way when the first fails: the run
    still ends, none of them waited for)."""
    # bound and never listening: refused, and no server started meanwhile can take it
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    port = held.getsockname()[1]
    by_manifest = ("download", "--manifest", str(demo_server.manifest), "--output-dir", "out")
    for setting in ("METADATA_URL", "STORAGE_URL"):
        value = f"http://127.0.0.1:{port}"
        for command in ((), by_manifest):
            result = first_contact(demo_server, setting, value, *command)
            assert result.returncode == 2, result.stderr
            assert one_line_error(result) == (
                f"score-client: error: {setting}={value} refused the connection "
                "(set in the environment)"
            )
    clinical = manifest_row(demo_server, "clinical.tsv")
    url = first_contact(demo_server, "STORAGE_URL", value, "url", "--object-id", clinical.objectId)
    held.close()
    assert url.returncode == 2
    assert one_line_error(url) == (
        f"score-client: error: STORAGE_URL={value} refused the connection (set in the environment)"
    )


@pytest.mark.parametrize(
    ("setting", "url", "problem"),
    [
        ("METADATA_URL", "127.0.0.1:{port}", "is not a URL: it needs http:// or https://"),
        ("STORAGE_URL", "https://127.0.0.1:{port}", "does not speak TLS (is it http://?)"),
    ],
    ids=["no-scheme", "https-to-http"],
)
def test_a_url_of_the_wrong_kind_is_a_usage_error(demo_server, setting, url, problem):
    value = url.format(port=demo_server.port)
    result = first_contact(demo_server, setting, value)
    assert result.returncode == 2
    assert one_line_error(result) == (
        f"score-client: error: {setting}={value} {problem} (set in the environment)"
    )


def test_a_setting_from_a_file_names_the_file(demo_server, tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    value = f"http://127.0.0.1:{free_port()}"
    (conf / "application.properties").write_text(f"metadata.url={value}\n")
    env = {**FOREVER, "SCORE_CLIENT_CONF_DIR": str(conf)}
    clinical = manifest_row(demo_server, "clinical.tsv")
    result = run(
        CLIENT,
        "download",
        "--object-id",
        clinical.objectId,
        "--output-dir",
        str(tmp_path / "out"),
        env={k: v for k, v in {**demo_server.client_env(), **env}.items() if k != "METADATA_URL"},
        timeout=60,
    )
    assert result.returncode == 2
    assert one_line_error(result) == (
        f"score-client: error: METADATA_URL={value} refused the connection "
        f"(set in {conf / 'application.properties'} as metadata.url)"
    )


def test_a_wrong_path_is_not_a_missing_file(demo_server):
    """A base URL with a path the service does not answer under: every call is a 404, which
    is the URL's fault, not the file's."""
    for setting, path, service, probe in (
        ("METADATA_URL", "/song", "Song", "/entities"),
        ("STORAGE_URL", "/score", "Score", "/download/ping"),
    ):
        value = f"{demo_server.url}{path}"
        result = first_contact(demo_server, setting, value)
        assert result.returncode == 2, result.stderr
        assert one_line_error(result) == (
            f"score-client: error: {setting}={value} is not the base URL of a {service} "
            f"service (its {probe} answers 404) (set in the environment)"
        )


# -- unwritable output directories --------------------------------------------------------------
@pytest.fixture
def unwritable(tmp_path):
    """A directory nobody may write into: its mode says so, and for root (whom modes do not
    stop) a read-only file system is mounted on it."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            with tmpfs(folder, "ro,size=1m"):
                yield folder
        else:
            yield folder
    finally:
        folder.chmod(0o755)


def test_an_unwritable_output_dir_is_one_line_before_any_lookup(demo_server, unwritable):
    """Checked first: with the services' URLs refused, it is still the directory that is
    named (not the URLs, not each file)."""
    nowhere = f"http://127.0.0.1:{free_port()}"
    for args in (
        ("download", "--manifest", str(demo_server.manifest)),
        ("view", "--manifest", str(demo_server.manifest), "--query", "chr1:1-100"),
    ):
        result = demo_server.client(
            *args,
            "--output-dir",
            str(unwritable),
            env={"METADATA_URL": nowhere, "STORAGE_URL": nowhere},
        )
        assert result.returncode == 2, result.stderr
        line = one_line_error(result)
        assert line.startswith(
            f"score-client: error: cannot write to --output-dir {unwritable} ("
        ), line


def test_output_dir_that_is_a_file_is_a_usage_error(demo_server, tmp_path):
    clinical = manifest_row(demo_server, "clinical.tsv")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    result = demo_server.client(
        "download", "--object-id", clinical.objectId, "--output-dir", str(blocker)
    )
    assert result.returncode == 2
    assert one_line_error(result) == (
        f"score-client: error: cannot write to --output-dir {blocker} (it is not a directory)"
    )
    assert blocker.read_text() == "x"


# -- object ids ------------------------------------------------------------------------------
def test_a_mistyped_object_id_says_so(demo_server, tmp_path):
    missing = "00000000-0000-4000-8000-000000000000"
    result = demo_server.client("url", "--object-id", missing)
    assert result.returncode == 1
    assert one_line_error(result) == (
        f"score-client: error: no object with id {missing} (check the id or the manifest)"
    )
    download = demo_server.client("download", "--object-id", missing, "--output-dir", str(tmp_path))
    assert download.returncode == 1
    errors = [line for line in download.stderr.splitlines() if line.startswith("ERROR")]
    assert errors == [f"ERROR: no object with id {missing} (check the id or the manifest)"]


def test_comma_separated_ids_are_told_to_use_spaces(demo_server, tmp_path):
    a, b = (manifest_row(demo_server, n).objectId for n in ("clinical.tsv", "reference.fa"))
    result = demo_server.client(
        "download", "--object-id", f"{a},{b}", "--output-dir", str(tmp_path)
    )
    assert result.returncode == 2
    assert one_line_error(result) == (
        f"score-client download: error: argument --object-id: '{a},{b}' is not an object id (a "
        f"UUID); separate several ids with spaces: --object-id {a} {b} (see 'score-client "
        "download --help')"
    )


# -- settings files ---------------------------------------------------------------------------
def test_an_unknown_key_in_application_properties_is_named_with_the_nearest(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    props = conf / "application.properties"
    props.write_text(
        "storage.urll=http://127.0.0.1:1\n"
        "transport.memory=1\n"  # the original's setting: known, not ours to warn about
        "metadata.url=http://127.0.0.1:2\n"
    )
    result = run(CLIENT, "info", env={"SCORE_CLIENT_CONF_DIR": str(conf)})
    assert result.returncode == 0
    assert result.stderr.strip().splitlines() == [
        f"score-client: warning: {props}: unknown setting 'storage.urll' (did you mean "
        "'storage.url'?); it is ignored"
    ]
