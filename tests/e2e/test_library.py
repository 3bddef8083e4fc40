"""`pyscore.Client` against a running platform: metadata records, downloads that resume and
verify, a seekable remote file, regions as pysam records equal to samtools' on a local copy,
uploads, and the typed errors with the server's reasons."""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import pyscore
from pyscore.wire.manifest import parse_download
from tests.conftest import Server, init_server, journaled, local_store_only, need
from tests.faultproxy import FaultProxy
from tests.mounts import wait_until
from tests.publish import MiB, file_md5, publish, random_file


@pytest.fixture(scope="module")
def ids(demo_server: Server, demo_files: Path) -> dict[str, str]:
    """The demo files' object ids by file name, index files' too (the manifest names them
    beside their data file)."""
    assert demo_server.manifest is not None
    found = {}
    for r in parse_download(demo_server.manifest.read_text(), ""):
        found[r.fileName] = r.objectId
        if r.indexObjectId:
            (index,) = [p.name for p in demo_files.glob(f"{r.fileName}.*") if p.is_file()]
            found[index] = r.indexObjectId
    return found


@pytest.fixture(scope="module")
def reader(demo_server: Server) -> str:
    return demo_server.token("PROGRAMDATA-DEMO.READ")


@pytest.fixture
def client(demo_server: Server, reader: str, monkeypatch, tmp_path: Path):
    monkeypatch.setenv("SCORE_CLIENT_CONF_DIR", str(tmp_path / "no-conf"))
    for name in ("ACCESSTOKEN", "METADATA_URL", "STORAGE_URL", "VIEW_HTSGET"):
        monkeypatch.delenv(name, raising=False)
    with pyscore.Client(
        metadata_url=demo_server.url, storage_url=demo_server.url, token=reader
    ) as c:
        yield c


def test_metadata_records_name_every_file_with_size_md5_and_index(client, demo_files, ids):
    assert client.studies() == ["DEMO"]
    analyses = client.analyses("DEMO")
    assert len(analyses) == 7 and {a.state for a in analyses} == {"PUBLISHED"}
    files = client.files(study="DEMO")
    by_name = {f.name: f for f in files}
    assert set(by_name) == set(ids)
    bam = by_name["DONOR-1-N.bam"]
    assert bam.object_id == ids["DONOR-1-N.bam"]
    assert bam.size == (demo_files / "DONOR-1-N.bam").stat().st_size
    assert bam.md5 == file_md5(demo_files / "DONOR-1-N.bam")
    assert bam.index_object_id == ids["DONOR-1-N.bam.bai"]
    assert by_name["DONOR-1-N.cram"].index_object_id == ids["DONOR-1-N.cram.crai"]
    assert by_name["clinical.tsv"].index_object_id is None
    assert (bam.study, bam.access) == ("DEMO", "controlled")
    assert client.file(bam.object_id) == bam
    assert client.files(study="DEMO", analysis=bam.analysis) == [
        f for f in files if f.analysis == bam.analysis
    ]
    frame = files.to_frame()
    assert list(frame["object_id"]) == [f.object_id for f in files]
    assert list(analyses.to_frame()["files"]) == [len(a.files) for a in analyses]


def test_download_by_id_analysis_and_manifest_returns_verified_paths(
    client, demo_server, demo_files, ids, tmp_path
):
    paths = client.download(ids["DONOR-1-N.bam"], output_dir=tmp_path / "a")
    assert [p.name for p in paths] == ["DONOR-1-N.bam", "DONOR-1-N.bam.bai"]
    for p in paths:
        assert file_md5(p) == file_md5(demo_files / p.name)
    again = client.download(ids["DONOR-1-N.bam"], output_dir=tmp_path / "a")
    assert again == paths  # complete files: skipped, still returned
    analysis = client.file(ids["DONOR-1-N.vcf.gz"]).analysis
    bundle = client.download(
        analysis=analysis, study="DEMO", output_dir=tmp_path / "b", layout="bundle"
    )
    assert sorted(p.relative_to(tmp_path / "b").as_posix() for p in bundle) == [
        f"{analysis}/DONOR-1-N.vcf.gz",
        f"{analysis}/DONOR-1-N.vcf.gz.tbi",
    ]
    listed = client.download(manifest=demo_server.manifest, output_dir=tmp_path / "c")
    assert sorted(p.name for p in listed) == sorted(ids)


