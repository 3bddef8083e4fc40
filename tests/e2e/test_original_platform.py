"""score-client against the original platform's wire contract: the real CLI talks to
tests/original_platform.py, a double of the Java score-server + Song + S3 built from
shared/reference/original_wire.md. What is checked is what a user of ARGO would notice: bytes
and MD5s, exit codes, one-line messages, and the requests the double counted (every data GET
had exactly a part's Range, nothing fetched twice, no HEAD on a GET URL)."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from pyscore.client.ranges import Ranges
from pyscore.wire.manifest import format_argo
from tests.conftest import CLIENT, need, one_line_error, run
from tests.mounts import Mounter, require_fuse, tracebacks, tree, wait_until
from tests.original_platform import ORIGINAL_PART_SIZE, MiB, OriginalPlatform

STUDY = "ORIG"


def blob(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def client(double: OriginalPlatform, *args: str, token: str | None = None, **kw):
    return run(CLIENT, *args, env={**double.client_env(token), **kw.pop("env", {})}, **kw)


def assert_only_exact_part_ranges(double: OriginalPlatform, object_id: str) -> None:
    """Every data GET of the object asked for exactly one of its parts, and none was refused."""
    wanted = double.part_ranges(object_id)
    gets = [h for h in double.data_gets() if h.path.endswith(object_id)]
    assert gets, "no data was fetched"
    assert {h.range for h in gets} == wanted
    assert all(h.status == 206 for h in gets), [(h.range, h.status) for h in gets]
    assert not [h for h in double.hits if h.method == "HEAD"]


@pytest.fixture
def double():
    with OriginalPlatform(part_size=MiB) as d:
        yield d


# -- download ---------------------------------------------------------------------------------
def test_multi_part_object_with_the_originals_20_mib_parts(tmp_path):
    """The original's default part size: 20 MiB parts, each URL signed with its Range."""
    with OriginalPlatform(part_size=ORIGINAL_PART_SIZE) as double:
        data = blob(2 * ORIGINAL_PART_SIZE + 5 * MiB + 7)
        object_id = double.add(double.analysis(STUDY), "big.bam", data)
        reader = double.token(f"PROGRAMDATA-{STUDY}.READ")
        result = client(
            double,
            "download",
            "--object-id",
            object_id,
            "--output-dir",
            str(tmp_path),
            token=reader,
        )
        assert result.returncode == 0, result.stderr
        assert md5((tmp_path / "big.bam").read_bytes()) == md5(data)
        assert_only_exact_part_ranges(double, object_id)
        assert len(double.data_gets()) == 3, "a part was fetched more than once"


