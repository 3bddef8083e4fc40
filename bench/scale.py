"""score-server at scale: PostgreSQL and Ceph RGW (S3), side by side in one run:
(a) download-spec requests per second with 1, 2 and 4 server processes
    (`score-server serve --workers N`, all on one PostgreSQL database and one S3 bucket):
    `wrk` with 32 connections for 10 s against GET /download/{id}?offset=0&length=-1 with a
    study READ token (every answer presigns every part URL);
(b) a 2 GiB download through RGW presigned URLs (object bytes never pass through the server):
    `score-client download` (MD5-verified, fsync'ed) vs `aria2c -x8 -s8` on the presigned
    whole-object URL from `score-client url`.

    .venv/bin/python bench/scale.py [--size-mib 2048] [--runs 3] [--seconds 10]
        [--workers 1 2 4] [--no-record]

With --files N it measures instead every path that lists or searches on a generated platform
of N files (bench/scale_million.py; its own options follow --files).

Starts a throwaway PostgreSQL (`scripts/postgres.sh`) and a single-node Ceph RGW
(`../shared/tools/ceph-s3` through `scripts/s3.sh`, in-memory OSD capped at 4 GiB: keep
--size-mib well under that) in a temporary directory and stops both at the end. Medians of
interleaved runs.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    BIN,
    Platform,
    Serve,
    add_record_flag,
    create_token,
    free_port,
    need_tools,
    report,
    run_timed,
    score_client,
)
from bench.server import wrk  # noqa: E402
from tests.publish import MiB, random_file  # noqa: E402

CEPH_S3 = ROOT.parent / "shared" / "tools" / "ceph-s3"
POSTGRES = ROOT / "scripts" / "postgres.sh"
S3 = ROOT / "scripts" / "s3.sh"  # Ceph RGW, retried; S3_SERVER=ceph: never SeaweedFS


def exported(text: str) -> dict[str, str]:
    """NAME=value pairs of the `export ...` lines a start script prints."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("export "):
            found.update(re.findall(r"(\w+)=(\S+)", line))
    return found


