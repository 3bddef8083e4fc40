"""FUSE mount benchmark: the same random file read through `score-client mount` (from a
score-server) and through `rclone mount :http:` (from Debian's nginx serving the same bytes),
side by side in one run; `score-client download` of the same object as the sequential
reference.

    .venv/bin/python bench/mount.py [--size-mib 1024] [--runs 3] [--seconds 10]
                                    [--baseline DIR] [--no-record]

(a) Sequential: `dd bs=1M` of the whole file to /dev/null through each mount, and
    `score-client download` of the object to disk (MD5-verified, fsync'ed). Target: score-client
    mount >= 0.8x score-client download.
(b) Random: 64 KiB preads at seeded, 4 KiB-aligned offsets for --seconds through each mount
    (the same offsets for both; POSIX_FADV_RANDOM so the kernel does not read ahead), every
    read checked against the local file. Target: score-client mount >= rclone mount.

score-client mounts with `kernel_cache` (objects never change), so a second read of a file in
the same mount comes from the page cache: every measurement therefore gets a fresh mount (a
new FUSE superblock has no cached pages) and both tools are treated alike. Mounts run in the
foreground as subprocesses and are always unmounted (`fusermount3 -u -z`). rclone runs with
its defaults otherwise (--vfs-read-chunk-size 128M, --buffer-size 16M). Peak RSS is the mount
process's VmHWM. Medians of interleaved runs. --baseline DIR: also another tree's
`score-client mount` (DIR/src first on PYTHONPATH, e.g. `git archive main | tar -x -C DIR`),
interleaved with the others.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    BIN,
    Nginx,
    Platform,
    add_record_flag,
    need_tools,
    report,
    run_timed,
    stop,
)
from tests.publish import MiB, random_file  # noqa: E402

READ = 64 * 1024
SCORE, RCLONE, DOWNLOAD = "score-client mount", "rclone mount (nginx)", "score-client download"


def vm_hwm(pid: int) -> int:
    """Peak RSS (KiB) of a running process."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def unmount(mount_point: Path) -> None:
    if os.path.ismount(mount_point):
        subprocess.run(["fusermount3", "-u", "-z", str(mount_point)], capture_output=True)


@contextlib.contextmanager
def mounted(
    kind: str, mount_point: Path, env: dict, nginx_url: str, log: Path
) -> Iterator[tuple[Path, subprocess.Popen]]:
    """A fresh mount; yields the benchmark file's path in it and the mount process."""
    if kind.startswith(SCORE):
        cmd = [str(BIN / "score-client"), "mount", "--mount-point", str(mount_point)]
    else:
        cmd = [
            "rclone",
            "mount",
            ":http:",
            str(mount_point),
            "--http-url",
            nginx_url + "/",
            "--read-only",
            "--vfs-cache-mode",
            "off",
            "--config",
            "/dev/null",
        ]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd, env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 60
        while not os.path.ismount(mount_point):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{kind} did not mount: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        found = [Path(d) / "big.bam" for d, _, names in os.walk(mount_point) if "big.bam" in names]
        if len(found) != 1:
            raise SystemExit(f"{kind}: expected one big.bam in the mount, found {found}")
        yield found[0], proc
    finally:
        unmount(mount_point)
        stop(proc)
        unmount(mount_point)


