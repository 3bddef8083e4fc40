"""A/B of download-spec requests: this checkout against another (`--baseline`), interleaved in
one run, so load from others on a shared machine falls on both alike. For each: requests/s
(wrk -t1 -c32, GET /download/{id}?offset=0&length=-1, a study READ token, 16 signed part URLs
per answer) and the server's CPU per request (user + system time of its process tree, from
/proc, divided by the requests wrk counted), which contention changes much less than
requests/s.

    .venv/bin/python bench/ab_spec.py --baseline /tmp/main-checkout [--rounds 8]
        [--seconds 5] [--workers 1] [--no-record]

The baseline checkout needs its own virtualenv (`bash scripts/setup.sh` in it). Each side
serves its own data directory, made by its own `score-server init`; the two servers run side
by side and take turns under wrk (order alternating by round). Medians over the rounds.
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

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import Serve, add_record_flag, free_port, need_tools, report  # noqa: E402
from bench.server import wrk  # noqa: E402
from tests.publish import MiB, random_file  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children now alive (granian's workers)."""
    pids = [pid] + [
        int(p)
        for p in subprocess.run(
            ["pgrep", "-P", str(pid)], capture_output=True, text=True
        ).stdout.split()
    ]
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / TICK


class Side:
    """One checkout's platform: init, publish one controlled object, a READ token, serve."""

    def __init__(self, name: str, checkout: Path, work: Path, source: Path, workers: int):
        self.name, self.checkout = name, checkout
        self.bin = checkout / ".venv" / "bin"
        self.data = work / name / "data"
        self.source, self.workers = source, workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def run(self, *args: str) -> str:
        return subprocess.run(
            args, capture_output=True, text=True, check=True, cwd=self.checkout
        ).stdout

    def __enter__(self) -> Side:
        server = str(self.bin / "score-server")
        self.run(server, "init", "--data-dir", str(self.data), "--part-size", "4")
        code = (
            "import sys; from pathlib import Path; sys.path.insert(0, '.'); "
            "from tests.publish import publish; "
            f"print(publish(Path({str(self.data)!r}), [Path({str(self.source)!r})], "
            "study='BENCH')[0])"
        )
        self.object_id = self.run(str(self.bin / "python"), "-c", code).strip().splitlines()[-1]
        out = self.run(
            server,
            "token",
            "create",
            "--data-dir",
            str(self.data),
            "--scopes",
            "PROGRAMDATA-BENCH.READ",
        )
        self.token = out.strip().splitlines()[-1]
        self.server = Serve(self.data, self.workers, port=self.port, bin_dir=self.bin)
        self.proc = self.server.__enter__().proc
        spec = httpx.get(self.spec_url(), headers={"Authorization": f"Bearer {self.token}"})
        spec.raise_for_status()
        self.parts = len(spec.json()["parts"])
        return self

    def spec_url(self) -> str:
        return f"{self.url}/download/{self.object_id}?offset=0&length=-1"

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(*exc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", required=True, type=Path, help="another checkout, with .venv")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5.0, help="each wrk run")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1)
    add_record_flag(ap)
    args = ap.parse_args()
    need_tools("wrk")
    work = Path(tempfile.mkdtemp(prefix="bench-ab-", dir=os.environ.get("BENCH_DIR")))
    try:
        source = random_file(work / "big.bam", 80 * MiB)  # 16 parts of 5 MiB (S3's floor)
        sides = [
            Side("baseline", args.baseline.resolve(), work, source, args.workers),
            Side("this", ROOT, work, source, args.workers),
        ]
        rps: dict[str, list[float]] = {s.name: [] for s in sides}
        cpu: dict[str, list[float]] = {s.name: [] for s in sides}
        p99: dict[str, list[float]] = {s.name: [] for s in sides}
        with sides[0] as a, sides[1] as b:
            assert a.parts == b.parts, (a.parts, b.parts)
            for r in range(args.rounds):
                for side in (a, b) if r % 2 == 0 else (b, a):
                    before = cpu_seconds(side.proc.pid)
                    result = wrk(side.spec_url(), side.token, args.connections, args.seconds)
                    spent = cpu_seconds(side.proc.pid) - before
                    requests = result["rps"] * args.seconds
                    rps[side.name].append(result["rps"])
                    p99[side.name].append(result["p99"])
                    cpu[side.name].append(spent / requests * 1000)
            parts = a.parts
        base = statistics.median(rps["baseline"])
        base_cpu = statistics.median(cpu["baseline"])
        names = {
            "baseline": f"baseline ({args.baseline.name})",
            "this": f"this checkout ({ROOT.name})",
        }
        rows = [
            f"| {names[n]} | {statistics.median(rps[n]):,.0f} | "
            f"{statistics.median(rps[n]) / base:.2f}× | {statistics.median(cpu[n]):.2f} ms | "
            f"{statistics.median(cpu[n]) / base_cpu:.2f}× | {statistics.median(p99[n]):.1f} ms |"
            for n in ("baseline", "this")
        ]
        load = Path("/proc/loadavg").read_text().split()[:3]
        stamp = time.strftime("%Y-%m-%d %H:%M")
        table = "\n".join(
            [
                f"### download specs A/B, median of {args.rounds} interleaved rounds ({stamp})",
                f"wrk -t1 -c{args.connections} -d{args.seconds:g}s, GET /download/{{id}}"
                f"?offset=0&length=-1 with a study READ token ({parts} signed part URLs per "
                f"answer); SQLite, local store, `serve --workers {args.workers}` each; CPU = "
                f"the server's user + system time per request. Load average at the end: "
                f"{' '.join(load)}.",
                "",
                "| server | requests/s | vs baseline | CPU per request | vs baseline | p99 |",
                "|---|---|---|---|---|---|",
                *rows,
                "",
            ]
        )
        report(table, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
