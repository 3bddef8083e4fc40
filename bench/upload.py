"""Upload benchmark: the same random file into the same kind of store (the embedded local
store of a score-server), side by side in one run:
`score-client upload --object-id ... --file ... --md5 ...` (multipart, default 64 MiB parts,
every part's MD5 checked against the store's, the whole file's MD5 checked before completing)
vs a plain `curl -T file <signed PUT URL>` of the same bytes as one part.

    .venv/bin/python bench/upload.py [--size-mib 2048] [--runs 3] [--baseline DIR] [--no-record]

An object uploads once, so every run of every tool submits a fresh analysis (outside the
timed region). curl needs a single-part upload, so it goes to a second platform initialised
with `--part-size` >= the file size; the initiate (POST /upload/{id}/uploads), finalize-part
and complete calls happen outside curl's timed region ("curl -T" row) and are also shown
timed together with it ("curl -T + API calls" row, in-process httpx); a last row adds an
`md5sum` of the file first, for a peer that checks at least the whole file's MD5. The ratio
is against "curl -T" alone (target >= 1.0x). Medians of interleaved runs (the order
alternates); each uploaded object is deleted from the store after its run, so the disk holds
at most one copy. --baseline DIR: also another tree's score-client (DIR/src first on
PYTHONPATH) against the same server, interleaved.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    BIN,
    Platform,
    add_record_flag,
    children_cpu,
    need_tools,
    report,
    run_timed,
    tree_cpu,
)
from tests.publish import MiB, random_file, song_payload  # noqa: E402

STUDY = "BENCH"  # the study Platform publishes into
SCORE, CURL, CURL_API = "score-client upload", "curl -T", "curl -T + API calls"
CHECKED = "md5sum, then curl -T + API calls"  # a peer that at least checks the file's MD5


def fresh_object(http: httpx.Client, payload: dict) -> str:
    """Submit a new analysis with this payload (once more: allowDuplicates); its object id."""
    r = http.post(f"/submit/{STUDY}", params={"allowDuplicates": "true"}, json=payload)
    if r.status_code != 200:
        raise SystemExit(f"submit failed: {r.status_code} {r.text}")
    analysis_id = r.json()["analysisId"]
    files = http.get(f"/studies/{STUDY}/analysis/{analysis_id}/files")
    files.raise_for_status()
    return files.json()[0]["objectId"]


def curl_upload(
    http: httpx.Client, object_id: str, path: Path, md5: str, work: Path
) -> tuple[float, float, int]:
    """Initiate a one-part upload, `curl -T` the part, finalize it, complete. Returns the
    seconds of curl alone, of everything, and curl's peak RSS (KiB)."""
    size = path.stat().st_size
    started = time.perf_counter()
    r = http.post(f"/upload/{object_id}/uploads", params={"fileSize": size, "md5": md5})
    r.raise_for_status()
    spec = r.json()
    if len(spec["parts"]) != 1:
        raise SystemExit(f"expected one part, the server planned {len(spec['parts'])}")
    part = spec["parts"][0]
    headers = work / "curl-headers.txt"
    seconds, peak = run_timed(
        ["curl", "-s", "-f", "-T", str(path), "-D", str(headers), "-o", "/dev/null", part["url"]]
    )
    match = re.search(r"^etag:\s*\"?([0-9a-fA-F]+)\"?", headers.read_text(), re.I | re.M)
    if not match:
        raise SystemExit(f"no ETag in the PUT response: {headers.read_text()}")
    etag = match[1]
    r = http.post(
        f"/upload/{object_id}/parts",
        params={
            "uploadId": spec["uploadId"],
            "partNumber": part["partNumber"],
            "md5": md5,
            "etag": etag,
        },
    )
    r.raise_for_status()
    r = http.post(f"/upload/{object_id}", params={"uploadId": spec["uploadId"]})
    r.raise_for_status()
    return seconds, time.perf_counter() - started, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=2048)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--parallel",
        type=int,
        default=None,
        help="score-client upload --parallel (default: its transport.parallel)",
    )
    ap.add_argument("--baseline", type=Path, default=None, help="another tree's client too")
    add_record_flag(ap)
    args = ap.parse_args()
    need_tools("curl", "md5sum")
    base_name = f"{SCORE} (baseline {args.baseline.name})" if args.baseline else None
    work = Path(tempfile.mkdtemp(prefix="bench-upload-", dir=os.environ.get("BENCH_DIR")))
    size = args.size_mib * MiB
    try:
        source = random_file(work / "big.bam", size)
        # reading the file for its MD5 also leaves it in the page cache for both tools
        payload = song_payload(STUDY, [source], donor="up")
        md5 = payload["files"][0]["fileMd5sum"]
        seed = random_file(work / "seed.bam", 4096, seed=5)  # Platform publishes something
        with (
            Platform(work / "multi", [seed]) as multi,
            Platform(work / "single", [seed], part_mib=args.size_mib) as single,
        ):
            from pyscore.server.platform import Platform as Server
            from pyscore.server.settings import Settings

            stores = {p: Server.open(Settings.load(p.data_dir)).store for p in (multi, single)}
            clients = {
                p: httpx.Client(
                    base_url=p.url,
                    timeout=600,
                    headers={"Authorization": f"Bearer {p.admin_token}"},
                )
                for p in (multi, single)
            }
            clients_ = [SCORE, *([base_name] if base_name else [])]
            times: dict[str, list[float]] = {k: [] for k in [*clients_, CURL, CURL_API, CHECKED]}
            md5sum_cpu: list[float] = []
            peaks: dict[str, list[int]] = {k: [] for k in [*clients_, CURL]}
            cpu: dict[str, list[tuple[float, float]]] = {k: [] for k in [*clients_, CURL]}
            extra = ["--parallel", str(args.parallel)] if args.parallel else []
            try:
                for run in range(args.runs):
                    order = [*clients_, CURL] if run % 2 == 0 else [CURL, *clients_[::-1]]
                    for name in order:
                        platform = single if name == CURL else multi
                        http = clients[platform]
                        object_id = fresh_object(http, payload)
                        if name == CURL:
                            before = children_cpu()
                            md5sum_seconds, _ = run_timed(["md5sum", str(source)])
                            md5sum_cpu.append(children_cpu() - before)
                        client0, server0 = children_cpu(), tree_cpu(platform.proc.pid)
                        if name != CURL:
                            env = platform.client_env(platform.admin_token)
                            if name == base_name and args.baseline:
                                env["PYTHONPATH"] = str(args.baseline.resolve() / "src")
                            seconds, peak = run_timed(
                                [
                                    str(BIN / "score-client"),
                                    "--quiet",
                                    "upload",
                                    "--object-id",
                                    object_id,
                                    "--file",
                                    str(source),
                                    "--md5",
                                    md5,
                                    *extra,
                                ],
                                env,
                            )
                            times[name].append(seconds)
                        else:
                            seconds, total, peak = curl_upload(http, object_id, source, md5, work)
                            times[CURL].append(seconds)
                            times[CURL_API].append(total)
                            times[CHECKED].append(md5sum_seconds + total)
                        peaks[name].append(peak)
                        cpu[name].append(
                            (children_cpu() - client0, tree_cpu(platform.proc.pid) - server0)
                        )
                        if http.get(f"/upload/{object_id}").json() is not True:
                            raise SystemExit(f"{name}: object {object_id} is not uploaded")
                        stored = stores[platform].stat(object_id)
                        if stored is None or stored.size != size:
                            raise SystemExit(f"{name}: the store holds {stored} for {object_id}")
                        stores[platform].delete(object_id)  # keep one copy on disk at most
            finally:
                for c in clients.values():
                    c.close()
        base = statistics.median(times[CURL])
        rows = []
        for name in (*clients_, CURL, CURL_API, CHECKED):
            med = statistics.median(times[name])
            tool = name if name in clients_ else CURL
            client = statistics.median(c for c, _ in cpu[tool])
            if name == CHECKED:
                client += statistics.median(md5sum_cpu)
            server = statistics.median(s for _, s in cpu[tool])
            rows.append(
                f"| {name} | {size / med / 1e6:,.0f} MB/s | {med:.2f} s | "
                f"{base / med:.2f}× | {client:.1f} s | {server:.1f} s | "
                f"{max(peaks[tool]) / 1024:.0f} MiB |"
            )
        table = "\n".join(
            [
                f"### upload, {args.size_mib} MiB file, median of {args.runs} "
                f"({time.strftime('%Y-%m-%d %H:%M')})",
                "Local store of score-server (one worker) on loopback; each run uploads a fresh "
                "object. score-client: 64 MiB parts in parallel, part MD5s checked against the "
                "store's, whole-file MD5 checked, then completed. curl: one PUT of the whole file "
                "as a single part to its signed URL (a platform with --part-size >= the file); the "
                "third row adds the initiate, finalize-part and complete API calls to curl's time; "
                "the fourth adds an `md5sum` of the file run first (a peer that checks at least "
                "the whole file's MD5, as score-client does besides every part's). "
                "Ratio = curl -T's time / the tool's time (target ≥ 1.0×). CPU columns: seconds "
                "of CPU used by the client and by the server's processes during the upload; with "
                "both on the same two cores, the wall time cannot beat their sum / 2. Load "
                f"average (1 min) {os.getloadavg()[0]:.1f} at the end, on 2 cores."
                + (f" Baseline: the tree {args.baseline}." if args.baseline else ""),
                "",
                "| tool | throughput | time | vs curl -T | client CPU | server CPU | peak RSS |",
                "|---|---|---|---|---|---|---|",
                *rows,
                "",
            ]
        )
        report(table, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
