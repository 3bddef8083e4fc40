"""A million files through every path that lists or searches (issue 26 item 1).

    .venv/bin/python bench/scale.py --files 1000000 [--sqlite] [--runs 5] [--work DIR]

A generated platform (tests/scale_platform.py: files/2 analyses with two data files each, a
BAI beside every tumour BAM, 97% published, one big study and five small ones, 10 audit
records per file) written in bulk by the converters an import uses, then, against
`score-server serve --workers 2`, each path timed (medians) with the server's RSS (its
busiest worker process, and the idle RSS before): the portal's first page under each filter
(with its facet counts), manifest exports streamed (time to the first byte, all of it),
`/entities` pages by study and by analysis, `/listing` and `score-client mount` start-up with a
token for one study and for all, SONG's paginated analyses at a deep offset, `POST
/download/batch` of 1,000 ids, `score-server audit --since 1d --study BIG`, and the database's
size. The queries behind the slow paths are run again under EXPLAIN (ANALYZE, BUFFERS) (SQLite:
EXPLAIN QUERY PLAN) and their plans printed.

PostgreSQL by default (scripts/postgres.sh, in --work); --sqlite for SQLite. --work DIR keeps
the filled platform (and its PostgreSQL) for another run: a second run with the same DIR and
size skips the fill (after `score-server migrate`, so new indexes are measured).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import BIN, Serve, create_token, free_port, report  # noqa: E402
from tests.scale_platform import BIG, MOST_FILES, Shape, fill, ident  # noqa: E402

POSTGRES = ROOT / "scripts" / "postgres.sh"
SLOW_MS = 100.0  # a query slower than this under EXPLAIN ANALYZE has its plan printed


# -- the server's memory -------------------------------------------------------------------
def tree(pid: int) -> list[int]:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    return [pid, *(p for k in kids for p in tree(int(k)))]


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Sampler:
    """The RSS of the server's processes every 20 ms: the peak of its busiest process (a
    worker) within each window."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self.stopped = pid, 0, False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped:
            self.peak = max([self.peak, *(rss_kib(p) for p in tree(self.pid))])
            time.sleep(0.02)

    def now(self) -> int:
        return max(rss_kib(p) for p in tree(self.pid))

    @contextmanager
    def window(self) -> Iterator[dict]:
        self.peak = 0
        found: dict = {}
        yield found
        time.sleep(0.05)
        found["peak"] = self.peak

    def stop(self) -> None:
        self.stopped = True
        self.thread.join()