def test_open_reads_and_seeks_like_the_local_file(client, demo_files, ids):
    local = (demo_files / "DONOR-1-N.bam").read_bytes()
    with client.open(ids["DONOR-1-N.bam"]) as f:
        assert f.size == len(local) and f.seekable() and not f.writable()
        assert f.read(100) == local[:100]
        f.seek(-1000, os.SEEK_END)
        assert f.read() == local[-1000:]
        f.seek(300_000)
        assert f.read(700_000) == local[300_000:]  # past the end: short
        f.seek(12345)
        buffer = bytearray(4096)
        assert f.readinto(buffer) == 4096 and bytes(buffer) == local[12345 : 12345 + 4096]
        assert f.tell() == 12345 + 4096
    assert f.closed


def test_url_and_drs_name_the_object(client, demo_server, ids):
    oid = ids["clinical.tsv"]
    url = client.url(oid)
    assert url.startswith(demo_server.url) and oid in url
    host = demo_server.url.split("://", 1)[1]
    assert client.drs(oid) == f"drs://{host}/{oid}"


def test_the_token_is_in_no_repr_and_no_log_line(client, reader, ids, tmp_path, caplog):
    assert reader not in repr(client) and "token set" in repr(client)
    caplog.set_level(logging.DEBUG)
    client.download(ids["clinical.tsv"], output_dir=tmp_path)
    with pytest.raises(pyscore.NotFoundError):
        client.download("00000000-0000-4000-8000-000000000000", output_dir=tmp_path)
    assert caplog.records, "the download said nothing to the log"
    assert not [r for r in caplog.records if reader in r.getMessage()]


def test_a_client_pickles_as_its_settings(client, ids):
    copy = pickle.loads(pickle.dumps(client))
    assert repr(copy) == repr(client)
    assert copy.file(ids["clinical.tsv"]).name == "clinical.tsv"
    copy.close()


# -- regions: pysam records equal to samtools/bcftools on a local copy --------------------
def sam_lines(*args: str) -> list[str]:
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.splitlines()


def again(client: pyscore.Client) -> pyscore.Client:
    """A new client of the same platform and token, reading the environment anew."""
    s = client.settings
    return pyscore.Client(metadata_url=s.metadata_url, storage_url=s.storage_url, token=s.token)


@pytest.mark.parametrize("htsget", ["true", "false"], ids=["htsget", "signed-url"])
@pytest.mark.parametrize(
    ("name", "region"),
    [("DONOR-1-N.bam", "chr1:10000-20000"), ("DONOR-2-N.cram", "chr2:500-9000")],
)
def test_alignments_equal_samtools_on_a_local_copy(
    client, demo_files, ids, monkeypatch, htsget, name, region
):
    samtools = need("samtools")
    monkeypatch.setenv("VIEW_HTSGET", htsget)
    fresh = again(client)  # reads VIEW_HTSGET
    reference = demo_files / "reference.fa"
    got = [r.to_string() for r in fresh.alignments(ids[name], region, reference=reference)]
    want = sam_lines(samtools, "view", "-T", str(reference), str(demo_files / name), region)
    assert got and got == want
    fresh.close()


@pytest.mark.parametrize("htsget", ["true", "false"], ids=["htsget", "signed-url"])
def test_variants_equal_bcftools_on_a_local_copy(client, demo_files, ids, monkeypatch, htsget):
    bcftools = need("bcftools")
    monkeypatch.setenv("VIEW_HTSGET", htsget)
    fresh = again(client)  # reads VIEW_HTSGET
    region = "chr2:1000-60000"
    got = [str(r).rstrip("\n") for r in fresh.variants(ids["DONOR-1-N.vcf.gz"], region)]
    want = sam_lines(bcftools, "view", "-H", str(demo_files / "DONOR-1-N.vcf.gz"), region)
    assert got and got == want
    fresh.close()


