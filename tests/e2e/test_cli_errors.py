"""What the command lines say when the input or the machine is wrong: one line, a non-zero
exit code, nothing half-made left behind."""

from __future__ import annotations

import httpx

from tests.api import bearer
from tests.conftest import SERVER, init_server, one_line_error, run
from tests.publish import file_md5, publish, random_file


def manifest_row(server, name: str):
    from pyscore.wire.manifest import parse_download

    rows = parse_download(server.manifest.read_text(), "m")
    return next(r for r in rows if r.fileName == name)


def test_output_dir_that_is_a_file(demo_server, tmp_path):
    clinical = manifest_row(demo_server, "clinical.tsv")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    result = demo_server.client(
        "download", "--object-id", clinical.objectId, "--output-dir", str(blocker)
    )
    assert result.returncode == 1
    assert str(blocker) in one_line_error(result)


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
