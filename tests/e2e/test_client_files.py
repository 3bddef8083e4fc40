"""What score-client writes and reads on the user's machine, against someone who can plant
files where it writes (object ids are public) or a server that never stops talking: no write
through a symbolic link, private bookkeeping kept private, no unbounded answers in memory.
The server is tests/original_platform.py (no platform start-up needed)."""

from __future__ import annotations

import hashlib
import os
import random
import resource
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CLIENT, one_line_error, run
from tests.mounts import wait_until
from tests.original_platform import BUCKET, SENTINEL, MiB, OriginalPlatform

MEMORY_CAP = 3 * 1024**3  # a client that reads an endless answer must fail, not eat the machine


@pytest.fixture
def double():
    with OriginalPlatform(part_size=6 * MiB) as d:
        yield d


def one_object(double: OriginalPlatform, size: int) -> tuple[str, bytes]:
    data = random.Random(size).randbytes(size)
    return double.add(double.analysis("FILES"), "x.bam", data, access="open"), data


def score_client(
    double, *args: str, umask: int = 0o022, token: str | None = None
) -> subprocess.CompletedProcess:
    """The CLI against the double, with this umask and its memory capped."""

    def child() -> None:
        os.umask(umask)
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    return subprocess.run(
        [CLIENT, *args],
        env={**os.environ, **double.client_env(token)},
        capture_output=True,
        text=True,
        timeout=90,
        preexec_fn=child,
    )


def download(double, object_id: str, out: Path, umask: int = 0o022):
    return score_client(
        double, "download", "--object-id", object_id, "--output-dir", str(out), umask=umask
    )


def test_a_link_planted_at_the_part_file_is_not_followed(double, tmp_path):
    object_id, _ = one_object(double, 3 * MiB)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    out = tmp_path / "out"
    (out / ".score-client").mkdir(parents=True, mode=0o700)
    (out / ".score-client" / f"{object_id}.part").symlink_to(victim)
    result = download(double, object_id, out)
    assert result.returncode == 1, result.stderr
    assert "symbolic link" in result.stderr and "Traceback" not in result.stderr
    assert victim.read_bytes() == b"precious\n"
    assert not (out / "x.bam").is_symlink() and not (out / "x.bam").exists()


