"""A platform behind the emulated long link (tests/wan_fixtures.py): metadata, storage and
signed data URLs all cross it, and it counts what score-client does over it: how many
requests are in flight at once (the pipeline overlaps lookups and transfers), which requests
are made at all (what a manifest says is not asked again), and the client's memory."""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path

import pytest

from pyscore.wire.manifest import format_argo
from tests.conftest import CLIENT, local_store_only, need
from tests.publish import file_md5, publish, publish_many, random_file
from tests.wan_fixtures import wan_server  # noqa: F401
from tests.wanlink import peak_overlap

KiB = 1024
MB = 1000 * 1000

pytestmark = local_store_only  # the data URLs must cross the link too


def test_everything_crosses_the_link(wan_server, tmp_path):  # noqa: F811
    server = wan_server(rtt_ms=40)
    link = server.link
    files = tmp_path / "files"
    files.mkdir()
    ids = []
    for i in range(2):
        bam = random_file(files / f"s{i}.bam", 300 * KiB, seed=i + 1)
        bai = random_file(files / f"s{i}.bam.bai", 2 * KiB, seed=i + 10)
        ids.append(publish(server.data_dir, [bam, bai], study="WAN", access="open")[0])
    url = server.client("url", "--object-id", ids[0])
    assert url.returncode == 0, url.stderr
    assert url.stdout.strip().startswith(link.url + "/"), url.stdout
    link.reset()
    out = tmp_path / "out"
    result = server.client("download", "--object-id", *ids, "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    for name in ("s0.bam", "s0.bam.bai", "s1.bam", "s1.bam.bai"):
        assert file_md5(out / name) == file_md5(files / name)
    s = link.stats()
    data = [r for r in s.log if r.path.startswith("/store/objects/")]
    assert len(data) >= 4  # every file's bytes came over the link
    assert {r.method for r in data} == {"GET"}
    assert s.bytes_down >= 2 * (300 + 2) * KiB
    assert any(r.path.startswith("/entities/") for r in s.log)
    assert any(r.path.startswith("/download/") for r in s.log)
    assert s.requests == s.responses == len(s.log)
    assert s.connections >= 1 and s.unparsed == 0
    assert all(r.status is not None and r.status < 400 for r in s.log), s.lines()


def manifest_of(
    path: Path, groups: list[tuple[str, list[Path]]], ids: list[tuple[str, list[str]]]
) -> Path:
    """An ARGO manifest: one row per data file (the first of each group), its index (the
    second) by index_object_id, as the File Repository writes it."""
    rows = []
    for (study, files), (analysis_id, (data_id, index_id)) in zip(groups, ids):
        rows.append(
            {
                "repository_code": "pyscore",
                "analysis_id": analysis_id,
                "object_id": data_id,
                "file_type": "BAM",
                "file_name": files[0].name,
                "file_size": files[0].stat().st_size,
                "md5sum": file_md5(files[0]),
                "index_object_id": index_id,
                "program_id": study,
            }
        )
    path.write_text(format_argo(rows))
    return path


def run_with_peak_rss(args: list[str], env: dict[str, str]) -> tuple[int, str, int]:
    """Run a command; its exit code, stderr and peak RSS in bytes (VmHWM, sampled)."""
    proc = subprocess.Popen(
        args, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    peak = 0
    while proc.poll() is None:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) * KiB)
        except OSError:
            pass
        time.sleep(0.02)
    err = proc.stderr.read().decode() if proc.stderr else ""
    return proc.returncode, err, peak