def test_kill_9_in_the_middle_of_a_part_then_rerun(tmp_path):
    """The re-run fetches an interrupted part whole, with its own Range: the store refuses
    the part URL for the unfinished tail of the part."""
    part = 6 * MiB  # more than the client's 4 MiB write buffer: a part is made durable in pieces
    with OriginalPlatform(part_size=part) as double:
        data = blob(3 * part + 2 * MiB + 3, seed=2)
        object_id = double.add(double.analysis(STUDY), "big.bam", data)
        reader = double.token("score.READ")
        args = ("download", "--object-id", object_id, "--output-dir", str(tmp_path))
        env = {**os.environ, **double.client_env(reader), "TRANSPORT_PARALLEL": "2"}
        double.rate = 2 * MiB

        def midway() -> bool:  # a part done, and most of another sent
            gets = double.data_gets()
            return any(h.done for h in gets) and any(
                not h.done and h.sent >= part - MiB // 2 for h in gets
            )

        journal = tmp_path / ".score-client" / f"{object_id}.journal"

        def durable_parts() -> int:  # whole parts the client's journal records as on disk
            done = Ranges()
            lines = journal.read_text().split("\n")[1:-1] if journal.exists() else []
            for start, _, end in (line.partition(" ") for line in lines):
                if start.isdigit() and end.isdigit():
                    done.add(int(start), int(end))
            starts = range(0, len(data), part)
            return sum(done.end_of_run(s) >= min(s + part, len(data)) for s in starts)

        proc = subprocess.Popen(
            [CLIENT, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            assert wait_until(midway, 60), [(h.range, h.sent) for h in double.data_gets()]
            # hold the unfinished part where it is until the client's syncer has journaled
            # the finished one as durable (it is not fetched again below), however busy the
            # machine: waited for, not given a guessed 1.5 s
            double.rate = 1
            assert wait_until(lambda: durable_parts() >= 1, 60), journal.read_text()
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        assert not (tmp_path / "big.bam").exists()
        # the killed run's responses end at their next write (each may count one more chunk
        # first): the re-run's bytes are counted from then
        assert wait_until(lambda: all(h.done for h in double.data_gets()), 60)
        first = double.data_bytes()
        double.rate = 0
        result = client(double, *args, token=reader)
        assert result.returncode == 0, result.stderr
        assert md5((tmp_path / "big.bam").read_bytes()) == md5(data)
        assert not (tmp_path / "big.bam").is_symlink()
        assert not (tmp_path / ".score-client").exists()
        assert_only_exact_part_ranges(double, object_id)
        assert double.data_bytes() - first <= len(data) - part, "finished parts fetched again"


def test_manifest_and_analysis_id_fetch_data_and_index(double, tmp_path):
    analysis = double.analysis(STUDY)
    bam, bai = blob(3 * MiB + 11, seed=3), blob(20_000, seed=4)
    bam_id = double.add(analysis, "x.bam", bam)
    bai_id = double.add(analysis, "x.bam.bai", bai, meta=False)  # put there outside score
    reader = double.token(f"PROGRAMDATA-{STUDY}.READ")
    by_analysis = client(
        double,
        "download",
        "--analysis-id",
        analysis,
        "--study-id",
        STUDY,
        "--output-dir",
        str(tmp_path / "a"),
        token=reader,
    )
    assert by_analysis.returncode == 0, by_analysis.stderr
    assert md5((tmp_path / "a/x.bam").read_bytes()) == md5(bam)
    assert md5((tmp_path / "a/x.bam.bai").read_bytes()) == md5(bai)
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text(
        format_argo(
            [
                {
                    "repository_code": "ORIGINAL",
                    "analysis_id": analysis,
                    "object_id": bam_id,
                    "file_name": "x.bam",
                    "file_size": len(bam),
                    "index_object_id": bai_id,
                    "program_id": STUDY,
                }
            ]
        )
    )
    by_manifest = client(
        double,
        "download",
        "--manifest",
        str(manifest),
        "--output-dir",
        str(tmp_path / "m"),
        "--output-layout",
        "bundle",
        token=reader,
    )
    assert by_manifest.returncode == 0, by_manifest.stderr
    assert md5((tmp_path / "m" / analysis / "x.bam").read_bytes()) == md5(bam)
    assert md5((tmp_path / "m" / analysis / "x.bam.bai").read_bytes()) == md5(bai)
    assert_only_exact_part_ranges(double, bam_id)
    assert_only_exact_part_ranges(double, bai_id)
    pages = [h for h in double.hits if h.path == "/entities"]
    assert pages and all(h.query.get("gnosId") == analysis for h in pages)


def test_many_files_are_asked_one_request_each_as_the_original_offers_no_batches(double, tmp_path):
    """The original offers no batch lookups (no `Pyscore-Batch` on its answers): a manifest
    of 24 files costs one specification per file and one entity per index file, as before;
    no batch request is ever tried; the bytes are the same."""
    rows, blobs = [], {}
    for i in range(12):
        analysis = double.analysis(STUDY)
        bam, bai = blob(40_000 + i, seed=100 + i), blob(2_000 + i, seed=200 + i)
        bam_id = double.add(analysis, f"s{i}.bam", bam)
        bai_id = double.add(analysis, f"s{i}.bam.bai", bai)
        blobs[f"s{i}.bam"], blobs[f"s{i}.bam.bai"] = bam, bai
        rows.append(
            {
                "repository_code": "ORIGINAL",
                "analysis_id": analysis,
                "object_id": bam_id,
                "file_name": f"s{i}.bam",
                "file_size": len(bam),
                "index_object_id": bai_id,
                "program_id": STUDY,
            }
        )
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text(format_argo(rows))
    reader = double.token(f"PROGRAMDATA-{STUDY}.READ")
    out = tmp_path / "out"
    result = client(
        double, "download", "--manifest", str(manifest), "--output-dir", str(out), token=reader
    )
    assert result.returncode == 0, result.stderr
    for name, data in blobs.items():
        assert md5((out / name).read_bytes()) == md5(data), name
    specs = [h for h in double.hits if h.method == "GET" and h.path.startswith("/download/")]
    entities = [h for h in double.hits if h.path.startswith("/entities/")]
    assert len([h for h in specs if h.path != "/download/ping"]) == 24
    assert sorted(h.path.rsplit("/", 1)[1] for h in entities) == sorted(
        r["index_object_id"] for r in rows
    )
    assert not [h for h in double.hits if h.method == "POST" or "batch" in h.path]


def test_url_prints_a_whole_object_url(double):
    data = blob(2 * MiB + 1, seed=5)
    object_id = double.add(double.analysis(STUDY), "x.bam", data, access="open")
    result = client(double, "url", "--object-id", object_id)
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    assert "X-Amz-SignedHeaders=host&" in url
    assert httpx.get(url, timeout=30).content == data
    specs = [h for h in double.hits if h.path == f"/download/{object_id}"]
    assert [h.query.get("external") for h in specs] == ["true"]


@pytest.fixture(scope="module")
def bam_files(tmp_path_factory) -> tuple[Path, Path]:
    """A small coordinate-sorted BAM and its BAI, made with the demo's generator."""
    from pyscore.server.demo import data as demo

    out = tmp_path_factory.mktemp("bam")
    rng = random.Random(7)
    bam = demo.alignments(out, "V-N", demo.reference(out, rng), rng, 3000)
    return bam, Path(f"{bam}.bai")


@pytest.fixture
def served_bam(double, bam_files) -> tuple[str, str]:
    """The BAM and its BAI as one analysis of the double: (the BAM's object id, a token)."""
    bam, bai = bam_files
    analysis = double.analysis(STUDY)
    bam_id = double.add(analysis, bam.name, bam.read_bytes())
    double.add(analysis, bai.name, bai.read_bytes())
    return bam_id, double.token(f"PROGRAMDATA-{STUDY}.READ")


def samtools_view(bam: Path, region: str) -> list[str]:
    return subprocess.run(
        [need("samtools"), "view", str(bam), region], capture_output=True, text=True, check=True
    ).stdout.splitlines()


def records(sam: str) -> list[str]:
    return [line for line in sam.splitlines() if not line.startswith("@")]


def test_view_reads_through_the_signed_url_and_the_index(double, bam_files, served_bam):
    bam_id, reader = served_bam
    region = "chr1:2000-9000"
    result = client(double, "view", "--object-id", bam_id, "--query", region, token=reader)
    assert result.returncode == 0, result.stderr
    want = samtools_view(bam_files[0], region)
    assert records(result.stdout) == want and want
    data = [h for h in double.data_gets() if h.path.endswith(bam_id)]
    assert data and all(h.status in (200, 206) for h in data)
    assert [h for h in data if h.range and not h.range.startswith("bytes=0-")], "no seek"
    assert not [h for h in double.hits if h.method == "HEAD"]


def test_view_output_is_renamed_into_place_not_written_through_a_link(
    double, bam_files, served_bam, tmp_path
):
    from pyscore.client.view import Region, output_name

    bam_id, reader = served_bam
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    name = output_name(bam_files[0].name, [Region("chr1", 2000, 9000)], False, None, "sam")
    (out / name).symlink_to(victim)
    result = client(
        double,
        "view",
        "--object-id",
        bam_id,
        "--query",
        "chr1:2000-9000",
        "--output-dir",
        str(out),
        token=reader,
    )
    assert result.returncode == 0, result.stderr
    assert victim.read_text() == "precious\n"
    assert not (out / name).is_symlink()
    assert records((out / name).read_text()) == samtools_view(bam_files[0], "chr1:2000-9000")
    assert [p.name for p in out.iterdir()] == [name]


# -- mount ------------------------------------------------------------------------------------
def test_mount_leaves_out_what_the_original_lists_but_refuses(double, tmp_path):
    """The original's /listing names unpublished objects and other studies' objects too;
    reading them is refused. The mount shows neither, and every file it shows reads."""
    require_fuse()
    shown = double.analysis(STUDY)
    kept = blob(2 * MiB + 9, seed=8)
    double.add(shown, "kept.bam", kept)
    double.add(shown, "open.txt", b"open\n", access="open")
    draft = double.analysis(STUDY, state="UNPUBLISHED")
    double.add(draft, "draft.bam", blob(5000, seed=9))
    other = double.analysis("OTHER")
    double.add(other, "other.bam", blob(6000, seed=10))
    reader = double.token(f"PROGRAMDATA-{STUDY}.READ")
    mounter = Mounter(tmp_path / "mounts")
    try:
        m = mounter.start(double, reader)
        assert tree(m.point) == {f"{shown}/kept.bam", f"{shown}/open.txt"}
        assert md5(m.path(shown, "kept.bam").read_bytes()) == md5(kept)
        assert m.path(shown, "open.txt").read_bytes() == b"open\n"
        for name in ("draft.bam", "other.bam"):
            assert [line for line in m.stderr.splitlines() if name in line], m.stderr
        assert not tracebacks(m.stderr), m.stderr
    finally:
        mounter.cleanup()
    refused = [h for h in double.hits if h.path.startswith("/download/") and h.status == 400]
    assert not refused, "the mount asked for an unpublished object"


# -- upload -----------------------------------------------------------------------------------
def registered(double: OriginalPlatform, tmp_path: Path, size: int) -> tuple[str, Path, bytes]:
    """A file of an unpublished analysis, registered in Song, not yet uploaded."""
    data = blob(size, seed=size)
    object_id = double.add(double.analysis(STUDY, state="UNPUBLISHED"), "up.bam", None)
    path = tmp_path / "up.bam"
    path.write_bytes(data)
    return object_id, path, data


def upload(double, object_id: str, path: Path, data: bytes, token: str):
    return client(
        double,
        "upload",
        "--object-id",
        object_id,
        "--file",
        str(path),
        "--md5",
        md5(data),
        token=token,
    )


@pytest.mark.parametrize("kms", [False, True], ids=["etag-is-md5", "sse-kms"])
def test_upload(tmp_path, kms):
    with OriginalPlatform(part_size=MiB, kms=kms) as double:
        object_id, path, data = registered(double, tmp_path, 5 * MiB + 123)
        result = upload(double, object_id, path, data, double.token(f"PROGRAMDATA-{STUDY}.WRITE"))
        assert result.returncode == 0, result.stderr
        assert double.files[object_id].data == data
        puts = [h for h in double.hits if h.method == "PUT"]
        assert len(puts) == 6 and all(h.status == 200 for h in puts)


def test_upload_resume_sends_only_the_parts_not_marked_source_md5(double, tmp_path):
    object_id, path, data = registered(double, tmp_path, 5 * MiB + 123)
    writer = double.token(f"PROGRAMDATA-{STUDY}.WRITE")
    http = httpx.Client(base_url=double.url, headers={"Authorization": f"Bearer {writer}"})
    # an earlier run sent parts 1 and 3, then died
    spec = http.post(
        f"/upload/{object_id}/uploads",
        params={"fileSize": len(data), "md5": md5(data), "overwrite": "true"},
    ).json()
    for part in (spec["parts"][0], spec["parts"][2]):
        piece = data[part["offset"] : part["offset"] + part["partSize"]]
        assert httpx.put(part["url"], content=piece).status_code == 200
        finalized = http.post(
            f"/upload/{object_id}/parts",
            params={
                "uploadId": spec["uploadId"],
                "partNumber": part["partNumber"],
                "md5": md5(piece),
                "etag": md5(piece),
            },
        )
        assert finalized.status_code == 200
    status = http.get(f"/upload/{object_id}/status", params={"fileSize": len(data)}).json()
    assert [p.get("sourceMd5") is not None for p in status["parts"]] == [1, 0, 1, 0, 0, 0]
    before = len(double.hits)
    result = upload(double, object_id, path, data, writer)
    assert result.returncode == 0, result.stderr
    sent = [h.query["partNumber"] for h in double.hits[before:] if h.method == "PUT"]
    assert sorted(sent, key=int) == ["2", "4", "5", "6"]
    assert double.files[object_id].data == data


@pytest.mark.parametrize("older_pyscore", [False, True], ids=["original", "older-pyscore"])
def test_upload_of_many_files_makes_the_originals_calls(double, tmp_path, older_pyscore):
    """The original offers no batches: a manifest upload makes its calls for every file. An
    older pyscore offers batch lookups but not batch uploads (404): one try, then the same."""
    if older_pyscore:
        double.advertise = {"Pyscore-Batch": "max=1000"}
    analysis = double.analysis(STUDY, state="UNPUBLISHED")
    datas = [blob(MiB + i, seed=i) for i in range(3)]
    ids = [double.add(analysis, f"m{i}.bam", None) for i in range(3)]
    for i, data in enumerate(datas):
        (tmp_path / f"m{i}.bam").write_bytes(data)
    manifest = tmp_path / "upload.tsv"
    manifest.write_text(
        f"{analysis}\t\t\n"
        + "".join(f"{o}\t{tmp_path / f'm{i}.bam'}\t{md5(datas[i])}\n" for i, o in enumerate(ids))
    )
    writer = double.token(f"PROGRAMDATA-{STUDY}.WRITE")
    result = client(double, "upload", "--manifest", str(manifest), token=writer)
    assert result.returncode == 0, result.stderr
    assert [double.files[o].data for o in ids] == datas
    batches = [(h.method, h.path, h.status) for h in double.hits if "batch" in h.path]
    assert batches == ([("POST", "/upload/batch/start", 404)] if older_pyscore else [])
    for o in ids:
        calls = [(h.method, h.path) for h in double.hits if h.path.startswith(f"/upload/{o}")]
        assert ("POST", f"/upload/{o}/uploads") in calls
        assert ("POST", f"/upload/{o}/parts") in calls
        assert ("POST", f"/upload/{o}") in calls


# -- what the original's refusals look like -----------------------------------------------------
def test_refusals_are_one_clear_line_with_our_exit_codes(double, tmp_path):
    published = double.analysis(STUDY)
    secret = double.add(published, "secret.bam", blob(1000))
    draft = double.analysis(STUDY, state="UNPUBLISHED")
    unpublished = double.add(draft, "draft.bam", blob(1000))
    reader = double.token(f"PROGRAMDATA-{STUDY}.READ")
    stranger = double.token("PROGRAMDATA-OTHER.READ")
    scope = "Token missing required scope to download controlled-access file"
    cases = [  # object, token, exit code, what the line says, whom it names
        (secret, None, 3, scope, secret),
        (secret, stranger, 3, scope, secret),
        (secret, "not-a-token", 3, "access token rejected (Invalid access token)", "connection"),
        (unpublished, reader, 1, f"its analysis {draft} is UNPUBLISHED", unpublished),
        ("00000000-0000-4000-8000-000000000000", reader, 1, "no object with id", "00000000"),
    ]
    for object_id, token, code, words, names in cases:
        result = client(double, "url", "--object-id", object_id, token=token)
        line = one_line_error(result)
        assert result.returncode == code, (object_id, token, result.stderr)
        assert words in line and names in line, line
        out = tmp_path / object_id
        result = client(
            double, "download", "--object-id", object_id, "--output-dir", str(out), token=token
        )
        assert result.returncode == code, (object_id, token, result.stderr)
        assert words in result.stderr and "Traceback" not in result.stderr
        assert not [p for p in out.rglob("*") if p.is_file()]