@pytest.mark.parametrize("where", ["file name", "analysis folder"])
def test_a_link_planted_on_the_way_to_the_final_file_is_not_followed(double, tmp_path, where):
    object_id, _ = one_object(double, 1000)
    analysis = double.files[object_id].analysis_id
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "x.bam").write_bytes(b"precious\n")
    out = tmp_path / "out"
    out.mkdir()
    if where == "file name":
        (out / "x.bam").symlink_to(victim / "x.bam")
    else:
        (out / analysis).symlink_to(victim)
    result = score_client(
        double,
        "download",
        "--object-id",
        object_id,
        "--output-dir",
        str(out),
        "--output-layout",
        "filename" if where == "file name" else "bundle",
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "symbolic link" in result.stderr
    assert [p.name for p in victim.iterdir()] == ["x.bam"]
    assert (victim / "x.bam").read_bytes() == b"precious\n"


@pytest.mark.parametrize("kind", ["link", "someone-elses"])
def test_a_state_directory_not_ours_is_refused(double, tmp_path, kind):
    object_id, _ = one_object(double, 1000)
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if kind == "link":
        (out / ".score-client").symlink_to(elsewhere)
    else:
        if os.getuid() != 0:
            pytest.skip("needs root to make a directory of another user")
        (out / ".score-client").mkdir(mode=0o777)
        os.chown(out / ".score-client", 65534, 65534)
    result = download(double, object_id, out)
    assert result.returncode == 2, result.stderr
    assert ".score-client" in result.stderr and "refusing" in result.stderr
    assert not list(elsewhere.iterdir())
    assert not (out / "x.bam").exists()


def test_state_is_private_and_the_data_follows_the_umask(double, tmp_path):
    object_id, data = one_object(double, 14 * MiB)
    out = tmp_path / "out"
    state = out / ".score-client"
    double.rate = 2 * MiB

    def child() -> None:
        os.umask(0)  # the most permissive: whatever stays private does so on purpose

    proc = subprocess.Popen(
        [CLIENT, "download", "--object-id", object_id, "--output-dir", str(out)],
        env={**os.environ, **double.client_env(), "TRANSPORT_PARALLEL": "2"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=child,
    )
    try:
        names = [f"{object_id}.part", f"{object_id}.journal", f"{object_id}.lock"]
        assert wait_until(lambda: all((state / n).exists() for n in names), 30)
        modes = {n: stat.S_IMODE(os.stat(state / n).st_mode) for n in names}
        folder = stat.S_IMODE(os.stat(state).st_mode)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert folder == 0o700
    assert modes == {n: 0o600 for n in names}
    double.rate = 0
    result = download(double, object_id, out, umask=0o027)
    assert result.returncode == 0, result.stderr
    assert (out / "x.bam").read_bytes() == data
    assert stat.S_IMODE(os.stat(out / "x.bam").st_mode) == 0o640


@pytest.mark.parametrize("where", ["entity", "ping-url"])
def test_an_endless_answer_is_cut_off_with_one_line(double, tmp_path, where):
    object_id, _ = one_object(double, 1000)
    endless = f"/entities/{object_id}" if where == "entity" else f"{BUCKET}/data/{SENTINEL}"
    double.endless.add(endless)
    result = download(double, object_id, tmp_path / "out")
    assert result.returncode == 1, result.stderr
    assert "larger than" in result.stderr and "Traceback" not in result.stderr
    streamed = [h for h in double.hits if h.path == endless]
    assert streamed and all(h.sent < 64 * MiB for h in streamed)


def test_an_endless_answer_to_a_part_upload_is_not_read_to_its_end(double, tmp_path):
    draft = double.analysis("FILES", state="UNPUBLISHED")
    object_id = double.add(draft, "up.bam", None)
    data = random.Random(5).randbytes(MiB)
    (tmp_path / "up.bam").write_bytes(data)
    double.endless.add(f"{BUCKET}/data/{object_id}")  # where the part PUTs go
    result = score_client(
        double,
        "upload",
        "--object-id",
        object_id,
        "--file",
        str(tmp_path / "up.bam"),
        "--md5",
        hashlib.md5(data).hexdigest(),
        token=double.token("score.WRITE"),
    )
    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr
    puts = [h for h in double.hits if h.method == "PUT"]
    assert puts and all(h.sent < 64 * MiB for h in puts)
    assert double.files[object_id].data is None


def test_a_conf_file_holding_a_token_readable_by_others_is_named(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    props = conf / "application.properties"
    props.write_text("accessToken=secret-token-123456\n")
    env = {"SCORE_CLIENT_CONF_DIR": str(conf), "ACCESSTOKEN": ""}
    props.chmod(0o644)
    loose = run(CLIENT, "info", env=env)
    assert loose.returncode == 0
    assert f"chmod 600 {props}" in loose.stderr and "secret-token" not in loose.stderr
    props.chmod(0o600)
    tight = run(CLIENT, "info", env=env)
    assert tight.returncode == 0 and tight.stderr == ""


def test_one_line_for_a_manifest_url_that_never_ends(double, tmp_path):
    double.endless.add("/manifest.tsv")
    result = score_client(
        double,
        "download",
        "--manifest",
        f"{double.url}/manifest.tsv",
        "--output-dir",
        str(tmp_path),
    )
    assert result.returncode == 1
    assert "larger than" in one_line_error(result)


def many_objects(double: OriginalPlatform, sizes: list[int]) -> dict[str, bytes]:
    """Open objects of these sizes, each its own file name; file name → bytes."""
    analysis = double.analysis("FILES")
    out = {}
    for i, size in enumerate(sizes):
        name = f"f{i:02d}.bam"
        data = random.Random(i).randbytes(size)
        double.add(analysis, name, data, access="open")
        out[name] = data
    return out


def ids_of(double: OriginalPlatform) -> list[str]:
    return list(double.files)


def test_a_kill_among_many_small_files_leaves_no_wrong_file(double, tmp_path):
    """Small files are made durable and renamed in batches: killed with some in place and
    others half-fetched, every file under its final name is whole, and a re-run completes."""
    files = many_objects(double, [(i + 1) * 128 * 1024 for i in range(16)])
    out = tmp_path / "out"
    args = ("download", "--object-id", *ids_of(double), "--output-dir", str(out))
    double.rate = 512 * 1024  # per response: the last file takes ~4 s

    def landed() -> list[Path]:
        return list(out.glob("*.bam")) if out.exists() else []

    proc = subprocess.Popen(
        [CLIENT, *args],
        env={**os.environ, **double.client_env()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_until(lambda: len(landed()) >= 4, 60)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    placed = landed()
    assert len(placed) < len(files), "killed too late to test anything"
    for p in placed:
        assert p.read_bytes() == files[p.name], f"{p.name} is not whole"
    double.rate = 0
    result = score_client(double, *args)
    assert result.returncode == 0, result.stderr
    for name, data in files.items():
        assert (out / name).read_bytes() == data
    assert not (out / ".score-client").exists()


def test_a_second_client_on_the_same_small_file_is_turned_away(double, tmp_path):
    """The .part file is the lock: a second client downloading the same object into the
    same directory stops with a usage error and leaves the first one's file alone."""
    object_id, data = one_object(double, 3 * MiB)
    out = tmp_path / "out"
    double.rate = 256 * 1024  # ~12 s
    first = subprocess.Popen(
        [CLIENT, "download", "--object-id", object_id, "--output-dir", str(out)],
        env={**os.environ, **double.client_env()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        part = out / ".score-client" / f"{object_id}.part"
        assert wait_until(part.exists, 30)
        second = download(double, object_id, out)
        _, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
    assert second.returncode == 2, second.stderr
    assert "another score-client" in second.stderr and "Traceback" not in second.stderr
    assert first.returncode == 0, err
    assert (out / "x.bam").read_bytes() == data
    assert not (out / ".score-client").exists()


@pytest.mark.parametrize("left", [0, 50, 4 * MiB], ids=["empty", "short", "longer"])
def test_a_part_left_by_a_stopped_run_is_fetched_anew(double, tmp_path, left):
    object_id, data = one_object(double, 3 * MiB)
    out = tmp_path / "out"
    (out / ".score-client").mkdir(parents=True, mode=0o700)
    (out / ".score-client" / f"{object_id}.part").write_bytes(b"x" * left)
    result = download(double, object_id, out)
    assert result.returncode == 0, result.stderr
    assert (out / "x.bam").read_bytes() == data
    assert not (out / ".score-client").exists()
