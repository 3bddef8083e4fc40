"""The "Client" tarball (scripts/dist.sh) used as the ARGO page says: `tar xvzf`, `cd` into
its folder, the settings in conf/application.properties, `bin/score-client download
--manifest`: on a clean Python 3.9 and on the newest Python (venvs with nothing installed),
against a real server, with the MD5s checked."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pyscore import __version__
from pyscore.wire.manifest import parse_download
from tests.conftest import need, run
from tests.publish import file_md5

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tarball() -> Path:
    out = run("bash", "scripts/dist.sh", cwd=ROOT, timeout=900, check=True)
    path = ROOT / out.stdout.strip().splitlines()[-1]
    assert path.name == f"score-client-{__version__}-dist.tar.gz"
    return path


def clean_python(which: str, where: Path) -> Path:
    """A venv of the oldest or newest Python found, with nothing installed in it."""
    python = run("bash", "scripts/python.sh", which, cwd=ROOT, check=True).stdout.strip()
    run(python, "-m", "venv", "--without-pip", str(where), check=True)
    clean = where / "bin" / "python"
    assert run(str(clean), "-c", "import httpx").returncode != 0, "the venv is not clean"
    return clean


def unpack(tarball: Path, into: Path, server_url: str, token: str) -> Path:
    """`tar xvzf`, then the three settings the page asks for in conf/application.properties."""
    run("tar", "xvzf", str(tarball), cwd=into, check=True)
    folder = into / f"score-client-{__version__}"
    conf = folder / "conf" / "application.properties"
    wanted = {"accessToken": token, "metadata.url": server_url, "storage.url": server_url}
    lines = conf.read_text().splitlines()
    assert {line.split("=")[0] for line in lines} >= set(wanted), "a setting is not in the conf"
    conf.write_text(
        "".join(
            f"{key}={wanted[key]}\n" if (key := line.split("=")[0]) in wanted else line + "\n"
            for line in lines
        )
    )
    return folder


def client(folder: Path, python: Path, *args: str) -> subprocess.CompletedProcess:
    """bin/score-client run from its folder, with none of the test's own client settings."""
    unset = ("ACCESSTOKEN", "METADATA_URL", "STORAGE_URL", "SCORE_CLIENT_CONF_DIR")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(
        ["bin/score-client", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "PYTHON": str(python)},
    )


@pytest.mark.parametrize("which", ["oldest", "newest"])
def test_tarball_downloads_a_manifest_with_the_system_python(
    which, tarball, demo_server, demo_files, tmp_path
):
    python = clean_python(which, tmp_path / "venv")
    token = demo_server.token("PROGRAMDATA-DEMO.READ", "--user", "tarball")
    folder = unpack(tarball, tmp_path, demo_server.url, token)
    info = client(folder, python, "info")
    assert info.returncode == 0, info.stderr
    assert f"metadata.url                  {demo_server.url}  [{folder}/conf" in info.stdout

    out = tmp_path / "data"
    result = client(
        folder,
        python,
        "download",
        "--manifest",
        str(demo_server.manifest),
        "--output-dir",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    rows = parse_download(demo_server.manifest.read_text(), str(demo_server.manifest))
    for row in rows:
        assert file_md5(out / row.fileName) == row.fileMd5sum == file_md5(demo_files / row.fileName)

    # pysam is inside too: a region of a BAM, as samtools slices the same file
    bam = next(r for r in rows if r.fileName == "DONOR-1-N.bam")
    view = client(folder, python, "view", "--object-id", bam.objectId, "--query", "chr1:1000-3000")
    assert view.returncode == 0, view.stderr
    want = run(need("samtools"), "view", str(demo_files / bam.fileName), "chr1:1000-3000")
    records = [line for line in view.stdout.splitlines() if not line.startswith("@")]
    assert records == want.stdout.splitlines() and records


def test_tarball_without_a_usable_python_says_so(tarball, tmp_path):
    folder = unpack(tarball, tmp_path, "http://127.0.0.1:9", "")
    result = client(folder, Path("/bin/false"), "version")
    assert result.returncode == 1
    assert result.stderr.startswith("score-client: error: /bin/false is not a Python")
    assert len(result.stderr.strip().splitlines()) == 1


def test_tarball_is_reproducible(tarball):
    first = tarball.read_bytes()
    run("bash", "scripts/dist.sh", cwd=ROOT, timeout=900, check=True)
    assert tarball.read_bytes() == first
