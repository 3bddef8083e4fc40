"""score-client mount end to end: the real CLI mounts a real score-server's data with FUSE and
the tests read it with ordinary tools (os.walk, stat, find, du, md5sum, samtools, cat).

Every mount is a subprocess of the CLI (foreground in a Popen, or --daemonize) and is taken
down by a fixture finalizer - `fusermount3 -u -z`, then kill whatever process is left - so a
failing test never leaves a mount or a process behind. Every wait is bounded.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import random
import signal
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.api import bearer
from tests.conftest import Server, init_server, local_store_only, need, one_line_error
from tests.faultproxy import FaultProxy
from tests.mounts import (
    FUSERMOUNT,
    Mount,
    Mounter,
    mount_pids,
    require_fuse,
    tracebacks,
    tree,
    wait_until,
)
from tests.publish import MiB, file_md5, md5, publish, random_file

EXIT_TIMEOUT = 60.0  # s until an unmounted (or signalled) mount process must be gone
BIG = 24 * MiB
THREADS = 16
READS_PER_THREAD = 24
INDEX_SUFFIXES = (".bai", ".crai", ".tbi", ".csi", ".fai")


# -- FUSE availability ----------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def fuse_available() -> None:
    require_fuse()


@pytest.fixture
def mounter(tmp_path: Path):
    m = Mounter(tmp_path / "mounts")
    yield m
    m.cleanup()


# -- the demo platform -----------------------------------------------------------------------
def manifest_rows(server: Server) -> list[list[str]]:
    assert server.manifest is not None
    lines = server.manifest.read_text().strip().splitlines()
    return [line.split("\t") for line in lines[1:]]


def entities(server: Server) -> list[dict]:
    r = httpx.get(f"{server.url}/entities", params={"size": 2000}, timeout=30)
    r.raise_for_status()
    return r.json()["content"]


def listing(server: Server, token: str | None) -> dict[str, dict]:
    r = httpx.get(f"{server.url}/listing", headers=bearer(token), timeout=30)
    r.raise_for_status()
    return {e["id"]: e for e in r.json()}


@pytest.fixture(scope="module")
def reader(demo_server: Server) -> str:
    return demo_server.token("PROGRAMDATA-DEMO.READ")


@pytest.fixture(scope="module")
def demo_mount(demo_server: Server, reader: str, tmp_path_factory):
    """One bundle-layout mount of the demo study for a reader, shared by read-only tests."""
    m = Mounter(tmp_path_factory.mktemp("demo-mount"))
    try:
        yield m.start(demo_server, reader)
    finally:
        m.cleanup()


def expected_bundle(ents: list[dict], readable: set[str] | None = None) -> set[str]:
    return {
        f"{e['gnosId']}/{e['fileName']}" for e in ents if readable is None or e["id"] in readable
    }


# -- bundle layout, sizes, mtimes, contents ----------------------------------------------------
def test_bundle_tree_equals_the_metadata(demo_mount, demo_server, reader):
    ents = [e for e in entities(demo_server) if e["projectCode"] == "DEMO"]
    assert tree(demo_mount.point) == expected_bundle(ents)
    # one directory per analysis, nothing else at the top
    assert set(os.listdir(demo_mount.point)) == {e["gnosId"] for e in ents}
    # every manifest row's data file has its index file beside it
    by_id = {e["id"]: e for e in ents}
    for row in manifest_rows(demo_server):
        analysis, object_id, name, index_id = row[1], row[2], row[4], row[7]
        assert by_id[object_id]["gnosId"] == analysis
        assert demo_mount.path(analysis, name).is_file()
        if index_id:
            index = by_id[index_id]
            assert index["fileName"].endswith(INDEX_SUFFIXES)
            assert demo_mount.path(analysis, index["fileName"]).is_file(), index
    # read-only modes, directories are directories
    for rel in tree(demo_mount.point):
        st = os.stat(demo_mount.path(rel))
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o444
    for top in os.listdir(demo_mount.point):
        st = os.stat(demo_mount.path(top))
        assert stat.S_ISDIR(st.st_mode) and not st.st_mode & 0o222
    assert not tracebacks(demo_mount.stderr), demo_mount.stderr


def test_sizes_and_mtimes_are_real(demo_mount, demo_server, reader, demo_files):
    ents = {e["id"]: e for e in entities(demo_server) if e["projectCode"] == "DEMO"}
    listed = listing(demo_server, reader)
    manifest_size = {row[2]: int(row[5]) for row in manifest_rows(demo_server)}
    total = 0
    for object_id, e in ents.items():
        path = demo_mount.path(e["gnosId"], e["fileName"])
        st = os.stat(path)
        size = listed[object_id]["size"]
        assert st.st_size == size == (demo_files / e["fileName"]).stat().st_size, path
        if object_id in manifest_size:
            assert st.st_size == manifest_size[object_id], path
        assert abs(st.st_mtime - listed[object_id]["lastModified"] / 1000) < 1.0, path
        assert st.st_blocks * 512 >= size  # du counts real blocks
        total += size
    # the same through find, du and stat
    found = subprocess.run(
        ["find", str(demo_mount.point), "-type", "f", "-printf", "%P\t%s\t%T@\n"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert len(found) == len(ents)
    by_path = {f"{e['gnosId']}/{e['fileName']}": i for i, e in ents.items()}
    for line in found:
        rel, size, mtime = line.split("\t")
        object_id = by_path[rel]
        assert int(size) == listed[object_id]["size"]
        assert abs(float(mtime) - listed[object_id]["lastModified"] / 1000) < 1.0
    du = subprocess.run(
        ["du", "-sb", str(demo_mount.point)], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()[0]
    assert int(du) == total
    du_blocks = subprocess.run(
        ["du", "-sk", str(demo_mount.point)], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()[0]
    assert int(du_blocks) * 1024 >= total
    some = next(iter(ents.values()))
    out = subprocess.run(
        ["stat", "-c", "%s %F", str(demo_mount.path(some["gnosId"], some["fileName"]))],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    assert int(out[0]) == listed[some["id"]]["size"] and out[1] == "regular"
    # an analysis directory is as new as its newest file
    for analysis in os.listdir(demo_mount.point):
        newest = (
            max(listed[i]["lastModified"] for i, e in ents.items() if e["gnosId"] == analysis)
            / 1000
        )
        assert abs(os.stat(demo_mount.path(analysis)).st_mtime - newest) < 1.0


def test_md5sum_of_every_file_equals_the_source(demo_mount, demo_server, demo_files):
    assert demo_server.manifest is not None
    files = sorted(tree(demo_mount.point))
    local = sorted(p.name for p in demo_files.iterdir() if p.name != demo_server.manifest.name)
    assert sorted(Path(f).name for f in files) == local
    out = subprocess.run(
        ["md5sum", *files],
        cwd=demo_mount.point,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    through_mount = {
        Path(line.split(None, 1)[1]).name: line.split()[0] for line in out.splitlines()
    }
    assert through_mount == {name: file_md5(demo_files / name) for name in local}


def test_samtools_region_through_the_mount(demo_mount, demo_server, demo_files, tmp_path):
    samtools = need("samtools")
    row = next(r for r in manifest_rows(demo_server) if r[4] == "DONOR-1-N.bam")
    mounted = demo_mount.path(row[1], "DONOR-1-N.bam")

    def view(path: Path, *extra: str) -> str:
        result = subprocess.run(
            [samtools, "view", *extra, str(path), "chr1:10000-12000"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    expected = view(demo_files / "DONOR-1-N.bam")
    assert expected.strip(), "the region should hold reads"
    assert view(mounted) == expected
    assert view(mounted, "-H", "--no-PG") == view(demo_files / "DONOR-1-N.bam", "-H", "--no-PG")
    assert not list(tmp_path.iterdir())  # no index fetched or written next to us


# -- read-only --------------------------------------------------------------------------------
def test_writes_fail_with_erofs(demo_mount):
    analysis = sorted(os.listdir(demo_mount.point))[0]
    folder = demo_mount.path(analysis)
    names = sorted(os.listdir(folder))
    existing = folder / names[0]
    before = file_md5(existing)

    def erofs(call, *args) -> None:
        with pytest.raises(OSError) as info:
            call(*args)
        assert info.value.errno == errno.EROFS, (call, args, info.value)

    erofs(os.open, folder / "new.txt", os.O_CREAT | os.O_WRONLY, 0o644)
    erofs(os.open, demo_mount.path("new.txt"), os.O_CREAT | os.O_WRONLY, 0o644)
    erofs(os.mkdir, folder / "newdir")
    erofs(os.mkdir, demo_mount.path("newdir"))
    erofs(os.remove, existing)
    erofs(os.rmdir, folder)
    erofs(os.rename, existing, folder / "renamed")
    erofs(os.truncate, existing, 0)
    erofs(os.chmod, existing, 0o644)
    erofs(os.utime, existing, (0, 0))
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_APPEND, os.O_RDONLY | os.O_TRUNC):
        erofs(os.open, existing, flags)
    erofs(os.symlink, existing, folder / "link")
    result = subprocess.run(
        ["touch", str(folder / "x")], capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0 and "Read-only file system" in result.stderr
    assert file_md5(existing) == before
    assert sorted(os.listdir(folder)) == names
    options = next(
        line.split()[3]
        for line in Path("/proc/mounts").read_text().splitlines()
        if line.split()[1] == str(demo_mount.point)
    )
    assert "ro" in options.split(",")


def test_posix_locks_work_and_close_logs_no_traceback(mounter, demo_server, reader):
    m = mounter.start(demo_server, reader)
    name = next(iter(sorted(tree(m.point))))
    with open(m.path(name), "rb") as f:
        fcntl.lockf(f, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a reader's shared lock
        fcntl.lockf(f, fcntl.LOCK_UN)
        assert f.read(16)
    # the log is whole once the mount has ended (not after a guessed 0.2 s): unmount, wait
    subprocess.run([FUSERMOUNT, "-u", str(m.point)], check=True, timeout=30)
    assert m.proc is not None and m.proc.wait(EXIT_TIMEOUT) == 0, m.stderr
    assert "Traceback" not in m.stderr, m.stderr


# -- other layouts and other views of the same repository --------------------------------------
def test_object_id_layout(mounter, demo_server, reader, demo_files):
    m = mounter.start(demo_server, reader, "--layout", "object-id")
    ents = {e["id"]: e for e in entities(demo_server) if e["projectCode"] == "DEMO"}
    listed = listing(demo_server, reader)
    assert tree(m.point) == set(ents)
    for object_id, e in ents.items():
        path = m.path(object_id)
        assert path.stat().st_size == listed[object_id]["size"]
        assert file_md5(path) == file_md5(demo_files / e["fileName"]), e


def test_anonymous_mount_shows_only_open_files(mounter, demo_server, demo_files):
    m = mounter.start(demo_server, None)
    ents = [e for e in entities(demo_server) if e["projectCode"] == "DEMO"]
    opened = [e for e in ents if e["access"] == "open"]
    assert opened and len(opened) < len(ents)
    assert tree(m.point) == expected_bundle(opened)
    for e in opened:
        assert file_md5(m.path(e["gnosId"], e["fileName"])) == file_md5(demo_files / e["fileName"])
    controlled = next(e for e in ents if e["access"] == "controlled")
    assert not m.path(controlled["gnosId"], controlled["fileName"]).exists()
    # what it leaves out is counted in a warning (our server's listing names only the open)
    shown = sum(len(files) for _, _, files in os.walk(m.point))
    left = len(entities(demo_server)) - shown
    assert left >= 1 and f"left out of the mount: {left:,} files" in m.stderr, m.stderr


def write_manifest(server: Server, path: Path, names: set[str]) -> list[list[str]]:
    assert server.manifest is not None
    lines = server.manifest.read_text().strip().splitlines()
    rows = [r for r in manifest_rows(server) if r[4] in names]
    assert len(rows) == len(names)
    path.write_text("\n".join([lines[0], *("\t".join(r) for r in rows)]) + "\n")
    return rows


def manifest_expectation(server: Server, rows: list[list[str]]) -> set[str]:
    by_id = {e["id"]: e for e in entities(server)}
    wanted = {r[2] for r in rows} | {r[7] for r in rows if r[7]}
    return expected_bundle([by_id[i] for i in wanted])


def test_manifest_mount_shows_its_rows_and_their_index_files(
    mounter, demo_server, reader, demo_files, tmp_path
):
    rows = write_manifest(
        demo_server, tmp_path / "manifest.tsv", {"DONOR-1-N.bam", "DONOR-2-N.vcf.gz"}
    )
    m = mounter.start(demo_server, reader, "--manifest", str(tmp_path / "manifest.tsv"))
    expected = manifest_expectation(demo_server, rows)
    assert len(expected) == 4  # two data files, two index files
    assert tree(m.point) == expected
    for rel in expected:
        assert file_md5(m.path(rel)) == file_md5(demo_files / Path(rel).name)


def test_manifest_mount_adds_only_the_rows_own_index_files(mounter, demo_server, reader, tmp_path):
    rows = write_manifest(demo_server, tmp_path / "manifest.tsv", {"DONOR-1-N.cram"})
    m = mounter.start(demo_server, reader, "--manifest", str(tmp_path / "manifest.tsv"))
    expected = manifest_expectation(demo_server, rows)
    assert {Path(p).name for p in expected} == {"DONOR-1-N.cram", "DONOR-1-N.cram.crai"}
    assert tree(m.point) == expected


# -- lifecycle: foreground, daemonize, unmount, signals, bad mount points ----------------------
def test_fusermount_unmounts_a_foreground_mount(mounter, demo_server, reader):
    m = mounter.start(demo_server, reader)
    assert m.proc is not None
    # a mount stays in the foreground by default: the process started serves the mount
    assert mount_pids(m.point) == [m.proc.pid] and m.proc.poll() is None
    subprocess.run([FUSERMOUNT, "-u", str(m.point)], check=True, timeout=30)
    assert m.proc.wait(EXIT_TIMEOUT) == 0, m.stderr
    assert not os.path.ismount(m.point)
    assert wait_until(lambda: not mount_pids(m.point), EXIT_TIMEOUT)
    assert not tracebacks(m.stderr) and "Unmounted" in m.stderr, m.stderr
    assert not os.listdir(m.point)


def test_daemonize_returns_once_mounted_and_unmount_leaves_nothing(
    mounter, demo_server, reader, demo_files
):
    m, result = mounter.daemonize(demo_server, reader)
    assert result.returncode == 0, result.stderr
    assert os.path.ismount(m.point), "--daemonize returned before the mount was ready"
    pids = mount_pids(m.point)
    assert len(pids) == 1, pids
    row = next(r for r in manifest_rows(demo_server) if r[4] == "DONOR-2-N.bam")
    assert file_md5(m.path(row[1], row[4])) == row[6] == file_md5(demo_files / row[4])
    subprocess.run([FUSERMOUNT, "-u", str(m.point)], check=True, timeout=30)
    assert wait_until(lambda: not mount_pids(m.point), EXIT_TIMEOUT), (
        f"mount process still running: {mount_pids(m.point)}"
    )
    assert not os.path.ismount(m.point)
    assert not os.listdir(m.point)


def test_daemonize_with_a_bad_token_says_what_the_foreground_mount_says(demo_server, tmp_path):
    """The background mount's failure is told once, with its own exit code, as in the
    foreground (not wrapped in a second 'score-client: error:' and exit 1)."""
    point = tmp_path / "mnt"
    point.mkdir()
    said = []
    for extra in ([], ["--daemonize"]):
        result = demo_server.client(
            "mount", "--mount-point", str(point), *extra, token="not-a-token", timeout=90
        )
        said.append((result.returncode, one_line_error(result)))
        assert not os.path.ismount(point)
    assert (
        said[0]
        == said[1]
        == (
            3,
            "score-client: error: connection check: access token rejected (Invalid access "
            "token); check accessToken / ACCESSTOKEN",
        )
    )


SIGNALS = [pytest.param(signal.SIGTERM, id="SIGTERM"), pytest.param(signal.SIGINT, id="SIGINT")]


def signal_mount(mounter, server: Server, token: str, signum: int) -> tuple[Mount, int]:
    m = mounter.start(server, token)
    assert m.proc is not None
    m.proc.send_signal(signum)
    try:
        code = m.proc.wait(EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"mount process still running {EXIT_TIMEOUT} s after {signum!r}")
    return m, code


@pytest.mark.parametrize("signum", SIGNALS)
def test_signal_unmounts_and_the_process_exits(mounter, demo_server, reader, signum):
    m, _ = signal_mount(mounter, demo_server, reader, signum)
    assert not os.path.ismount(m.point)
    assert not mount_pids(m.point)
    assert "Unmounted" in m.stderr
    assert not os.listdir(m.point)


@pytest.mark.parametrize("signum", SIGNALS)
def test_signal_ends_the_mount_cleanly(mounter, demo_server, reader, signum):
    m, code = signal_mount(mounter, demo_server, reader, signum)
    assert "Traceback" not in m.stderr, m.stderr
    assert code in (0, 128 + signum), m.stderr


def test_non_empty_or_missing_mount_point_is_a_one_line_usage_error(demo_server, reader, tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    (full / "someone's file").write_text("keep me")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = [
        (full, "not empty"),
        (tmp_path / "missing", "does not exist"),
        (a_file, "not a directory"),
    ]
    for point, words in cases:
        for extra in ([], ["--daemonize"]):
            result = demo_server.client(
                "mount", "--mount-point", str(point), *extra, token=reader, timeout=60
            )
            line = one_line_error(result)
            assert result.returncode == 2, result.stderr
            assert str(point) in line and words in line, line
            assert not os.path.ismount(point)
    assert (full / "someone's file").read_text() == "keep me"
    assert not mount_pids(full)


def test_stale_mount_point_is_a_one_line_error(mounter, demo_server, reader):
    m = mounter.start(demo_server, reader)
    assert m.proc is not None
    m.proc.kill()  # the FUSE daemon dies, the mount stays: transport endpoint not connected
    m.proc.wait(EXIT_TIMEOUT)
    with pytest.raises(OSError) as info:
        os.listdir(m.point)
    assert info.value.errno == errno.ENOTCONN
    for extra in ([], ["--daemonize"]):
        result = demo_server.client(
            "mount", "--mount-point", str(m.point), *extra, token=reader, timeout=60
        )
        line = one_line_error(result)
        assert result.returncode == 2, result.stderr
        assert str(m.point) in line and "unmount" in line.lower(), line
    assert not mount_pids(m.point)


# -- a platform of our own: a big object, unpublished and forbidden objects, faults -------------
@dataclass
class Own:
    server: Server
    reader: str
    big: Path
    kept: Path
    big_id: str
    kept_id: str
    analysis: str
    hidden: dict[str, str]  # object id -> file name of what must not show


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    root = tmp_path_factory.mktemp("mount-platform")
    server = init_server(root / "data")
    big = random_file(root / "big.bam", BIG, seed=11)
    kept = random_file(root / "kept.bam", MiB + 3, seed=12)
    gone = random_file(root / "gone.bam", 200_000, seed=13)
    other = random_file(root / "other.bam", 100_000, seed=14)
    big_id, kept_id = publish(server.data_dir, [big, kept], study="MNT")
    (gone_id,) = publish(server.data_dir, [gone], study="MNT")
    (other_id,) = publish(server.data_dir, [other], study="OTHER")
    with server:
        ents = {e["id"]: e for e in entities(server)}
        r = httpx.put(
            f"{server.url}/studies/MNT/analysis/unpublish/{ents[gone_id]['gnosId']}",
            headers=bearer(server.admin_token),
            timeout=30,
        )
        assert r.status_code == 200, r.text
        yield Own(
            server,
            server.token("PROGRAMDATA-MNT.READ"),
            big,
            kept,
            big_id,
            kept_id,
            ents[big_id]["gnosId"],
            {gone_id: "gone.bam", other_id: "other.bam"},
        )


@pytest.fixture(scope="module")
def own_mount(own: Own, tmp_path_factory):
    m = Mounter(tmp_path_factory.mktemp("own-mount"))
    try:
        yield m.start(own.server, own.reader)
    finally:
        m.cleanup()


def test_unpublished_and_forbidden_objects_are_absent_the_rest_reads(own, own_mount):
    listed = listing(own.server, own.reader)
    assert set(listed) == {own.big_id, own.kept_id}  # the platform is as intended
    assert tree(own_mount.point) == {f"{own.analysis}/big.bam", f"{own.analysis}/kept.bam"}
    # our server's listing names only what the token may read: the rest is counted, once
    warned = [line for line in own_mount.stderr.splitlines() if "left out" in line]
    assert warned == [
        f"WARNING: left out of the mount: {len(own.hidden)} files (unpublished, not readable "
        "with this token, or unsafe names)"
    ], own_mount.stderr
    assert file_md5(own_mount.path(own.analysis, "kept.bam")) == file_md5(own.kept)
    assert own_mount.path(own.analysis, "big.bam").stat().st_size == BIG
    assert not tracebacks(own_mount.stderr), own_mount.stderr


def test_concurrent_readers_get_exact_bytes(own, own_mount):
    source = own.big.read_bytes()
    path = own_mount.path(own.analysis, "big.bam")
    shared = os.open(path, os.O_RDONLY)

    def reader(n: int) -> int:
        rng = random.Random(n)
        checked = 0
        fd = shared if n % 2 else os.open(path, os.O_RDONLY)
        try:
            if n == 0:  # one sequential reader of the whole object
                digest = hashlib.md5()
                offset = 0
                while offset < BIG:
                    chunk = os.pread(fd, MiB, offset)
                    assert chunk, f"unexpected EOF at {offset}"
                    digest.update(chunk)
                    offset += len(chunk)
                assert digest.hexdigest() == md5(source)
                return offset
            for _ in range(READS_PER_THREAD):
                offset = rng.randrange(BIG)
                length = rng.choice((1, 17, 4096, 100_000, 256 * 1024 + 1, MiB + 7))
                got = os.pread(fd, length, offset)
                want = source[offset : offset + length]
                assert got == want, f"thread {n}: wrong bytes at {offset}+{length}"
                checked += len(got)
            assert os.pread(fd, 10, BIG - 4) == source[-4:]  # short read at EOF
            assert os.pread(fd, 10, BIG) == b""
            return checked
        finally:
            if fd != shared:
                os.close(fd)

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            futures = [pool.submit(reader, n) for n in range(THREADS)]
            done = [f.result(timeout=120) for f in futures]
    finally:
        os.close(shared)
    assert done[0] == BIG and all(done)
    assert not tracebacks(own_mount.stderr), own_mount.stderr


@local_store_only  # the fault proxy must sit in the byte path
def test_persistent_read_error_is_eio_never_wrong_bytes(own, mounter):
    proxy = FaultProxy(own.server.port)
    try:
        env = {"METADATA_URL": proxy.url, "STORAGE_URL": proxy.url, "STORAGE_RETRYNUMBER": "2"}
        # a 1 MiB block cache: what read-ahead fetched is mostly evicted again
        m = mounter.start(own.server, own.reader, "--cache-size", "1", env=env)
        big = m.path(own.analysis, "big.bam")
        source = own.big.read_bytes()
        proxy.faults.status, proxy.faults.statuses = 500, 10**9  # every data request fails

        cat = subprocess.run(["cat", str(big)], capture_output=True, timeout=90)
        assert cat.returncode != 0
        assert b"Input/output error" in cat.stderr, cat.stderr
        assert cat.stdout == source[: len(cat.stdout)] and len(cat.stdout) < BIG
        assert proxy.stats.data_requests >= 2  # it did try, and retried
        with open(big, "rb") as f, pytest.raises(OSError) as info:
            f.seek(5 * MiB)
            f.read(1000)
        assert info.value.errno == errno.EIO

        proxy.faults.statuses = 0  # the store heals: the same mount reads right again
        with open(big, "rb") as f:
            assert f.read(64 * 1024) == source[: 64 * 1024]

        # fails again: what is cached (a 1 MiB cache: never all of it), then EIO, no wrong
        # byte, whatever read-ahead the read above began is still under way
        proxy.faults.statuses = 10**9
        cat = subprocess.run(["cat", str(big)], capture_output=True, timeout=90)
        assert cat.returncode != 0 and b"Input/output error" in cat.stderr, cat.stderr
        assert len(cat.stdout) < BIG
        assert cat.stdout == source[: len(cat.stdout)]
        assert not tracebacks(m.stderr), m.stderr
        assert m.proc is not None and m.proc.poll() is None  # errors do not end the mount
        assert os.path.ismount(m.point)
    finally:
        proxy.close()


def test_a_directory_of_many_buffers_lists_each_entry_once(mounter, tmp_path):
    """A folder of 1,500 files is read by the kernel a buffer (~100 names) at a time, each
    from the offset the last one ended at: every name comes once, in order, also when the
    folder is listed again, and while another listing of it is half read."""
    from tests.publish import publish_many

    server = init_server(tmp_path / "data")
    folder = tmp_path / "many"
    folder.mkdir()
    files = []
    for n in range(1500):
        f = folder / f"sample-{n:05d}.bam"
        f.write_bytes(b"%d" % n)
        files.append(f)
    [(analysis_id, _)] = publish_many(server.data_dir, [("MANY", files)])
    with server:
        m = mounter.start(server, server.admin_token)
        path = m.point / analysis_id
        want = sorted(f.name for f in files)
        with os.scandir(path) as half:  # open, one buffer read, left open meanwhile
            first = next(half).name
            assert os.listdir(path) == want
            assert [first, *(e.name for e in half)] == want
        assert os.listdir(path) == want
        assert (path / want[-1]).read_bytes() == b"1499"


def test_no_mount_or_process_left_behind(tmp_path_factory):
    """Runs last in this module: no test's own mount is still mounted or running (the two
    module-wide mounts end with the module)."""
    base = str(tmp_path_factory.getbasetemp())

    def ours(text: str) -> bool:
        return base in text and "demo-mount" not in text and "own-mount" not in text

    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    assert not [p for p in mounts if ours(p)]
    procs = subprocess.run(
        ["pgrep", "-af", "--", f"--mount-point {base}"], capture_output=True, text=True, timeout=10
    ).stdout.splitlines()
    assert not [p for p in procs if ours(p)]
