"""File Repository page with 100,000 published files: server time of the filtered first page.

    .venv/bin/python bench/portal.py [--files 100000] [--runs 7]

Fills a fresh platform by bulk insert (as if many analyses had been published), then asks
for typical views and reads the server's own `Server-Timing` (render included, network
excluded). Results are appended to bench/RESULTS.md. Target: under 300 ms.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import BIN, free_port, record  # noqa: E402
from tests.publish import KINDS, add_donors, add_published_analysis  # noqa: E402


def fill(data_dir: Path, files: int, seed: int = 7) -> None:
    """Bulk-insert studies, donors, analyses and files, then build the repository view."""
    from pyscore.server import repository
    from pyscore.server.db import utcnow
    from pyscore.server.platform import Platform
    from pyscore.server.settings import Settings

    rng = random.Random(seed)
    platform = Platform.open(Settings.load(data_dir))
    now = utcnow()
    with platform.db.session() as s:
        studies = [f"ST{i:02d}" for i in range(12)]
        per_analysis = 4
        donors = [
            (studies[d % len(studies)], f"DO{d:07d}", f"SA{d:07d}") for d in range(files // 20)
        ]
        add_donors(
            s, studies, [(st, donor, "SP" + donor[2:], sample) for st, donor, sample in donors]
        )
        n = 0
        while n < files:
            st, donor, sample = rng.choice(donors)
            ftype, dtype, atype = rng.choice(KINDS)
            analysis_id = str(uuid.UUID(int=rng.getrandbits(128)))
            rows = [
                {
                    "object_id": str(uuid.UUID(int=rng.getrandbits(128))),
                    "file_name": f"{donor}.{k}.{ftype.lower()}",
                    "file_size": rng.randint(10**6, 10**11),
                    "file_type": ftype,
                    "file_access": rng.choice(("open", "controlled")),
                    "data_type": dtype,
                }
                for k in range(per_analysis)
            ]
            add_published_analysis(s, analysis_id, st, sample, atype, now, rows)
            n += per_analysis
            if n % 20000 < per_analysis:
                s.flush()
        s.flush()
        repository.rebuild(s)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-portal-"))
    import subprocess

    try:
        subprocess.run(
            [str(BIN / "score-server"), "init", "--data-dir", str(work / "d")],
            check=True,
            capture_output=True,
        )
        started = time.perf_counter()
        fill(work / "d", args.files)
        fill_s = time.perf_counter() - started
        port = free_port()
        proc = subprocess.Popen(
            [
                str(BIN / "score-server"),
                "serve",
                "--data-dir",
                str(work / "d"),
                "--port",
                str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    httpx.get(f"{url}/isAlive", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            views = {
                "first page, no filter": "/repository",
                "filtered (study + file type)": "/repository?study=ST03&file_type=BAM",
                "filtered + sorted by size desc": "/repository?access=open&file_type=VCF"
                "&sort=size&order=desc",
                "text search": "/repository?q=DO00012",
                "page 400": "/repository?page=400",
            }
            rows = []
            for name, path in views.items():
                server_ms, wall_ms = [], []
                for _ in range(args.runs):
                    t = time.perf_counter()
                    r = httpx.get(url + path, timeout=60)
                    wall_ms.append((time.perf_counter() - t) * 1000)
                    r.raise_for_status()
                    server_ms.append(float(r.headers["server-timing"].split("dur=")[1]))
                rows.append(
                    f"| {name} | {statistics.median(server_ms):.0f} ms | "
                    f"{statistics.median(wall_ms):.0f} ms |"
                )
            t = time.perf_counter()
            manifest = httpx.get(url + "/repository/manifest.tsv?study=ST03", timeout=120)
            manifest_ms = (time.perf_counter() - t) * 1000
            lines = manifest.text.count("\n") - 1
        finally:
            proc.terminate()
            proc.wait(10)
        table = "\n".join(
            [
                f"### portal, {args.files:,} published files, median of {args.runs} "
                f"({time.strftime('%Y-%m-%d %H:%M')})",
                f"SQLite; filled in {fill_s:.0f} s. Server time from Server-Timing (query + "
                "render); wall includes the loopback round trip. Target: < 300 ms.",
                "",
                "| view | server | wall |",
                "|---|---|---|",
                *rows,
                f"| manifest TSV of one study ({lines:,} rows) | — | {manifest_ms:.0f} ms |",
                "",
            ]
        )
        print(table)
        record(table)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
