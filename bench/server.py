"""score-server under load, side by side in one run:
(a) download-spec requests per second: `wrk` with 32 connections for 10 s against
    GET /download/{id}?offset=0&length=-1 (a controlled object, a study READ token, so every
    request checks the token, the scope and signs every part URL), for
    `score-server serve --workers 1` and `--workers 2` on the same data directory;
(b) signed-URL range throughput: 8 parallel `curl -r` ranged GETs covering a 1 GiB object,
    to /dev/null, from score-server's signed URL vs Debian's nginx serving the same file
    (same 8 ranges).

    .venv/bin/python bench/server.py [--size-mib 1024] [--runs 3] [--seconds 10]
        [--connections 32] [--ranges 8] [--nginx-workers 1] [--batch 100]
        [--baseline DIR] [--specs-only | --ranges-only] [--no-record]

(c) batch specifications per second: `wrk` POSTing `/download/batch` with `--batch` ids of
    distinct small controlled objects (one part each), for both servers;
--baseline DIR: also serve the same data directory with the code of another tree (e.g.
    `git archive main | tar -x -C DIR`), its rows interleaved with ours (same run, same
    machine load), the ranged GETs too; it has no batch endpoint. --specs-only skips the
    ranged GETs, --ranges-only the wrk runs.

wrk runs with one thread (`-t1`; 32 connections are easy for one wrk thread and the machine
has only two cores). Medians of interleaved runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
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

from bench.common import (  # noqa: E402
    Nginx,
    Platform,
    Serve,
    add_record_flag,
    create_token,
    need_tools,
    report,
    score_client,
)
from tests.publish import MiB, random_file  # noqa: E402

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(
    url: str, token: str, connections: int, seconds: float, script: Path | None = None
) -> dict[str, float]:
    """Requests/s and latency percentiles (ms) from one wrk run; every answer must be 2xx."""
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--latency",
            "-H",
            f"Authorization: Bearer {token}",
            *(["-s", str(script)] if script else []),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw failures:\n{out}")
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        result[f"p{pct}"] = float(m[1]) * UNITS[m[2]]
    return result


def parallel_ranges(url: str, size: int, ranges: int) -> float:
    """Seconds for `ranges` concurrent curl -r GETs that together cover [0, size)."""
    step = -(-size // ranges)
    cmds = [
        [
            "curl",
            "-s",
            "-f",
            "-r",
            f"{lo}-{min(lo + step, size) - 1}",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            url,
        ]
        for lo in range(0, size, step)
    ]
    started = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, text=True) for c in cmds]
    got = [int(p.communicate()[0] or 0) for p in procs]
    seconds = time.perf_counter() - started
    if any(p.returncode for p in procs) or sum(got) != size:
        raise SystemExit(
            f"ranged GETs failed: codes {[p.returncode for p in procs]}, {sum(got)} of {size} bytes"
        )
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0, help="each wrk run")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--ranges", type=int, default=8)
    ap.add_argument("--nginx-workers", type=int, default=1)
    ap.add_argument("--batch", type=int, default=100, help="ids per batch request")
    ap.add_argument("--baseline", type=Path, default=None, help="another tree, interleaved")
    ap.add_argument("--specs-only", action="store_true", help="skip the ranged GETs")
    ap.add_argument("--ranges-only", action="store_true", help="skip the wrk runs")
    add_record_flag(ap)
    args = ap.parse_args()
    need_tools("wrk", "curl", "nginx")
    label = ""
    if args.baseline:
        args.baseline = args.baseline.resolve()
        label = f" (baseline {args.baseline.name})"
    work = Path(tempfile.mkdtemp(prefix="bench-server-", dir=os.environ.get("BENCH_DIR")))
    size = args.size_mib * MiB
    try:
        (work / "src").mkdir()
        source = random_file(work / "src" / "big.bam", size)
        smalls = [
            random_file(work / "src" / f"s{i:04d}.bam", 4096, seed=i + 1) for i in range(args.batch)
        ]
        with contextlib.ExitStack() as stack:
            one = stack.enter_context(
                Platform(work / "data", [source, *smalls], access="controlled")
            )
            two = stack.enter_context(Serve(one.data_dir, workers=2))
            nginx = stack.enter_context(Nginx(work / "src", args.nginx_workers))
            servers = {"score-server --workers 1": one.url, "score-server --workers 2": two.url}
            ours = list(servers)
            if args.baseline:
                for n in (1, 2):
                    old = stack.enter_context(Serve(one.data_dir, n, source=args.baseline))
                    servers[f"score-server --workers {n}{label}"] = old.url
            object_id = one.object_ids[0]
            token = create_token(one.data_dir, "PROGRAMDATA-BENCH.READ")
            spec_path = f"/download/{object_id}?offset=0&length=-1"
            for url in servers.values():
                r = httpx.get(url + spec_path, headers={"Authorization": f"Bearer {token}"})
                r.raise_for_status()
                parts = len(r.json()["parts"])
            body = json.dumps({"objects": [{"objectId": i} for i in one.object_ids[1:]]})
            script = work / "batch.lua"
            script.write_text(
                'wrk.method = "POST"\n'
                'wrk.headers["Content-Type"] = "application/json"\n'
                f"wrk.body = {json.dumps(body)}\n"
            )
            for name in ours:
                r = httpx.post(
                    servers[name] + "/download/batch",
                    content=body,
                    headers={"Authorization": f"Bearer {token}"},
                )
                r.raise_for_status()
                assert {x["status"] for x in r.json()["results"]} == {200}, r.text[:300]
            signed = {
                name: score_client(
                    {"METADATA_URL": url, "STORAGE_URL": url, "ACCESSTOKEN": token},
                    "url",
                    "--object-id",
                    object_id,
                )
                for name, url in servers.items()
            }
            nginx_name = f"nginx (worker_processes {args.nginx_workers})"
            targets = {} if args.specs_only else {**signed, nginx_name: f"{nginx.url}/big.bam"}
            specs: dict[str, list[dict]] = {} if args.ranges_only else {n: [] for n in servers}
            batches: dict[str, list[dict]] = {} if args.ranges_only else {n: [] for n in ours}
            ranged: dict[str, list[float]] = {name: [] for name in targets}
            for run in range(args.runs):
                order = list(servers) if run % 2 == 0 else list(reversed(servers))
                for name in order if specs else []:
                    specs[name].append(
                        wrk(servers[name] + spec_path, token, args.connections, args.seconds)
                    )
                    if name in batches:
                        batches[name].append(
                            wrk(
                                servers[name] + "/download/batch",
                                token,
                                args.connections,
                                args.seconds,
                                script,
                            )
                        )
                order = list(targets) if run % 2 == 0 else list(reversed(targets))
                for name in order:
                    ranged[name].append(parallel_ranges(targets[name], size, args.ranges))
        base_rps = statistics.median(
            r["rps"] for r in specs.get("score-server --workers 1", [{"rps": 1.0}])
        )
        spec_rows = []
        for name, results in specs.items():
            rps = statistics.median(r["rps"] for r in results)
            spec_rows.append(
                f"| {name} | {rps:,.0f} | {rps / base_rps:.2f}× | "
                f"{statistics.median(r['p50'] for r in results):.1f} ms | "
                f"{statistics.median(r['p99'] for r in results):.1f} ms |"
            )
        batch_rows = []
        for name, results in batches.items():
            rps = statistics.median(r["rps"] for r in results)
            batch_rows.append(
                f"| {name} | {rps:,.0f} | {rps * args.batch:,.0f} | "
                f"{statistics.median(r['p50'] for r in results):.1f} ms | "
                f"{statistics.median(r['p99'] for r in results):.1f} ms |"
            )
        range_rows = []
        if targets:
            base_range = statistics.median(ranged[nginx_name])
            for name, times in ranged.items():
                med = statistics.median(times)
                range_rows.append(
                    f"| {name} | {size / med / 1e6:,.0f} MB/s | {med:.2f} s | "
                    f"{base_range / med:.2f}× |"
                )
        stamp = time.strftime("%Y-%m-%d %H:%M")
        lines = (
            []
            if args.ranges_only
            else [
                f"### server: download-spec requests/s, median of {args.runs} ({stamp})",
                f"wrk -t1 -c{args.connections} -d{args.seconds:g}s, GET /download/{{id}}"
                f"?offset=0&length=-1 with a study READ token on a controlled {args.size_mib} MiB "
                f"object ({parts} signed part URLs per answer); SQLite, local store, all "
                "servers on one data directory, runs interleaved. Ratio vs this code's --workers 1."
                + (f" Baseline: the tree {args.baseline}." if args.baseline else ""),
                "",
                "| server | requests/s | vs 1 worker | p50 latency | p99 latency |",
                "|---|---|---|---|---|",
                *spec_rows,
                "",
                f"### server: batch download specs (POST /download/batch, {args.batch} ids), "
                f"median of {args.runs} ({stamp})",
                f"wrk -t1 -c{args.connections} -d{args.seconds:g}s, each request the specs of "
                f"{args.batch} distinct controlled 4 KiB objects (one part each), same servers.",
                "",
                "| server | requests/s | specs/s | p50 latency | p99 latency |",
                "|---|---|---|---|---|",
                *batch_rows,
                "",
            ]
        )
        if range_rows:
            lines += [
                f"### server: {args.ranges} parallel ranged GETs of a {args.size_mib} MiB object, "
                f"median of {args.runs} ({stamp})",
                f"{args.ranges} concurrent `curl -r` to /dev/null covering the whole object; "
                "score-server's signed whole-object URL (`score-client url`) vs nginx (sendfile) "
                "serving the same file. Ratio = nginx's time / the server's time. Load average "
                f"(1 min) {os.getloadavg()[0]:.1f} at the end, on 2 cores."
                + (f" Baseline: the tree {args.baseline}." if args.baseline else ""),
                "",
                "| server | throughput | time | vs nginx |",
                "|---|---|---|---|",
                *range_rows,
                "",
            ]
        table = "\n".join(lines)
        report(table, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
