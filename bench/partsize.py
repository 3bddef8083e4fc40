"""Which default part size? The same object downloaded by score-client from platforms that
differ only in `--part-size`, interleaved, side by side with aria2c -x8 on the same server.

    .venv/bin/python bench/partsize.py [--size-mib 1024] [--sizes 16 64 256] [--runs 3]

Bigger parts mean fewer spec entries and signatures; smaller parts bound what a crash can
cost (resume refetches at most parallelism × part size). Appends a table to RESULTS.md.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import BIN, Platform, record, run_timed, score_client  # noqa: E402
from tests.publish import MiB, random_file  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-partsize-"))
    try:
        source = random_file(work / "big.bam", args.size_mib * MiB)
        times: dict[str, list[float]] = {}
        with ExitStack() as stack:
            platforms = {
                size: stack.enter_context(Platform(work / f"d{size}", [source], part_mib=size))
                for size in args.sizes
            }
            first = platforms[args.sizes[0]]
            url = score_client(first.client_env(), "url", "--object-id", first.object_ids[0])
            for _ in range(args.runs):
                for size, platform in platforms.items():
                    out = work / "out"
                    shutil.rmtree(out, ignore_errors=True)
                    seconds, _ = run_timed(
                        [
                            str(BIN / "score-client"),
                            "--quiet",
                            "download",
                            "--object-id",
                            platform.object_ids[0],
                            "--output-dir",
                            str(out),
                        ],
                        platform.client_env(),
                    )
                    times.setdefault(f"score-client, {size} MiB parts", []).append(seconds)
                out = work / "out"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                seconds, _ = run_timed(
                    ["aria2c", "-q", "-x8", "-s8", "-d", str(out), "-o", "big.bam", url]
                )
                times.setdefault("aria2c -x8 -s8", []).append(seconds)
        base = statistics.median(times["aria2c -x8 -s8"])
        size = args.size_mib * MiB
        rows = [
            f"| {name} | {size / statistics.median(t) / 1e6:,.0f} MB/s | "
            f"{statistics.median(t):.2f} s | {base / statistics.median(t):.2f}× |"
            for name, t in times.items()
        ]
        table = "\n".join(
            [
                f"### part size, {args.size_mib} MiB download, median of {args.runs} "
                f"({time.strftime('%Y-%m-%d %H:%M')})",
                "The same object from platforms differing only in --part-size; score-client "
                "verifies MD5 and fsyncs. Ratio = aria2c's time / the row's time.",
                "",
                "| client | throughput | time | vs aria2c |",
                "|---|---|---|---|",
                *rows,
                "",
            ]
        )
        print(table)
        if not args.no_record:
            record(table)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
