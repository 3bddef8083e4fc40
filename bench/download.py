"""Download benchmark: the same object from the same score-server, side by side in one run:
score-client (MD5-verified, fsync'ed) vs aria2c -x8 -s8 vs curl, on the same signed URL.

    .venv/bin/python bench/download.py [--size-mib 2048] [--runs 3]

Prints a table and appends it to bench/RESULTS.md. Medians of interleaved runs; the machine
is noisy, so read the ratios, not the absolute numbers.
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

from bench.common import Platform, record, rss_of  # noqa: E402
from tests.publish import MiB, random_file  # noqa: E402

BIN = Path(sys.executable).parent


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of a command, which must succeed."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    peak = rss_of(proc)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed: {proc.stderr_text}")
    return time.perf_counter() - start, peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=2048)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--parallel", type=int, default=8)
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
                "aria2c -x8 -s8": lambda out: [
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
            times: dict[str, list[float]] = {t: [] for t in tools}
            peaks: dict[str, list[int]] = {t: [] for t in tools}
            for _ in range(args.runs):
                for name, command in tools.items():
                    out = work / "out"
                    shutil.rmtree(out, ignore_errors=True)
                    out.mkdir()
                    seconds, peak = timed(command(out), env)
                    assert (out / "big.bam").stat().st_size == size
                    times[name].append(seconds)
                    peaks[name].append(peak)
                    shutil.rmtree(out)
        base = statistics.median(times["aria2c -x8 -s8"])
        rows = []
        for name in tools:
            med = statistics.median(times[name])
            rows.append(
                f"| {name} | {size / med / 1e6:,.0f} MB/s | {med:.2f} s | "
                f"{base / med:.2f}× | {max(peaks[name]) / 1024:.0f} MiB |"
            )
        table = "\n".join(
            [
                f"### download, {args.size_mib} MiB object, median of {args.runs} "
                f"({time.strftime('%Y-%m-%d %H:%M')})",
                "score-client verifies MD5 and fsyncs before its atomic rename; aria2c and curl do "
                "neither. Ratio = aria2c's time / the tool's time (higher is faster).",
                "",
                "| tool | throughput | time | vs aria2c | peak RSS |",
                "|---|---|---|---|---|",
                *rows,
                "",
            ]
        )
        print(table)
        record(table)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
