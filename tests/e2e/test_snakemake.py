"""The Snakemake storage plugin: the interface's own test base class against it, and one real
`snakemake` run of a two-rule workflow whose input is `storage.score(...)`. Snakemake needs
Python >= 3.11 (CI's newest-Python pass runs these)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import ClassVar

import pytest

from tests.conftest import BIN, Server
from tests.publish import file_md5

if sys.version_info < (3, 11):
    pytest.skip("Snakemake needs Python 3.11 or newer", allow_module_level=True)
pytest.importorskip("snakemake_interface_storage_plugins")

from snakemake_interface_storage_plugins.tests import TestStorageBase

from snakemake_storage_plugin_score import (
    StorageProvider,
    StorageProviderSettings,
)


@pytest.fixture(scope="module")
def platform(demo_server: Server) -> dict[str, str]:
    """The demo platform, a reader's token, and the clinical table's query."""
    import pyscore

    token = demo_server.token("PROGRAMDATA-DEMO.READ")
    with pyscore.Client(
        metadata_url=demo_server.url, storage_url=demo_server.url, token=token
    ) as client:
        files = {f.name: f for f in client.files(study="DEMO")}
    tsv, bam = files["clinical.tsv"], files["DONOR-1-N.bam"]
    return {
        "url": demo_server.url,
        "token": token,
        "tsv": f"score://DEMO/{tsv.analysis}/clinical.tsv",
        "bam": f"score://{bam.object_id}",
    }


class TestScoreStorage(TestStorageBase):
    """snakemake-interface-storage-plugins' harness: validation, example queries, existence,
    size, mtime, checksum format, inventory, retrieval."""

    __test__ = True
    retrieve_only = True
    files_only = True
    queries: ClassVar[dict[str, str]] = {}

    @pytest.fixture(autouse=True)
    def _platform(self, platform, monkeypatch, tmp_path):
        monkeypatch.setenv("SCORE_CLIENT_CONF_DIR", str(tmp_path / "no-conf"))
        type(self).queries = platform

    def get_storage_provider_cls(self):
        return StorageProvider

    def get_storage_provider_settings(self):
        q = self.queries
        return StorageProviderSettings(
            metadata_url=q["url"], storage_url=q["url"], token=q["token"]
        )

    def get_query(self, tmp_path) -> str:
        return self.queries["tsv"]

    def get_query_not_existing(self, tmp_path) -> str:
        return self.queries["tsv"].replace("clinical.tsv", "no-such-file.tsv")

    def test_an_object_id_query_retrieves_the_verified_file(self, tmp_path, demo_files):
        obj = self._get_obj(tmp_path, self.queries["bam"])
        assert obj.exists() and obj.checksum() == f"md5:{file_md5(demo_files / 'DONOR-1-N.bam')}"
        obj.retrieve_object()
        assert file_md5(obj.local_path()) == file_md5(demo_files / "DONOR-1-N.bam")

    def test_bad_queries_are_refused_with_the_form(self, tmp_path):
        provider = self._get_provider(tmp_path)
        for query in ("score://DEMO/../x/y", "score://DEMO", "s3://a/b", "score://not-an-id"):
            result = provider.is_valid_query(query)
            assert not result and "score://<study>/<analysis>/<file name>" in str(result)


SNAKEFILE = """\
rule all:
    input: "rows.txt"

rule header:
    input: storage.score("{tsv}")
    output: "header.tsv"
    shell: "head -n 1 {{input}} > {{output}}"

rule rows:
    input: tsv=storage.score("{tsv}"), header="header.tsv"
    output: "rows.txt"
    shell: "tail -n +2 {{input.tsv}} | wc -l > {{output}}; cat {{input.header}} >> {{output}}"
"""


def test_a_real_snakemake_run_reads_storage_score_inputs(platform, tmp_path, demo_files):
    snakemake = BIN / "snakemake"
    if not snakemake.exists():
        pytest.skip("snakemake is not installed (pip install pyscore[test])")
    (tmp_path / "Snakefile").write_text(SNAKEFILE.format(tsv=platform["tsv"]))
    env = {
        **os.environ,
        "SCORE_CLIENT_CONF_DIR": str(tmp_path / "no-conf"),
        "SNAKEMAKE_STORAGE_SCORE_TOKEN": platform["token"],
        "HOME": str(tmp_path),
    }
    done = subprocess.run(
        [
            str(snakemake),
            "--cores",
            "1",
            "--storage-score-metadata-url",
            platform["url"],
            "--storage-score-storage-url",
            platform["url"],
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    local = (demo_files / "clinical.tsv").read_text().splitlines()
    assert (tmp_path / "rows.txt").read_text().splitlines() == [str(len(local) - 1), local[0]]
    assert platform["token"] not in done.stdout + done.stderr