def random_reads(path: Path, size: int, source: Path, seconds: float, seed: int) -> int:
    """How many 64 KiB preads at seeded random offsets complete in `seconds`."""
    rng = random.Random(seed)
    fd = os.open(path, os.O_RDONLY)
    local = os.open(source, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        slots = (size - READ) // 4096
        count = 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            offset = rng.randrange(slots + 1) * 4096
            if os.pread(fd, READ, offset) != os.pread(local, READ, offset):
                raise SystemExit(f"{path}: wrong bytes at offset {offset}")
            count += 1
        return count
    finally:
        os.close(fd)
        os.close(local)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0, help="random-read phase length")
    ap.add_argument("--seed", type=int, default=42, help="random offsets' seed")
    ap.add_argument("--baseline", type=Path, default=None, help="another tree's mount too")
    add_record_flag(ap)
    args = ap.parse_args()
    need_tools("rclone", "nginx", "fusermount3", "dd")
    work = Path(tempfile.mkdtemp(prefix="bench-mount-", dir=os.environ.get("BENCH_DIR")))
    size = args.size_mib * MiB
    mount_points = {SCORE: work / "mnt-score", RCLONE: work / "mnt-rclone"}
    base = f"{SCORE} (baseline {args.baseline.name})" if args.baseline else None
    if base:
        mount_points[base] = work / "mnt-base"
    try:
        (work / "src").mkdir()
        source = random_file(work / "src" / "big.bam", size)
        for mp in mount_points.values():
            mp.mkdir()
        with (
            Platform(work / "data", [source], access="open") as platform,
            Nginx(work / "src") as nginx,
        ):
            object_id = platform.object_ids[0]
            env = {**platform.client_env(), "SCORE_CLIENT_CONF_DIR": str(work / "no-conf")}
            envs = {k: env for k in mount_points}
            if base:
                envs[base] = {**env, "PYTHONPATH": str(args.baseline.resolve() / "src")}
            mounts = list(mount_points)
            seq: dict[str, list[float]] = {k: [] for k in [*mounts, DOWNLOAD]}
            rnd: dict[str, list[float]] = {k: [] for k in mounts}
            peaks: dict[str, list[int]] = {k: [] for k in [*mounts, DOWNLOAD]}
            for run in range(args.runs):
                kinds = mounts if run % 2 == 0 else mounts[::-1]
                for kind in kinds:
                    with mounted(
                        kind, mount_points[kind], envs[kind], nginx.url, work / f"{run}.log"
                    ) as (path, proc):
                        seconds, _ = run_timed(["dd", f"if={path}", "of=/dev/null", "bs=1M"])
                        seq[kind].append(seconds)
                        peaks[kind].append(vm_hwm(proc.pid))
                out = work / "out"
                seconds, peak = run_timed(
                    [
                        str(BIN / "score-client"),
                        "--quiet",
                        "download",
                        "--object-id",
                        object_id,
                        "--output-dir",
                        str(out),
                    ],
                    env,
                )
                if (out / "big.bam").stat().st_size != size:
                    raise SystemExit("score-client download wrote the wrong size")
                shutil.rmtree(out)
                seq[DOWNLOAD].append(seconds)
                peaks[DOWNLOAD].append(peak)
                for kind in kinds:
                    with mounted(
                        kind, mount_points[kind], envs[kind], nginx.url, work / f"{run}.log"
                    ) as (path, proc):
                        n = random_reads(path, size, source, args.seconds, args.seed + run)
                        rnd[kind].append(n / args.seconds)
                        peaks[kind].append(vm_hwm(proc.pid))
        base_seq = statistics.median(seq[DOWNLOAD])
        base_rnd = statistics.median(rnd[RCLONE])
        rows = []
        for kind in [*mounts, DOWNLOAD]:
            med = statistics.median(seq[kind])
            r = f"{statistics.median(rnd[kind]):,.0f}" if kind in rnd else "—"
            vs_r = f"{statistics.median(rnd[kind]) / base_rnd:.2f}×" if kind in rnd else "—"
            rows.append(
                f"| {kind} | {size / med / 1e6:,.0f} MB/s | {med:.2f} s | "
                f"{base_seq / med:.2f}× | {r} | {vs_r} | "
                f"{max(peaks[kind]) / 1024:.0f} MiB |"
            )
        table = "\n".join(
            [
                f"### mount, {args.size_mib} MiB file, median of {args.runs} "
                f"({time.strftime('%Y-%m-%d %H:%M')})",
                "Sequential: dd bs=1M through the mount to /dev/null, or score-client download to "
                "disk (MD5-verified, fsync'ed); a fresh mount for every measurement, so nothing "
                f"comes from the kernel's page cache. Random: 64 KiB preads at seeded offsets for "
                f"{args.seconds:g} s, each checked. rclone: `rclone mount :http: --read-only "
                "--vfs-cache-mode off` of nginx serving the same file. Targets: mount ≥ 0.8× "
                "download (sequential); score-client ≥ rclone (random). Peak RSS: the mount "
                "process (the download: score-client). Load average (1 min) "
                f"{os.getloadavg()[0]:.1f} at the end, on 2 cores.",
                "",
                "| path | sequential | time | vs download | random reads/s | vs rclone | "
                "peak RSS |",
                "|---|---|---|---|---|---|---|",
                *rows,
                "",
            ]
        )
        report(table, args)
    finally:
        for mp in mount_points.values():
            unmount(mp)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
