"""`score://` through libraries no one here wrote: fsspec itself (open, url_to_fs, the
filecache:: chain), pandas, dask on two worker processes, universal-pathlib; browsing,
direct object ids, concurrent ranges, and what is refused."""

from __future__ import annotations

import pickle
from pathlib import Path

import fsspec
import pytest

import pyscore
from tests.conftest import Server

pandas = pytest.importorskip("pandas")


@pytest.fixture(scope="module")
def options(demo_server: Server, tmp_path_factory) -> dict[str, str]:
    """storage_options naming the platform and a reader's token (no conf file read)."""
    token = demo_server.token("PROGRAMDATA-DEMO.READ")
    return {"metadata_url": demo_server.url, "storage_url": demo_server.url, "token": token}


@pytest.fixture(autouse=True)
def no_conf(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SCORE_CLIENT_CONF_DIR", str(tmp_path / "no-conf"))
    for name in ("ACCESSTOKEN", "METADATA_URL", "STORAGE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def paths(options) -> dict[str, str]:
    """score:// paths of the demo files by name."""
    fs, _ = fsspec.url_to_fs("score://", **options)
    return {p.rsplit("/", 1)[1]: f"score://{p}" for p in fs.find("score://DEMO")}


def test_the_tree_is_studies_analyses_files(options, demo_files, paths):
    fs, root = fsspec.url_to_fs("score://DEMO", **options)
    assert isinstance(fs, pyscore.ScoreFileSystem) and root == "DEMO"
    assert fs.ls("score://", detail=False) == ["DEMO"]
    analyses = fs.ls("DEMO", detail=False)
    assert len(analyses) == 7 and all(fs.isdir(a) for a in analyses)
    bams = fs.glob("score://DEMO/*/*.bam")
    assert sorted(p.rsplit("/", 1)[1] for p in bams) == ["DONOR-1-N.bam", "DONOR-2-N.bam"]
    local = demo_files / "DONOR-1-N.bam"
    info = fs.info(paths["DONOR-1-N.bam"])
    assert info["type"] == "file" and info["size"] == local.stat().st_size
    client = pyscore.Client(**options)
    f = client.file(info["object_id"])
    assert info["md5"] == f.md5 and info["index_object_id"] == f.index_object_id
    assert fs.ukey(paths["DONOR-1-N.bam"]) == f.md5
    assert fs.checksum(paths["DONOR-1-N.bam"]) == int(f.md5, 16)
    direct = fs.info(f"score://{f.object_id}")
    assert direct["size"] == info["size"] and direct["name"] == f.object_id
    assert fs.cat_file(f"score://{f.object_id}", -100) == local.read_bytes()[-100:]
    client.close()


def test_fsspec_open_and_concurrent_ranges_give_the_bytes(options, demo_files, paths):
    local = (demo_files / "DONOR-2-N.bam").read_bytes()
    with fsspec.open(paths["DONOR-2-N.bam"], "rb", **options) as f:
        assert f.read(10) == local[:10]
        f.seek(500_000)
        assert f.read(70_000) == local[500_000:570_000]
    fs, _ = fsspec.url_to_fs("score://", **options)
    starts = list(range(0, 900_000, 64 * 1024))
    got = fs.cat_ranges([paths["DONOR-2-N.bam"]] * len(starts), starts, [s + 4096 for s in starts])
    assert got == [local[s : s + 4096] for s in starts]


def test_filecache_keeps_a_copy_and_revalidates_by_md5(options, paths, tmp_path):
    url = f"filecache::{paths['clinical.tsv']}"
    kwargs = {"score": options, "filecache": {"cache_storage": str(tmp_path / "cache")}}
    with fsspec.open(url, "rb", **kwargs) as f:
        first = f.read()
    assert first.startswith(b"submitter_donor_id")
    cached = [p for p in (tmp_path / "cache").iterdir() if p.name != "cache"]
    assert len(cached) == 1 and cached[0].read_bytes() == first
    with fsspec.open(url, "rb", **kwargs) as f:
        assert f.read() == first


def test_pandas_reads_a_tsv_by_its_path(options, paths, demo_files):
    frame = pandas.read_csv(paths["clinical.tsv"], sep="\t", storage_options=options)
    assert frame.equals(pandas.read_csv(demo_files / "clinical.tsv", sep="\t"))


def test_dask_reads_on_two_worker_processes(options, demo_files):
    dd = pytest.importorskip("dask.dataframe")
    import dask

    frame = dd.read_csv("score://DEMO/*/clinical.tsv", sep="\t", storage_options=options)
    with dask.config.set(scheduler="processes", num_workers=2):
        got = frame.compute()
    want = pandas.read_csv(demo_files / "clinical.tsv", sep="\t")
    assert got.astype(str).values.tolist() == want.astype(str).values.tolist()


def test_a_file_system_pickles_from_its_options(options, paths):
    fs, _ = fsspec.url_to_fs("score://", **options)
    copy = pickle.loads(pickle.dumps(fs))
    assert copy.storage_options == fs.storage_options
    assert copy.cat_file(paths["clinical.tsv"], 0, 9) == b"submitter"


def test_universal_pathlib_walks_and_reads(options, paths):
    upath = pytest.importorskip("upath")
    path = upath.UPath(paths["clinical.tsv"], **options)
    assert path.name == "clinical.tsv" and path.exists()
    assert path.read_text().startswith("submitter_donor_id")
    assert path.parent.parent.name == "DEMO"
    assert path.name in [p.name for p in path.parent.iterdir()]


def test_refusals_say_why(options, paths, demo_server, tmp_path):
    fs, _ = fsspec.url_to_fs("score://", **options)
    with pytest.raises(PermissionError, match="read-only"):
        fs.open(paths["clinical.tsv"], "wb")
    with pytest.raises(PermissionError, match="read-only"):
        fs.rm(paths["clinical.tsv"])
    with pytest.raises(PermissionError, match="read-only"):
        fs.put_file(str(tmp_path), "score://DEMO/x")
    with pytest.raises(pyscore.UsageError, match=r"'\.\.'"):
        fs.info("score://DEMO/../DEMO")
    with pytest.raises(FileNotFoundError, match="no object with id"):
        fs.info("score://00000000-0000-4000-8000-000000000000")
    with pytest.raises(FileNotFoundError):
        fs.info("score://DEMO/no-such-analysis/x.bam")
    anonymous, _ = fsspec.url_to_fs(
        "score://", metadata_url=demo_server.url, storage_url=demo_server.url, token=""
    )
    with pytest.raises(pyscore.AuthError, match="missing required scope"):
        anonymous.cat_file(paths["DONOR-1-N.bam"], 0, 10)
    assert anonymous.cat_file(paths["clinical.tsv"], 0, 9) == b"submitter"