def main() -> None:
    if "--files" in sys.argv:
        from bench import scale_million

        scale_million.main()
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=2048)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0, help="each wrk run")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    add_record_flag(ap)
    args = ap.parse_args()
    need_tools("wrk", "aria2c", "bash")
    if not CEPH_S3.exists():
        raise SystemExit(f"{CEPH_S3} is missing")
    work = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=os.environ.get("BENCH_DIR")))
    os.chmod(work, 0o755)  # PostgreSQL runs as user postgres and must reach its data dir
    size = args.size_mib * MiB
    pg_dir, ceph_dir = work / "pg", work / "ceph"
    pg_started = ceph_started = False
    try:
        source = random_file(work / "big.bam", size)
        pg_started = True
        out = subprocess.run(
            ["bash", str(POSTGRES), "start", str(pg_dir), str(free_port())],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise SystemExit(f"postgres.sh start failed: {out.stderr}")
        pg_url = exported(out.stdout)["PYSCORE_TEST_POSTGRES"]
        import psycopg

        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE pyscore_bench")
        db_url = pg_url.rsplit("/", 1)[0] + "/pyscore_bench"
        ceph_started = True
        out = subprocess.run(
            ["bash", str(S3), "start", str(ceph_dir), str(free_port())],
            capture_output=True,
            text=True,
            env={**os.environ, "S3_SERVER": "ceph"},
        )
        if out.returncode != 0:
            raise SystemExit(f"Ceph RGW did not start:\n{out.stderr}")
        s3 = exported(out.stdout)
        init_args = [
            "--database-url",
            db_url,
            "--store",
            "s3://pyscore-bench/objects",
            "--s3-endpoint",
            s3["S3_ENDPOINT"],
            "--s3-access-key",
            s3["S3_ACCESS_KEY"],
            "--s3-secret-key",
            s3["S3_SECRET_KEY"],
        ]
        with ExitStack() as stack:
            first = stack.enter_context(
                Platform(
                    work / "data",
                    [source],
                    access="controlled",
                    workers=args.workers[0],
                    init_args=init_args,
                )
            )
            urls = {args.workers[0]: first.url}
            for n in args.workers[1:]:
                urls[n] = stack.enter_context(Serve(first.data_dir, workers=n)).url
            object_id = first.object_ids[0]
            source.unlink()  # it is in the object store now
            token = create_token(first.data_dir, "PROGRAMDATA-BENCH.READ")
            spec_path = f"/download/{object_id}?offset=0&length=-1"
            r = httpx.get(first.url + spec_path, headers={"Authorization": f"Bearer {token}"})
            r.raise_for_status()
            parts = r.json()["parts"]
            if not all(p["url"].startswith(s3["S3_ENDPOINT"]) for p in parts):
                raise SystemExit("part URLs do not point at the object store")
            env = {
                "METADATA_URL": first.url,
                "STORAGE_URL": first.url,
                "ACCESSTOKEN": token,
                "SCORE_CLIENT_CONF_DIR": str(work / "no-conf"),
            }
            presigned = score_client(env, "url", "--object-id", object_id)
            tools = {
                "score-client": lambda out: [
                    str(BIN / "score-client"),
                    "--quiet",
                    "download",
                    "--object-id",
                    object_id,
                    "--output-dir",
                    str(out),
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
                    presigned,
                ],
            }
            specs: dict[int, list[dict]] = {n: [] for n in urls}
            times: dict[str, list[float]] = {t: [] for t in tools}
            peaks: dict[str, list[int]] = {t: [] for t in tools}
            for run in range(args.runs):
                order = list(urls) if run % 2 == 0 else list(reversed(urls))
                for n in order:
                    specs[n].append(wrk(urls[n] + spec_path, token, args.connections, args.seconds))
                order = list(tools) if run % 2 == 0 else list(reversed(tools))
                for name in order:
                    out = work / "out"
                    shutil.rmtree(out, ignore_errors=True)
                    out.mkdir()
                    seconds, peak = run_timed(tools[name](out), env)
                    if (out / "big.bam").stat().st_size != size:
                        raise SystemExit(f"{name} wrote the wrong size")
                    shutil.rmtree(out)
                    times[name].append(seconds)
                    peaks[name].append(peak)
        base_rps = statistics.median(r["rps"] for r in specs[args.workers[0]])
        spec_rows = []
        for n, results in specs.items():
            rps = statistics.median(r["rps"] for r in results)
            spec_rows.append(
                f"| --workers {n} | {rps:,.0f} | {rps / base_rps:.2f}× | "
                f"{statistics.median(r['p50'] for r in results):.1f} ms | "
                f"{statistics.median(r['p99'] for r in results):.1f} ms |"
            )
        base = statistics.median(times["aria2c -x8 -s8"])
        rows = []
        for name in tools:
            med = statistics.median(times[name])
            rows.append(
                f"| {name} | {size / med / 1e6:,.0f} MB/s | {med:.2f} s | "
                f"{base / med:.2f}× | {max(peaks[name]) / 1024:.0f} MiB |"
            )
        stamp = time.strftime("%Y-%m-%d %H:%M")
        table = "\n".join(
            [
                f"### scale: download-spec requests/s on PostgreSQL + Ceph RGW, median of "
                f"{args.runs} ({stamp})",
                f"wrk -t1 -c{args.connections} -d{args.seconds:g}s, GET /download/{{id}}"
                f"?offset=0&length=-1 with a study READ token on a controlled {args.size_mib} MiB "
                f"object ({len(parts)} parts, all with the one presigned URL: S3 URLs bind no "
                "range); PostgreSQL 15, S3 store on Ceph RGW; the servers share the database "
                "and bucket. 2 cores: wrk and the servers compete for them. Ratio vs the first "
                "row.",
                "",
                "| server processes | requests/s | ratio | p50 latency | p99 latency |",
                "|---|---|---|---|---|",
                *spec_rows,
                "",
                f"### scale: {args.size_mib} MiB download through Ceph RGW presigned URLs, median "
                f"of {args.runs} ({stamp})",
                "Object bytes go from RGW to the client; score-server only signs. score-client "
                "verifies MD5 and fsyncs; aria2c does neither. Ratio = aria2c's time / the tool's "
                "time.",
                "",
                "| tool | throughput | time | vs aria2c | peak RSS |",
                "|---|---|---|---|---|",
                *rows,
                "",
            ]
        )
        report(table, args)
    finally:
        if ceph_started:
            subprocess.run(["bash", str(S3), "stop", str(ceph_dir)], capture_output=True)
        if pg_started:
            subprocess.run(["bash", str(POSTGRES), "stop", str(pg_dir)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