def test_a_region_through_htsget_takes_one_ticket_and_each_range_once(
    demo_server, demo_files, reader, ids, monkeypatch, tmp_path
):
    """The region's ticket starts with the header: no second ticket for the header alone,
    and no byte range fetched twice. Once the server is known to speak htsget, a BAM's
    ticket goes out beside the file's lookup; a CRAM's is then asked again as CRAM (the
    guess refused). A region the file has not is still told by name."""
    samtools = need("samtools")
    monkeypatch.setenv("SCORE_CLIENT_CONF_DIR", str(tmp_path / "no-conf"))
    monkeypatch.setenv("VIEW_HTSGET", "true")
    proxy = FaultProxy(demo_server.port)  # signed URLs point back at it: every request counted
    reference = demo_files / "reference.fa"

    def tickets_of(name: str, region: str) -> list[str]:
        """The ticket requests (method, path) of one region, its records checked."""
        before = len(proxy.stats.requests)
        got = [r.to_string() for r in c.alignments(ids[name], region, reference=reference)]
        want = sam_lines(samtools, "view", "-T", str(reference), str(demo_files / name), region)
        assert got and got == want
        return [p for m, p in proxy.stats.requests[before:] if "/htsget/" in p and m == "POST"]

    try:
        c = pyscore.Client(metadata_url=proxy.url, storage_url=proxy.url, token=reader)
        bam, cram = ids["DONOR-1-N.bam"], ids["DONOR-2-N.cram"]
        assert tickets_of("DONOR-1-N.bam", "chr1:10000-20000") == [f"/htsget/reads/{bam}"]
        ranges = proxy.stats.ranges
        assert ranges and len(ranges) == len(set(ranges))
        assert tickets_of("DONOR-1-N.bam", "chr1:30000-40000") == [f"/htsget/reads/{bam}"]
        assert tickets_of("DONOR-2-N.cram", "chr2:500-9000") == [f"/htsget/reads/{cram}"] * 2
        with pytest.raises(pyscore.UsageError, match=r"DONOR-1-N\.bam: unknown contig 'chrZ'"):
            c.alignments(bam, "chrZ:1-10")
        c.close()
    finally:
        proxy.close()


# -- bad input: the typed error with the server's reason, nothing written elsewhere -------
def test_bad_input_raises_the_typed_error_with_the_reason(demo_server, client, ids, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(pyscore.NotFoundError, match="no object with id"):
        client.download("00000000-0000-4000-8000-000000000000", output_dir=out)
    with pytest.raises(pyscore.NotFoundError, match="no object with id"):
        client.open("00000000-0000-4000-8000-000000000000")
    with pytest.raises(pyscore.UsageError, match="not an object id"):
        client.url("../../etc/passwd")
    with pytest.raises(pyscore.UsageError, match="is not an id"):
        client.files(study="../entities")
    with pytest.raises(pyscore.UsageError, match="is not an id"):
        client.analysis("DEMO", "a/../../b")
    with pytest.raises(pyscore.UsageError, match="holds variants"):
        client.alignments(ids["DONOR-1-N.vcf.gz"], "chr1")
    anonymous = pyscore.Client(metadata_url=demo_server.url, storage_url=demo_server.url, token="")
    with pytest.raises(pyscore.AuthError, match=r"missing required scope PROGRAMDATA-DEMO\.READ"):
        anonymous.download(ids["DONOR-1-N.bam"], output_dir=out, index=False)
    with pytest.raises(pyscore.AuthError, match="missing required scope"):
        anonymous.open(ids["DONOR-1-N.bam"])
    assert anonymous.download(ids["clinical.tsv"], output_dir=out)[0].name == "clinical.tsv"
    anonymous.close()
    everything = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert everything == ["out", "out/clinical.tsv"]


@pytest.fixture(scope="module")
def unindexed(tmp_path_factory, demo_files):
    """A platform with a BAM published without its index."""
    root = tmp_path_factory.mktemp("unindexed")
    server = init_server(root / "data")
    bam = root / "lonely.bam"
    shutil.copyfile(demo_files / "DONOR-1-N.bam", bam)
    (oid,) = publish(server.data_dir, [bam], study="SOLO", access="open")
    with server:
        server.oid = oid
        yield server


@pytest.mark.parametrize("htsget", ["true", "false"], ids=["htsget", "signed-url"])
def test_a_region_of_a_file_without_index_says_so(unindexed, monkeypatch, htsget, tmp_path):
    monkeypatch.setenv("SCORE_CLIENT_CONF_DIR", str(tmp_path))
    monkeypatch.setenv("VIEW_HTSGET", htsget)
    c = pyscore.Client(metadata_url=unindexed.url, storage_url=unindexed.url, token="")
    with pytest.raises(pyscore.ScoreError, match="index") as caught:
        c.alignments(unindexed.oid, "chr1:1-1000")
    assert "Traceback" not in str(caught.value)
    assert sum(1 for _ in c.alignments(unindexed.oid)) > 0  # the whole file needs none
    c.close()


# -- uploads and an interrupted download ----------------------------------------------------
def test_submit_and_upload_as_the_cli(fresh_server, tmp_path, monkeypatch):
    import json

    from tests.publish import song_payload

    monkeypatch.setenv("SCORE_CLIENT_CONF_DIR", str(tmp_path / "no-conf"))
    data = tmp_path / "files"
    data.mkdir()
    random_file(data / "x.bam", 2 * MiB + 3)
    random_file(data / "x.bam.bai", 1000, seed=3)
    token = fresh_server.token("PROGRAMDATA-NEW.WRITE PROGRAMDATA-NEW.READ")
    admin = pyscore.Client(
        metadata_url=fresh_server.url, storage_url=fresh_server.url, token=fresh_server.admin_token
    )
    study = {"studyId": "NEW", "name": "new"}
    admin.api.request("POST", f"{fresh_server.url}/studies/NEW/", "study", json=study)
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps(song_payload("NEW", [data / "x.bam", data / "x.bam.bai"])))
    c = pyscore.Client(metadata_url=fresh_server.url, storage_url=fresh_server.url, token=token)
    analysis = c.submit("NEW", payload, data, publish=True)
    assert c.analysis("NEW", analysis).state == "PUBLISHED"
    (bam,) = [f for f in c.files(study="NEW") if f.name == "x.bam"]
    got = c.download(bam.object_id, output_dir=tmp_path / "back")
    assert [file_md5(p) for p in got] == [file_md5(data / "x.bam"), file_md5(data / "x.bam.bai")]
    with pytest.raises(pyscore.UsageError, match="not an MD5"):
        c.upload(bam.object_id, data / "x.bam", "abc")
    c.close()
    admin.close()


