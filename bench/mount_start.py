"""How long `score-client mount` takes to be ready on a big platform, beside the peer floor.

    .venv/bin/python bench/mount_start.py --data-dir DIR [--scopes score.READ ...]
                                          [--runs 1] [--baseline DIR] [--no-record]

DIR is a filled platform's data directory (bench/scale_million.py --work W leaves one in
W/data; its PostgreSQL must be running). A `score-server serve --workers 2` is started on it;
for each token (one per --scopes, made with `score-server token create`):

- the peer floor: `curl` of /listing beside `curl` of every /entities page the mount asks for
  (the first page of 2,000, then four ranges of ids side by side, each in pages of 10,000
  from the last id of the one before), all of it saved to disk;
- `score-client mount` in the foreground: seconds until the mount point is mounted and `ls`
  of its root answers ("ready"), then until `find` has walked every file (the count printed),
  and the mount process's peak RSS (VmHWM) by then.

--baseline DIR: also the `score-client mount` of another tree (DIR/src first on PYTHONPATH,
e.g. `git archive main | tar -x -C DIR`), run after this tree's for each token.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import BIN, Serve, add_record_flag, create_token, report  # noqa: E402
from bench.mount import vm_hwm  # noqa: E402

FIRST_PAGE, PAGE, AT_ONCE = 2_000, 10_000, 4  # as pyscore.client.api asks a server of ours
KEY_RANGES = ["", "4", "8", "c"]
FIELDS = "id,gnosId,fileName,projectCode,access"


def curl(url: str, token: str, out: Path) -> None:
    subprocess.run(
        ["curl", "-sf", "-o", str(out), "-H", f"Authorization: Bearer {token}", url], check=True
    )


def peer_floor(url: str, token: str, work: Path) -> tuple[float, float, float, int]:
    """Seconds for curl of /listing and of the entity pages side by side: (both, listing,
    pages), and the bytes fetched."""
    import json

    start = time.perf_counter()
    done: dict[str, float] = {}

    def listing() -> None:
        curl(f"{url}/listing", token, work / "listing.json")
        done["listing"] = time.perf_counter() - start

    def pages() -> None:
        first = work / "page-first.json"
        curl(f"{url}/entities?page=0&size={FIRST_PAGE}", token, first)
        if json.loads(first.read_bytes())["last"]:
            done["pages"] = time.perf_counter() - start
            return

        def walk(bounds: tuple[str, str | None]) -> None:
            begin, before = bounds
            for n in range(10**6):  # bounded: pages of a range
                out = work / f"page-{bounds[0]}-{n}.json"
                until = f"&before={before}" if before else ""
                curl(f"{url}/entities?from={begin}{until}&size={PAGE}&fields={FIELDS}", token, out)
                rows = json.loads(out.read_bytes())["content"]
                if len(rows) < PAGE:
                    return
                begin = rows[-1]["id"]

        with ThreadPoolExecutor(AT_ONCE) as pool:
            list(pool.map(walk, zip(KEY_RANGES, [*KEY_RANGES[1:], None])))
        done["pages"] = time.perf_counter() - start

    with ThreadPoolExecutor(2) as pool:
        for f in [pool.submit(listing), pool.submit(pages)]:
            f.result()
    took = time.perf_counter() - start
    size = sum(f.stat().st_size for f in work.glob("*.json"))
    for f in work.glob("*.json"):
        f.unlink()
    return took, done["listing"], done["pages"], size


@contextlib.contextmanager
def mounted(env: dict[str, str], point: Path, log: Path) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "score-client"), "mount", "--mount-point", str(point)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            subprocess.run(["fusermount3", "-u", "-z", str(point)], capture_output=True)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def mount_start(env: dict[str, str], work: Path) -> tuple[float, float, int, int, int]:
    """(seconds until ready, until `find` walked it, files found, peak RSS KiB when ready,
    and after `find`)."""
    point, log = work / "mnt", work / "mount.log"
    point.mkdir(exist_ok=True)
    peak = 0
    with mounted(env, point, log) as proc:
        start = time.perf_counter()
        while not os.path.ismount(point):
            peak = max(peak, vm_hwm(proc.pid))
            if proc.poll() is not None or time.perf_counter() - start > 1800:
                raise SystemExit(f"mount failed: {log.read_text()[-2000:]}")
            time.sleep(0.02)
        os.listdir(point)
        ready = time.perf_counter() - start
        at_ready = max(peak, vm_hwm(proc.pid))
        found = subprocess.run(
            ["find", str(point), "-type", "f"], capture_output=True, check=True
        ).stdout.count(b"\n")
        walked = time.perf_counter() - start
        peak = max(peak, vm_hwm(proc.pid))
    return ready, walked, found, at_ready, peak


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, required=True, help="a filled platform")
    ap.add_argument(
        "--scopes", nargs="+", default=["PROGRAMDATA-ST0.READ", "score.READ"], help="one token each"
    )
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--baseline", type=Path, help="another tree's client, measured beside")
    ap.add_argument("--label", default="", help="a sentence to start the table's text with")
    add_record_flag(ap)
    args = ap.parse_args()
    load = os.getloadavg()
    rows = []
    with (
        Serve(args.data_dir, workers=args.workers) as server,
        tempfile.TemporaryDirectory(prefix="mount-start-") as tmp,
    ):
        work = Path(tmp)
        env = {
            **os.environ,
            "METADATA_URL": server.url,
            "STORAGE_URL": server.url,
            "SCORE_CLIENT_CONF_DIR": str(work / "no-conf"),
        }
        clients = [("score-client mount", env)]
        if args.baseline:
            base = {**env, "PYTHONPATH": str(args.baseline.resolve() / "src")}
            clients.append(("score-client mount (baseline)", base))
        for scopes in args.scopes:
            token = create_token(args.data_dir, scopes)
            floors = [peer_floor(server.url, token, work) for _ in range(args.runs)]
            both = median([f[0] for f in floors])
            rows.append(
                f"| {scopes}: curl /listing + /entities pages, side by side (peer floor; "
                f"{floors[0][3] / 1e6:,.0f} MB) | {both:,.1f} s | listing "
                f"{median([f[1] for f in floors]):,.1f} s, pages "
                f"{median([f[2] for f in floors]):,.1f} s | — | — |"
            )
            print(rows[-1], flush=True)
            for name, client_env in clients:
                runs = [
                    mount_start({**client_env, "ACCESSTOKEN": token}, work)
                    for _ in range(args.runs)
                ]
                ready = median([r[0] for r in runs])
                rows.append(
                    f"| {scopes}: {name} | {ready:,.1f} s | find: "
                    f"{median([r[1] for r in runs]):,.1f} s | {runs[0][2]:,} files | "
                    f"{max(r[3] for r in runs) / 1024:,.0f} MiB ready, "
                    f"{max(r[4] for r in runs) / 1024:,.0f} MiB after find |"
                )
                print(rows[-1], flush=True)
    when = time.strftime("%Y-%m-%d %H:%M")
    table = "\n".join(
        [
            f"\n### mount start at scale, median of {args.runs} ({when}, load {load[0]:.1f})",
            f"{args.label} `bench/mount_start.py --data-dir {args.data_dir}`; server "
            f"`--workers {args.workers}`. Ready: mounted and `ls` of the root answered; find: "
            "until `find -type f` walked every file. RSS: the mount process's peak (VmHWM) "
            "once ready, and once `find` is done.",
            "",
            "| what | ready | more | files | peak RSS |",
            "|---|---:|---:|---:|---:|",
            *rows,
        ]
    )
    report(table, args)


if __name__ == "__main__":
    main()