# -- the queries' plans --------------------------------------------------------------------
def explain_slow(db: Any, label: str, work: Callable[[Any], object]) -> list[str]:
    """Run `work(session)` in-process, catching its SQL, then each statement again under
    EXPLAIN ANALYZE: the plans of those slower than SLOW_MS."""
    from sqlalchemy import event

    caught: list[tuple[str, Any]] = []

    def catch(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            caught.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", catch)
    try:
        with db.session() as s:
            result = work(s)
            if hasattr(result, "__next__"):
                for _ in result:  # type: ignore[attr-defined]
                    pass
    finally:
        event.remove(db.engine, "before_cursor_execute", catch)
    out = []
    postgres = db.engine.dialect.name == "postgresql"
    with db.engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        for statement, parameters in caught:
            cur = raw.cursor()
            if postgres:
                cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
                plan = [r[0] for r in cur.fetchall()]
                took = float(plan[-1].split("Execution Time:")[1].split()[0])
                if took < SLOW_MS:
                    continue
                head = f"{label}: {took:.0f} ms"
            else:
                t = time.perf_counter()
                cur.execute(statement, parameters)
                cur.fetchall()
                took = (time.perf_counter() - t) * 1000
                if took < SLOW_MS:
                    continue
                cur.execute("EXPLAIN QUERY PLAN " + statement, parameters)
                plan = [str(r[-1]) for r in cur.fetchall()]
                head = f"{label}: {took:.0f} ms"
            out.append("\n".join([f"-- {head}", statement.strip(), *plan, ""]))
        conn.rollback()
    return out


# -- requests --------------------------------------------------------------------------------
@dataclass
class Timing:
    wall: list[float]
    server: list[float]
    peak: int = 0
    detail: str = ""


def measure(
    http: httpx.Client, sampler: Sampler, runs: int, method: str, path: str, **kw: Any
) -> Timing:
    t = Timing([], [])
    with sampler.window() as w:
        for _ in range(runs):
            start = time.perf_counter()
            r = http.request(method, path, **kw)
            t.wall.append((time.perf_counter() - start) * 1000)
            if r.status_code != 200:
                raise SystemExit(f"{method} {path}: {r.status_code} {r.text[:300]}")
            timing = r.headers.get("server-timing", "")
            if "dur=" in timing:
                t.server.append(float(timing.split("dur=")[1].split(",")[0]))
            t.detail = f"{len(r.content):,} bytes"
    t.peak = w["peak"]
    return t


def streamed(http: httpx.Client, sampler: Sampler, path: str) -> dict:
    """One streamed GET: first byte, whole body, rows, bytes, the server's peak RSS."""
    with sampler.window() as w:
        start = time.perf_counter()
        first, size, rows = None, 0, 0
        with http.stream("GET", path, timeout=600) as r:
            if r.status_code != 200:
                raise SystemExit(f"GET {path}: {r.status_code}")
            for chunk in r.iter_raw():
                if first is None:
                    first = time.perf_counter() - start
                size += len(chunk)
                rows += chunk.count(b"\n")
        total = time.perf_counter() - start
    return {"first": first or total, "total": total, "bytes": size, "rows": rows - 1, **w}


def mount_start(env: dict, work: Path, name: str) -> tuple[float, int, str]:
    """Seconds until `score-client mount` is mounted, its peak RSS, files it says it mounts."""
    point = work / f"mnt-{name}"
    point.mkdir(exist_ok=True)
    log = work / f"mount-{name}.log"
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [str(BIN / "score-client"), "mount", "--mount-point", str(point)],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        peak = 0
        try:
            while not os.path.ismount(point):
                peak = max(peak, rss_kib(proc.pid))
                if proc.poll() is not None or time.perf_counter() - start > 900:
                    raise SystemExit(f"mount failed: {log.read_text()[-2000:]}")
                time.sleep(0.02)
            took = time.perf_counter() - start
        finally:
            subprocess.run(["fusermount3", "-u", "-z", str(point)], capture_output=True)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    said = [line for line in log.read_text().splitlines() if line.startswith("Mounting")]
    return took, peak, said[0].split(" files")[0].split()[-1] if said else "?"


# -- the platform ----------------------------------------------------------------------------
def start_postgres(work: Path) -> str:
    """PostgreSQL in `work`, on the port of its first start (server.json names it)."""
    saved = work / "pg-port"
    if not saved.exists():
        saved.write_text(str(free_port()))
    said = work / "pg-start.txt"  # a file, not a pipe: the server it starts may hold a pipe
    with open(said, "w") as out:
        code = subprocess.run(
            ["bash", str(POSTGRES), "start", str(work / "pg"), saved.read_text().strip()],
            stdout=out,
            stderr=subprocess.STDOUT,
        ).returncode
    if code != 0:
        raise SystemExit(f"postgres.sh start failed: {said.read_text()}")
    return said.read_text().split("PYSCORE_TEST_POSTGRES=", 1)[1].split()[0]


def platform(args: argparse.Namespace, work: Path, shape: Shape) -> tuple[Path, str]:
    """The data directory, filled (or kept from an earlier run of the same size)."""
    import psycopg

    from pyscore.server.platform import Platform
    from pyscore.server.settings import Settings

    data = work / "data"
    mark = work / f"filled-{shape.analyses}-{shape.audit_records}"
    init = []
    if not args.sqlite:
        admin = start_postgres(work)
        url = admin.rsplit("/", 1)[0] + "/pyscore_scale"
        init = ["--database-url", url]
    if mark.exists():
        subprocess.run(
            [str(BIN / "score-server"), "migrate", "--data-dir", str(data)],
            check=True,
            capture_output=True,
        )
        return data, mark.read_text()
    shutil.rmtree(data, ignore_errors=True)
    if not args.sqlite:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS pyscore_scale")
            conn.execute("CREATE DATABASE pyscore_scale")
    subprocess.run(
        [str(BIN / "score-server"), "init", "--data-dir", str(data), *init],
        check=True,
        capture_output=True,
    )
    p = Platform.open(Settings.load(data))
    started = time.perf_counter()
    last = [0.0]

    def progress(what: str, done: int, total: int) -> None:
        if time.perf_counter() - last[0] > 30 or done == total:
            last[0] = time.perf_counter()
            print(f"  {what}: {done:,}/{total:,} ({last[0] - started:.0f} s)", flush=True)

    fill(p.db, shape, progress)
    took = f"{time.perf_counter() - started:.0f} s"
    mark.write_text(took)
    return data, took


def database_size(db: Any, data: Path) -> tuple[int, list[tuple[str, int]]]:
    from sqlalchemy import text

    with db.engine.connect() as conn:
        if db.engine.dialect.name == "postgresql":
            total = conn.scalar(text("SELECT pg_database_size(current_database())"))
            tables = conn.execute(
                text(
                    "SELECT relname, pg_total_relation_size(c.oid) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 2 DESC LIMIT 8"
                )
            ).all()
            return int(total), [(str(a), int(b)) for a, b in tables]
    files = [f for f in data.iterdir() if ".db" in f.name or ".sqlite" in f.name]
    return sum(f.stat().st_size for f in files), []


def ms(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ms" if values else "—"


def mib(kib: int) -> str:
    return f"{kib / 1024:,.0f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=1_000_000, help="data files (2 per analysis)")
    ap.add_argument("--audit-records", type=int, help="default: 10 per file")
    ap.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", type=Path, help="keep the platform here (reused when filled)")
    ap.add_argument("--no-mount", action="store_true", help="skip score-client mount")
    ap.add_argument("--label", default="", help="a sentence to start the table's text with")
    ap.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    shape = Shape(
        args.files // 2, args.audit_records if args.audit_records is not None else 10 * args.files
    )
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-million-"))
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)  # PostgreSQL runs as user postgres and must reach its data dir
    try:
        run(args, work, shape)
    finally:
        if not args.sqlite:
            subprocess.run(["bash", str(POSTGRES), "stop", str(work / "pg")], capture_output=True)
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path, shape: Shape) -> None:
    from pyscore.server import audit, objects, repository
    from pyscore.server.metadata import list_analyses, list_entities
    from pyscore.server.platform import Platform
    from pyscore.server.settings import Settings

    load0 = os.getloadavg()[0]
    print(f"filling {shape.files:,} files, {shape.audit_records:,} audit records ...", flush=True)
    data, fill_time = platform(args, work, shape)
    p = Platform.open(Settings.load(data))
    size, tables = database_size(p.db, data)
    one, every = create_token(data, "PROGRAMDATA-ST0.READ"), create_token(data, "score.READ")
    rng = random.Random(26)
    donor = ident("donor", rng.randrange(shape.big_samples))
    deep = min(400_000, int(shape.big_analyses() * 0.9))  # of the ~97% published
    big_files = 2 * shape.big_analyses()
    rows: list[str] = []
    plans: list[str] = []
    with Serve(data, workers=args.workers) as server:
        assert server.proc is not None
        sampler = Sampler(server.proc.pid)
        http = httpx.Client(base_url=server.url, timeout=900)
        http.get("/repository")  # warm: imports, templates, connections
        idle = sampler.now()
        portal = {
            "no filter": "",
            "study=BIG": "study=BIG",
            "study=ST0": "study=ST0",
            "data_type": "data_type=Aligned+Reads",
            "file_type": "file_type=VCF",
            "access=open": "access=open",
            "analysis_type": "analysis_type=variantCall",
            "donor": f"donor={donor}",
            "text search": "q=DO0012345",
            "access=open, sorted by size desc": "access=open&sort=size&order=desc",
            "page 400": "page=400",
        }
        for name, query in portal.items():
            t = measure(http, sampler, args.runs, "GET", f"/repository?{query}")
            rows.append(
                f"| portal first page, {name} | {ms(t.server)} | {ms(t.wall)} | {mib(t.peak)} |"
            )
            print(rows[-1], flush=True)
        for name, query in (("CRAM files", "file_type=CRAM"), ("every file", "")):
            m = streamed(http, sampler, f"/repository/manifest.tsv?{query}")
            rows.append(
                f"| manifest TSV, {name} ({m['rows']:,} rows, {m['bytes'] / 1e6:,.0f} MB) | "
                f"first byte {m['first'] * 1000:,.0f} ms | {m['total']:,.1f} s | {mib(m['peak'])} |"
            )
            print(rows[-1], flush=True)
        analysis_id = ident("analysis", 12345 % shape.analyses)
        paths = {
            "/entities by study, first page (2,000)": f"/entities?projectCode={BIG}&size=2000",
            f"/entities by study, page {big_files * 4 // 5 // 2000:,} (2,000)": (
                f"/entities?projectCode={BIG}&size=2000&page={big_files * 4 // 5 // 2000}"
            ),
            "/entities by analysis": f"/entities?gnosId={analysis_id}",
            "SONG paginated, first page (100)": f"/studies/{BIG}/analysis/paginated?limit=100",
            f"SONG paginated, offset {deep:,} (100)": (
                f"/studies/{BIG}/analysis/paginated?limit=100&offset={deep}"
            ),
            "SONG unpublished+suppressed of BIG (the mount asks)": (
                f"/studies/{BIG}/analysis?analysisStates=UNPUBLISHED,SUPPRESSED"
            ),
        }
        for name, path in paths.items():
            t = measure(http, sampler, args.runs, "GET", path)
            rows.append(f"| {name} ({t.detail}) | — | {ms(t.wall)} | {mib(t.peak)} |")
            print(rows[-1], flush=True)
        for who, token in (("one small study", one), ("every study", every)):
            t = measure(
                http,
                sampler,
                max(1, args.runs // 2),
                "GET",
                "/listing",
                headers={"Authorization": f"Bearer {token}"},
            )
            rows.append(
                f"| /listing, token for {who} ({t.detail}) | — | {ms(t.wall)} | {mib(t.peak)} |"
            )
            print(rows[-1], flush=True)
        ids = [ident("object", MOST_FILES * rng.randrange(shape.analyses)) for _ in range(1000)]
        body = {"objects": [{"objectId": i} for i in dict.fromkeys(ids)]}
        t = measure(
            http,
            sampler,
            args.runs,
            "POST",
            "/download/batch",
            json=body,
            headers={"Authorization": f"Bearer {every}"},
        )
        n = len(body["objects"])
        rows.append(f"| POST /download/batch, {n:,} ids | — | {ms(t.wall)} | {mib(t.peak)} |")
        print(rows[-1], flush=True)
        out = work / "audit.tsv"
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            with open(out, "wb") as f:
                subprocess.run(
                    [
                        str(BIN / "score-server"),
                        "audit",
                        "--data-dir",
                        str(data),
                        "--since",
                        "1d",
                        "--study",
                        BIG,
                    ],
                    stdout=f,
                    check=True,
                )
            times.append((time.perf_counter() - start) * 1000)
        lines = len(out.read_bytes().splitlines()) - 1
        rows.append(
            f"| score-server audit --since 1d --study {BIG} ({lines:,} of "
            f"{shape.audit_records:,} records; the command, start-up included) | — | "
            f"{ms(times)} | — |"
        )
        print(rows[-1], flush=True)
        if not args.no_mount:
            base = {
                "METADATA_URL": server.url,
                "STORAGE_URL": server.url,
                "SCORE_CLIENT_CONF_DIR": str(work / "no-conf"),
            }
            for who, token in (("one small study", one), ("every study", every)):
                with sampler.window() as w:
                    took, peak, files = mount_start({**base, "ACCESSTOKEN": token}, work, who[:3])
                rows.append(
                    f"| score-client mount ready, token for {who} ({files} files; the "
                    f"mount's own peak RSS {mib(peak)}) | — | {took * 1000:,.0f} ms | "
                    f"{mib(w['peak'])} |"
                )
                print(rows[-1], flush=True)
        sampler.stop()
    checks: dict[str, Callable[[Any], object]] = {
        "portal totals, no filter": lambda s: repository.totals(s, repository.Filters()),
        "portal facets, no filter": lambda s: repository.facet_counts(s, repository.Filters()),
        "portal facets, study=BIG": lambda s: repository.facet_counts(
            s, repository.Filters({"study": [BIG]})
        ),
        "portal facets, donor": lambda s: repository.facet_counts(
            s, repository.Filters({"donor": [donor]})
        ),
        "portal text search": lambda s: repository.facet_counts(
            s, repository.Filters(q="DO0012345").resolve(s)
        ),
        "entities deep page": lambda s: list_entities(
            s, {"projectCode": BIG}, [], big_files * 4 // 5 // 2000, 2000
        ),
        "SONG deep page": lambda s: list_analyses(s, BIG, ["PUBLISHED"], 100, deep),
        "listing, every study": lambda s: objects.listing_batches(s, None),
        "audit --since 1d --study BIG": lambda s: audit.query(
            s, since=audit.parse_time("1d"), study=BIG
        ),
    }
    for label, work_fn in checks.items():
        plans += explain_slow(p.db, label, work_fn)
    load1 = os.getloadavg()[0]
    backend = "SQLite" if args.sqlite else "PostgreSQL 15"
    stamp = time.strftime("%Y-%m-%d %H:%M")
    table = "\n".join(
        [
            f"### scale: {shape.data_files:,} data files ({shape.files:,} files), "
            f"{shape.analyses:,} analyses, {shape.audit_records:,} audit records, {backend}, "
            f"--workers {args.workers}, median of {args.runs} ({stamp})",
            f"{args.label}Filled in {fill_time} (bulk: tests/scale_platform.py); database "
            f"{size / 2**30:,.2f} GiB"
            + (
                " (" + ", ".join(f"{n} {b / 2**30:,.2f}" for n, b in tables[:5]) + ")"
                if tables
                else ""
            )
            + f". Load average {load0:.1f} at the start, {load1:.1f} at the end (2 cores, "
            f"shared). Server RSS: the busiest server process's peak during the row; idle "
            f"{mib(idle)}. Server time from Server-Timing where the route sends it.",
            "",
            "| path | server | wall | server RSS |",
            "|---|---|---|---|",
            *rows,
            "",
        ]
    )
    print("\n".join(plans) if plans else f"(no query slower than {SLOW_MS:.0f} ms)")
    report(table, args)
    (work / "plans.txt").write_text("\n".join(plans))


if __name__ == "__main__":
    main()
