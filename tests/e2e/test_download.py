"""score-client download through the real CLI against a real score-server."""

from __future__ import annotations

import json

import pytest

from pyscore.wire.manifest import parse_download
from tests.publish import file_md5


def demo_refused(files: int) -> str:
    """What the client says of the demo's controlled files to a token of another program."""
    return (
        f"ERROR: {files} files need scope PROGRAMDATA-DEMO.READ, which this token does not "
        "have: ask for access to program DEMO (on ICGC ARGO: DACO approval, "
        "https://daco.icgc-argo.org), then use a token with that scope (accessToken / "
        "ACCESSTOKEN)"
    )


def rows(server):
    return parse_download(server.manifest.read_text(), str(server.manifest))


@pytest.fixture(scope="module")
def reader(demo_server) -> str:
    return demo_server.token("PROGRAMDATA-DEMO.READ", "--user", "reader")


@pytest.mark.parametrize("layout", ["filename", "bundle", "id"])
def test_manifest_download_each_layout(demo_server, demo_files, reader, tmp_path, layout):
    out = tmp_path / "out"
    result = demo_server.client(
        "download",
        "--manifest",
        str(demo_server.manifest),
        "--output-dir",
        str(out),
        "--output-layout",
        layout,
        token=reader,
    )
    assert result.returncode == 0, result.stderr
    manifest_rows = rows(demo_server)
    for row in manifest_rows:
        if layout == "filename":
            got = out / row.fileName
        elif layout == "bundle":
            got = out / row.analysisId / row.fileName
        else:
            got = out / row.objectId
        assert got.is_file(), f"{got} missing; stderr: {result.stderr}"
        assert file_md5(got) == row.fileMd5sum == file_md5(demo_files / row.fileName)
    # index files came along (--index defaults to true)
    if layout == "filename":
        assert file_md5(out / "DONOR-1-N.bam.bai") == file_md5(demo_files / "DONOR-1-N.bam.bai")
        assert file_md5(out / "DONOR-2-N.cram.crai") == file_md5(demo_files / "DONOR-2-N.cram.crai")
    assert not (out / ".score-client").exists(), "state left behind after success"
    assert "15 downloaded" in result.stderr


def test_open_file_needs_no_token(demo_server, demo_files, tmp_path):
    clinical = next(r for r in rows(demo_server) if r.fileName == "clinical.tsv")
    result = demo_server.client(
        "download", "--object-id", clinical.objectId, "--output-dir", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    assert file_md5(tmp_path / "clinical.tsv") == file_md5(demo_files / "clinical.tsv")


def test_controlled_file_refused_without_token(demo_server, tmp_path):
    bam = next(r for r in rows(demo_server) if r.fileName == "DONOR-1-N.bam")
    result = demo_server.client(
        "download", "--object-id", bam.objectId, "--output-dir", str(tmp_path)
    )
    assert result.returncode == 3, result.stderr
    assert "access token" in result.stderr.lower()
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "DONOR-1-N.bam").exists()


def test_controlled_file_refused_with_other_study_scope(demo_server, tmp_path):
    other = demo_server.token("PROGRAMDATA-OTHER.READ")
    bam = next(r for r in rows(demo_server) if r.fileName == "DONOR-1-N.bam")
    result = demo_server.client(
        "download", "--object-id", bam.objectId, "--output-dir", str(tmp_path), token=other
    )
    assert result.returncode == 3, result.stderr
    assert "PROGRAMDATA-DEMO.READ" in result.stderr
    assert not (tmp_path / "DONOR-1-N.bam").exists()


def test_unknown_object_id(demo_server, tmp_path, reader):
    result = demo_server.client(
        "download",
        "--object-id",
        "00000000-0000-4000-8000-000000000000",
        "--output-dir",
        str(tmp_path),
        token=reader,
    )
    assert result.returncode == 1
    assert (
        "ERROR: no object with id 00000000-0000-4000-8000-000000000000 (check the id or the "
        "manifest)"
    ) in result.stderr.splitlines()
    assert "Traceback" not in result.stderr


def test_malformed_manifest_names_line(demo_server, tmp_path, reader):
    bad = tmp_path / "bad.tsv"
    lines = demo_server.manifest.read_text().splitlines()
    lines[2] = "\t".join(lines[2].split("\t")[:5])
    bad.write_text("\n".join(lines) + "\n")
    result = demo_server.client(
        "download", "--manifest", str(bad), "--output-dir", str(tmp_path / "o"), token=reader
    )
    assert result.returncode == 2
    assert "line 3" in result.stderr and "11" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_existing_file_skipped_then_forced(demo_server, tmp_path, reader):
    clinical = next(r for r in rows(demo_server) if r.fileName == "clinical.tsv")
    args = ("download", "--object-id", clinical.objectId, "--output-dir", str(tmp_path))
    assert demo_server.client(*args).returncode == 0
    again = demo_server.client(*args)
    assert again.returncode == 0
    assert (
        f"clinical.tsv is already complete: {tmp_path.resolve() / 'clinical.tsv'} "
        "(--force fetches it again)"
    ) in again.stderr.splitlines()
    forced = demo_server.client(*args, "--force")
    assert forced.returncode == 0 and "1 downloaded" in forced.stderr


def test_json_events(demo_server, tmp_path):
    clinical = next(r for r in rows(demo_server) if r.fileName == "clinical.tsv")
    result = demo_server.client(
        "download", "--json", "--object-id", clinical.objectId, "--output-dir", str(tmp_path)
    )
    assert result.returncode == 0
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "plan" and "start" in kinds and "done" in kinds
    done = next(e for e in events if e["event"] == "done")
    assert done["path"] == str((tmp_path / "clinical.tsv").resolve())


def test_manifest_of_a_study_the_token_cannot_read_is_one_summary(demo_server, tmp_path):
    """The demo manifest with a token of another program: the open files arrive, the twelve
    controlled ones (six data files, six index files) are refused in one line that says
    what to ask for, and the exit code says it was permission (nothing else failed)."""
    other = demo_server.token("PROGRAMDATA-OTHER.READ")
    result = demo_server.client(
        "download",
        "--manifest",
        str(demo_server.manifest),
        "--output-dir",
        str(tmp_path),
        token=other,
    )
    assert result.returncode == 3, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert errors == [demo_refused(12)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "clinical.tsv",
        "reference.fa",
        "reference.fa.fai",
    ]


def test_a_relative_manifest_is_also_found_in_the_manifest_folder(
    demo_server, demo_files, reader, tmp_path
):
    """The original's Docker use: the caller's directory mounted at /score-client/manifest,
    then `--manifest name.txt` run from /score-client."""
    (tmp_path / "manifest").mkdir()
    (tmp_path / "manifest" / "mine.tsv").write_text(demo_server.manifest.read_text())
    out = tmp_path / "manifest" / "data"
    result = demo_server.client(
        "download", "--manifest", "mine.tsv", "--output-dir", str(out), token=reader, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    for row in rows(demo_server):
        assert file_md5(out / row.fileName) == file_md5(demo_files / row.fileName)
    missing = demo_server.client(
        "download", "--manifest", "other.tsv", "--output-dir", str(out), token=reader, cwd=tmp_path
    )
    assert missing.returncode == 2
    assert "Manifest 'other.tsv' does not exist or is not a file" in missing.stderr
