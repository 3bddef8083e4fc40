"""Download benchmark: the same object from the same score-server, side by side in one run:
score-client (MD5-verified, fsync'ed) vs aria2c -x8 -s8 (without, and then `sync`) vs curl,
on the same signed URL; CPU seconds of the client and of the server's processes.

    .venv/bin/python bench/download.py [--size-mib 2048] [--runs 3] [--baseline DIR]
                                       [--no-record]

--baseline DIR: also another tree's score-client (DIR/src first on PYTHONPATH, e.g.
`git archive main | tar -x -C DIR`) against the same server, interleaved. Prints a table and
appends it to bench/RESULTS.md. Medians of interleaved runs; the machine is noisy, so read
the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import Platform, add_record_flag, report, rss_of, tree_cpu  # noqa: E402
from tests.publish import MiB, random_file  # noqa: E402

BIN = Path(sys.executable).parent
ARIA = "aria2c -x8 -s8"
SYNCED = "aria2c -x8 -s8, then sync"


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, int, float]:
    """Wall seconds, peak RSS (KiB) and CPU seconds of a command, which must succeed."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    peak, err = rss_of(proc)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed: {err}")
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return seconds, peak, cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=2048)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--baseline", type=Path, default=None, help="another tree's client too")
    add_record_flag(ap)
    args = ap.parse_args()
    for tool in ("aria2c", "curl"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is needed (apt-get install aria2 curl)")
    work = Path(tempfile.mkdtemp(prefix="bench-download-", dir=os.environ.get("BENCH_DIR")))
    size = args.size_mib * MiB
    try:
        source = random_file(work / "big.bam", size)
        with Platform(work / "data", [source], access="open") as platform:
            object_id = platform.object_ids[0]
            env = platform.client_env()
            url = subprocess.run(
                [str(BIN / "score-client"), "url", "--object-id", object_id],
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            tools = {
                "score-client": lambda out: [
                    str(BIN / "score-client"),
                    "--quiet",
                    "download",
                    "--object-id",
                    object_id,
                    "--output-dir",
                    str(out),
                    "--parallel",
                    str(args.parallel),
                ],
                ARIA: lambda out: [
                    "aria2c",
                    "-q",
                    "-x8",
                    "-s8",
                    "-d",
                    str(out),
                    "-o",
                    "big.bam",
                    url,
                ],
                "curl": lambda out: ["curl", "-s", "-o", str(out / "big.bam"), url],
            }
            envs = {name: env for name in tools}
            if args.baseline:
                old = f"score-client (baseline {args.baseline.name})"
                tools = {
                    "score-client": tools["score-client"],
                    old: tools["score-client"],
                    **{k: v for k, v in tools.items() if k != "score-client"},
                }
                envs[old] = {**env, "PYTHONPATH": str(args.baseline.resolve() / "src")}
            rows_of = [*tools, SYNCED]
            times: dict[str, list[float]] = {t: [] for t in rows_of}
            peaks: dict[str, list[int]] = {t: [] for t in rows_of}
            cpus: dict[str, list[tuple[float, float]]] = {t: [] for t in rows_of}
            for run in range(args.runs):
                order = list(tools) if run % 2 == 0 else list(reversed(tools))
                for name in order:
                    out = work / "out"
                    shutil.rmtree(out, ignore_errors=True)
                    out.mkdir()
                    os.sync()  # nobody pays for what an earlier run left dirty
                    server0 = tree_cpu(platform.proc.pid)
                    seconds, peak, cpu = timed(tools[name](out), envs[name])
                    server = tree_cpu(platform.proc.pid) - server0
                    assert (out / "big.bam").stat().st_size == size
                    times[name].append(seconds)
                    peaks[name].append(peak)
                    cpus[name].append((cpu, server))
                    if name == ARIA:  # what it leaves unsynced, made durable as score-client does
                        started = time.perf_counter()
                        os.sync()
                        times[SYNCED].append(seconds + time.perf_counter() - started)
                        peaks[SYNCED].append(peak)
                        cpus[SYNCED].append((cpu, server))
                    shutil.rmtree(out)
        load = os.getloadavg()[0]
        base = statistics.median(times[ARIA])
        synced = statistics.median(times[SYNCED])
        rows = []
        for name in rows_of:
            med = statistics.median(times[name])
            rows.append(
                f"| {name} | {size / med / 1e6:,.0f} MB/s | {med:.2f} s | "
                f"{base / med:.2f}× | {synced / med:.2f}× | "
                f"{statistics.median(c for c, _ in cpus[name]):.1f} s | "
                f"{statistics.median(s for _, s in cpus[name]):.1f} s | "
                f"{max(peaks[name]) / 1024:.0f} MiB |"
            )
        table = "\n".join(
            [
                f"### download, {args.size_mib} MiB object, median of {args.runs} "
                f"({time.strftime('%Y-%m-%d %H:%M')})",
                "score-client verifies MD5 and fsyncs before its atomic rename; aria2c and curl do "
                "neither (the `then sync` row adds a `sync` after aria2c). Ratio = the peer's "
                "time / the tool's time (higher is faster). CPU: seconds of the client and of "
                f"the server's processes. Load average (1 min) {load:.1f} at the end, on 2 cores."
                + (f" Baseline: the tree {args.baseline}." if args.baseline else ""),
                "",
                "| tool | throughput | time | vs aria2c | vs aria2c then sync | client CPU | "
                "server CPU | peak RSS |",
                "|---|---|---|---|---|---|---|---|",
                *rows,
                "",
            ]
        )
        report(table, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