@local_store_only
def test_an_interrupted_download_resumes_through_the_fault_proxy(tmp_path_factory, tmp_path):
    root = tmp_path_factory.mktemp("resume")
    server = init_server(root / "data", "--part-size", "8")
    size, part = 48 * MiB, 8 * MiB  # six parts, four at a time
    source = random_file(root / "big.bam", size)
    (oid,) = publish(server.data_dir, [source], study="BIG")
    with server:
        token = server.token("PROGRAMDATA-BIG.READ")
        proxy = FaultProxy(server.port)
        try:
            proxy.faults.rate = 8 * MiB
            code = (
                "import sys, pyscore; pyscore.Client(metadata_url=sys.argv[1], "
                "storage_url=sys.argv[1], token=sys.argv[2], parallel=4)"
                ".download(sys.argv[3], output_dir=sys.argv[4], index=False)"
            )
            env = {**os.environ, "SCORE_CLIENT_CONF_DIR": str(tmp_path / "no-conf")}
            child = subprocess.Popen(
                [sys.executable, "-c", code, proxy.url, token, oid, str(tmp_path)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            journal = tmp_path / ".score-client" / f"{oid}.journal"
            # killed once the journal holds two parts' worth: what the re-run must not fetch
            assert wait_until(lambda: journaled(journal) >= 2 * part, 60), journaled(journal)
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            # the killed run's responses end at their next write (each may count one more
            # chunk first): the re-run's bytes are counted from then
            assert wait_until(lambda: proxy.stats.relaying == 0, 60), proxy.stats
            first, kept = proxy.stats.data_bytes, journaled(journal)
            assert 0 < first < size, "interrupted too late to test anything"
            assert not (tmp_path / "big.bam").exists(), "a partial file under the final name"
            proxy.faults.rate = 0
            c = pyscore.Client(metadata_url=proxy.url, storage_url=proxy.url, token=token)
            (path,) = c.download(oid, output_dir=tmp_path, index=False)
            c.close()
        finally:
            proxy.close()
    assert path == tmp_path / "big.bam"
    assert hashlib.md5(path.read_bytes()).hexdigest() == file_md5(source)
    second = proxy.stats.data_bytes - first
    assert second == size - kept, f"the resumed run fetched {second} of {size} bytes"