def test_a_manifest_download_overlaps_uses_its_index_ids_and_stays_small(
    wan_server,  # noqa: F811
    tmp_path,
):
    """120 files at 50 ms: many requests in flight at once, no listing of any analysis (the
    manifest names each index), and well under 200 MB however many connections."""
    server = wan_server(rtt_ms=50)
    folder = tmp_path / "files"
    folder.mkdir()
    rng = random.Random(5)
    groups = []
    for i in range(60):
        bam = folder / f"f{i:02d}.bam"
        bam.write_bytes(rng.randbytes(6 * KiB + i))
        bai = folder / f"f{i:02d}.bam.bai"
        bai.write_bytes(rng.randbytes(KiB + i))
        groups.append(("WAN", [bam, bai]))
    ids = publish_many(server.data_dir, groups)
    manifest = manifest_of(tmp_path / "manifest.tsv", groups, ids)
    server.link.reset()
    out = tmp_path / "out"
    args = ["download", "--manifest", str(manifest), "--output-dir", str(out), "--parallel"]
    code, err, peak = run_with_peak_rss(
        [CLIENT, *args, "64"],
        server.client_env(server.admin_token),
    )
    assert code == 0, err
    for _, files in groups:
        for f in files:
            assert file_md5(out / f.name) == file_md5(f)
    s = server.link.stats()
    assert s.peak_in_flight >= 16, s.lines()
    data = peak_overlap(s.log, lambda r: r.path.startswith("/store/"))
    assert data >= 16
    assert not [r for r in s.log if "gnosId" in r.path], "an analysis was listed"
    # the server offers batch lookups: after a few one-object probes (the first answer says
    # so), specifications and the index files' entities go many to a request
    api = [r for r in s.log if not r.path.startswith("/store/")]
    assert len(api) <= 24, [f"{r.method} {r.path}" for r in api]
    batches = [r.path for r in api if r.method == "POST"]
    assert "/download/batch" in batches and "/entities/batch" in batches, batches
    singles = {r.path.split("/")[2] for r in api if r.path.startswith("/entities/")}
    assert singles - {"batch"} <= {index_id for _, (_, index_id) in ids}  # index names only
    data_gets = [r for r in s.log if r.path.startswith("/store/") and "heliograph" not in r.path]
    assert len(data_gets) == 120
    assert peak < 200 * MB, f"peak RSS {peak / MB:.0f} MB"


def test_files_of_one_name_are_both_written_and_said(wan_server, tmp_path):  # noqa: F811
    """Two objects with one file name (in different analyses): the first keeps the name, the
    second is written under a name made unique by its object id, beside its index, and
    stderr says so."""
    server = wan_server(rtt_ms=10)
    made = []
    for i in range(2):
        folder = tmp_path / f"a{i}"
        folder.mkdir()
        made.append(
            [
                random_file(folder / "same.bam", 40 * KiB + i, seed=i + 1),
                random_file(folder / "same.bam.bai", KiB + i, seed=i + 7),
            ]
        )
    ids = publish_many(server.data_dir, [("WAN", made[0]), ("WAN2", made[1])])
    out = tmp_path / "out"
    second = ids[1][1][0]
    args = ("download", "--object-id", ids[0][1][0], second, "--output-dir", str(out))
    result = server.client(*args, token=server.admin_token)
    assert result.returncode == 0, result.stderr
    assert file_md5(out / "same.bam") == file_md5(made[0][0])
    assert file_md5(out / "same.bam.bai") == file_md5(made[0][1])
    assert file_md5(out / f"same.{second}.bam") == file_md5(made[1][0])
    assert file_md5(out / f"same.{second}.bam.bai") == file_md5(made[1][1])
    assert f"writing it as 'same.{second}.bam'" in result.stderr
    again = server.client(*args, token=server.admin_token)  # finds both where it put them
    assert again.returncode == 0 and "4 skipped" in again.stderr, again.stderr


@pytest.fixture(scope="module")
def bams(tmp_path_factory) -> list[Path]:
    """Two small indexed BAMs with different reads (pysam, seeded)."""
    from pyscore.server.demo import data as demo

    root = tmp_path_factory.mktemp("bams")
    fasta = demo.reference(root, random.Random(17))
    made = []
    for i in range(2):
        folder = root / f"b{i}"
        folder.mkdir()
        made.append(demo.alignments(folder, f"s{i}", fasta, random.Random(30 + i), 600))
    return made


