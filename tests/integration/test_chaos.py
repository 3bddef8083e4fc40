"""bench/chaos.py in CI's size: 60 s of mixed load on PostgreSQL + Ceph RGW (and the local
store on a tmpfs) while a seeded schedule kills -9 each server process, stops PostgreSQL
and starts it again, stops and freezes the RADOS gateway and fills the local store's disk.
The invariants the bench checks must hold (see its docstring): no timing is asserted, only
that every server came back by itself.

PostgreSQL is one of the test's own (the other lane's PostgreSQL pass shares the CI's, and
must not see it stop); the RADOS gateway is the S3 pass's, whose tests run one at a time."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.chaos import ROOT, Config, Gateway, Postgres, run
from tests.conftest import free_port

S3 = os.environ.get("PYSCORE_TEST_S3", "")
CEPH_CONF = os.environ.get("CEPH_CONF", "")

pytestmark = pytest.mark.skipif(
    not (os.environ.get("PYSCORE_TEST_POSTGRES") and S3 and CEPH_CONF),
    reason="needs the PostgreSQL + Ceph RGW pass (PYSCORE_TEST_POSTGRES, PYSCORE_TEST_S3, "
    "CEPH_CONF)",
)


@pytest.fixture
def postgres() -> Iterator[str]:
    """A PostgreSQL server of the test's own (scripts/postgres.sh): its URL."""
    work = Path(tempfile.mkdtemp(prefix="pyscore-chaos-pg-"))
    work.chmod(0o755)  # PostgreSQL runs as its own user
    script = str(ROOT / "scripts" / "postgres.sh")
    try:
        out = subprocess.run(
            ["bash", script, "start", str(work / "pg"), str(free_port())],
            capture_output=True,
            text=True,
            check=True,
        )
        yield out.stdout.strip().split("=", 1)[1]
    finally:
        subprocess.run(["bash", script, "stop", str(work / "pg")], check=False)
        shutil.rmtree(work, ignore_errors=True)


def test_the_platform_survives_its_dependencies_failing_under_load(
    tmp_path: Path, postgres: str
) -> None:
    endpoint, key, secret = S3.split(",")
    cfg = Config(
        seconds=60,
        seed=int(os.environ.get("PYSCORE_CHAOS_SEED", "26")),
        away=8,
        many=20,
        small_kib=256,
        big_mib=32,
        upload_mib=4,
        disk_mib=160,
        pause=2.0,
        client_timeout=300,
    )
    report = run(
        cfg,
        tmp_path,
        Postgres(postgres),
        (endpoint, key, secret),
        Gateway(Path(CEPH_CONF), endpoint),
    )
    print(report.table())
    assert report.events, "no fault was injected"
    assert not report.violations, "\n".join(report.violations)