def test_view_of_many_bams_overlaps_and_every_input_gets_its_output(
    wan_server,  # noqa: F811
    bams,
    tmp_path,
):
    """12 BAMs at 50 ms, the last two sharing a file name in different studies: sliced side
    by side, and each output holds its own BAM's records."""
    samtools = need("samtools")
    server = wan_server(rtt_ms=50)
    groups = []
    for i in range(12):
        source = bams[i % 2]
        name = "same.bam" if i >= 10 else f"b{i:02d}.bam"
        folder = tmp_path / f"v{i}"
        folder.mkdir()
        os.link(source, folder / name)
        os.link(str(source) + ".bai", folder / (name + ".bai"))
        groups.append(("WAN" if i != 11 else "WAN2", [folder / name, folder / (name + ".bai")]))
    ids = publish_many(server.data_dir, groups)
    manifest = manifest_of(tmp_path / "view.tsv", groups, ids)
    region = "chr1:2001-30000"
    server.link.reset()
    out = tmp_path / "out"
    result = server.client(
        "view",
        "--manifest",
        str(manifest),
        "--query",
        region,
        "--output-dir",
        str(out),
        token=server.admin_token,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert server.link.stats().peak_in_flight >= 8
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 12, names
    last = ids[11][1][0]
    unique = f"same.{last}.chr1_2001-30000.sam"
    assert "same.chr1_2001-30000.sam" in names and unique in names
    assert unique in result.stderr

    def records(sam: Path) -> list[str]:
        return [line for line in sam.read_text().splitlines() if not line.startswith("@")]

    def local(bam: Path) -> list[str]:
        done = subprocess.run([samtools, "view", str(bam), region], capture_output=True, text=True)
        return done.stdout.splitlines()

    assert records(out / "same.chr1_2001-30000.sam") == local(bams[0]) != []
    assert records(out / unique) == local(bams[1]) != []
    assert records(out / "b03.chr1_2001-30000.sam") == local(bams[1])


def test_uploads_of_many_files_overlap(wan_server, tmp_path):  # noqa: F811
    import httpx

    server = wan_server(rtt_ms=50)
    folder = tmp_path / "up"
    folder.mkdir()
    files = [random_file(folder / f"u{i:02d}.bam", 64 * KiB + i, seed=i) for i in range(16)]
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as http:
        from tests.publish import song_payload

        assert http.post("/studies/UPW/", json={"studyId": "UPW", "name": "u"}).status_code == 200
        r = http.post("/submit/UPW", json=song_payload("UPW", files, donor="u"))
        assert r.status_code == 200, r.text
        analysis_id = r.json()["analysisId"]
        listed = http.get(f"/studies/UPW/analysis/{analysis_id}/files").json()
    md5s = {f.name: file_md5(f) for f in files}
    manifest = tmp_path / "upload.tsv"
    manifest.write_text(
        f"{analysis_id}\t\t\n"
        + "".join(
            f"{x['objectId']}\t{folder / x['fileName']}\t{md5s[x['fileName']]}\n" for x in listed
        )
    )
    server.link.reset()
    result = server.client("upload", "--manifest", str(manifest), token=server.admin_token)
    assert result.returncode == 0, result.stderr
    s = server.link.stats()
    puts = [r for r in s.log if r.method == "PUT"]
    assert len(puts) == 16
    assert peak_overlap(puts, lambda r: True) >= 4, s.lines()
    assert len({r.connection for r in puts}) <= 8, "PUTs did not reuse connections"
    # the server offers batches: uploads begun and finished a batch at a time (8, then the
    # other 8), no per-file calls; the ping and its sentinel
    calls = [(r.method, r.path.split("?")[0]) for r in s.log if r.method != "PUT"]
    starts = calls.count(("POST", "/upload/batch/start"))
    finishes = calls.count(("POST", "/upload/batch/finish"))
    assert starts == 2 and 1 <= finishes <= 8, s.lines()
    assert len(calls) == starts + finishes + 2, s.lines()
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as http:
        published = http.put(f"/studies/UPW/analysis/publish/{analysis_id}")
        assert published.status_code == 200, published.text
        for x in listed:
            spec = http.get(f"/download/{x['objectId']}").json()
            assert spec["objectMd5"] == md5s[x["fileName"]]
