"""The Python API beside fsspec's HTTPFileSystem and pysam on ready signed URLs, through the
same emulated link (tests/wanlink.py) at each round-trip time, in one run (issue 23's targets).

    .venv/bin/python bench/library.py [--rtt 0,100] [--runs 3] [--tsv-mib 100]
        [--only regions,...] [--loaded] [--no-record]

Work, each row beside its peer (the peer's signed URLs fetched before the timed region):
  read_csv   pandas.read_csv of a TSV: a score:// file vs HTTPFileSystem on its signed URL
  random     100 reads of 64 KiB at random offsets of that file: Client.open vs HTTPFileSystem
  sequential the whole file in 1 MiB reads through Client.open vs Client.download of it
  regions    one region of 16 BAMs, one after another: Client.alignments vs pysam on ready
             signed BAM + BAI URLs

Every run opens a new file system / Client (no cache carried over); medians of --runs
interleaved runs. The platform: one score-server (SQLite, local store) whose public URL is the
link's. The machine is noisy (2 shared cores): compare within one run.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import BIN, Serve, add_record_flag, report  # noqa: E402
from bench.wan import make_bam  # noqa: E402
from tests.publish import MiB, publish_many  # noqa: E402
from tests.wanlink import WanLink  # noqa: E402

REGION = "chr1:40001-60000"
BAMS = 16
LOADED = "import pysam, pyscore.client.api, pyscore.client.view.run"  # --loaded
WORK = ("read_csv", "random", "sequential", "regions")  # --only's names, as the rows' order


def tsv(path: Path, mib: int) -> Path:
    """A deterministic table of about `mib` MiB."""
    rng = random.Random(7)
    with open(path, "w") as f:
        f.write("donor\tsample\tposition\tdepth\tscore\tnote\n")
        while f.tell() < mib * MiB:
            rows = [
                f"D{rng.randrange(10**6)}\tS{i}\t{rng.randrange(10**9)}\t{rng.randrange(500)}\t"
                f"{rng.random():.6f}\tsomething-{rng.randrange(10**4)}\n"
                for i in range(10_000)
            ]
            f.write("".join(rows))
    return path


def median_of(runs: int, fns: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Median seconds of each function, interleaved (the order alternates run by run)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for n in range(runs):
        for name in names if n % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            took = fns[name]()  # a child process says its own time (without its start-up)
            spent = time.perf_counter() - start
            times[name].append(took if isinstance(took, float) else spent)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rtt", default="0,100", help="round-trip times in ms, comma-separated")
    ap.add_argument("--runs", type=int, default=3, help="runs per row (median)")
    ap.add_argument("--tsv-mib", type=int, default=100, help="size of the table")
    ap.add_argument(
        "--only",
        default=",".join(WORK),
        help=f"the rows to run, comma-separated, of {','.join(WORK)}",
    )
    ap.add_argument(
        "--loaded",
        action="store_true",
        help="regions: Client.alignments' child loads pysam and pyscore's modules before its "
        "clock starts, as the pysam peer's loads pysam (by default ours counts its imports)",
    )
    add_record_flag(ap)
    args = ap.parse_args()
    only = [w.strip() for w in args.only.split(",") if w.strip()]
    if not only or not set(only) <= set(WORK):
        ap.error(f"--only takes some of {','.join(WORK)}")

    import fsspec
    import pandas

    import pyscore

    work = Path(tempfile.mkdtemp(prefix="bench-library-", dir=os.environ.get("BENCH_DIR")))
    files = work / "files"
    files.mkdir()
    table = tsv(files / "table.tsv", args.tsv_mib)
    bam = make_bam(files / "bam", 3000)
    analyses: list[tuple[str, list[Path]]] = []
    for i in range(BAMS):
        folder = files / f"bam{i:02d}"
        folder.mkdir()
        os.link(bam, folder / f"s{i:02d}.bam")
        os.link(f"{bam}.bai", folder / f"s{i:02d}.bam.bai")
        analyses.append(("LIB", [folder / f"s{i:02d}.bam", folder / f"s{i:02d}.bam.bai"]))
    holder = Serve(work / "data")
    link = WanLink(holder.port, rtt_ms=0)
    out = subprocess.run(
        [str(BIN / "score-server"), "init", "--data-dir", str(work / "data"), "--public-url",
         link.url],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    token = out.stdout.strip().splitlines()[-1]
    # the table as a sequencingRead file (its schema takes no TSV; the label is all it changes)
    ((table_aid, (table_id,)),) = publish_many(work / "data", [("LIB", [table])], "open", "BAM")
    bams = [(ids[0], ids[1]) for _, ids in publish_many(work / "data", analyses)]
    opts = {"metadata_url": link.url, "storage_url": link.url, "token": token}
    os.environ["SCORE_CLIENT_CONF_DIR"] = str(work / "no-conf")
    rng = random.Random(11)
    size = table.stat().st_size
    offsets = [rng.randrange(size - 64 * 1024) for _ in range(100)]
    rows: list[str] = []
    with holder:
        for rtt in [float(r) for r in args.rtt.split(",")]:
            link.configure(rtt_ms=rtt)
            ready = pyscore.Client(**opts)
            url = ready.url(table_id)
            ready_bams = [(ready.url(b), ready.url(i)) for b, i in bams]
            ready.close()
            score_path = f"score://LIB/{table_aid}/table.tsv"

            def ours_csv(score_path: str = score_path) -> None:
                fs = fsspec.filesystem("score", skip_instance_cache=True, **opts)
                with fs.open(score_path) as f:
                    pandas.read_csv(f, sep="\t")
                fs.client.close()

            def http_csv(url: str = url) -> None:
                fs = fsspec.filesystem("http", skip_instance_cache=True)
                with fs.open(url) as f:
                    pandas.read_csv(f, sep="\t")

            def ours_random() -> None:
                with pyscore.Client(**opts) as c, c.open(table_id) as f:
                    for o in offsets:
                        f.seek(o)
                        f.read(64 * 1024)

            def http_random(url: str = url) -> None:
                fs = fsspec.filesystem("http", skip_instance_cache=True)
                with fs.open(url) as f:
                    for o in offsets:
                        f.seek(o)
                        f.read(64 * 1024)

            def ours_sequential() -> None:
                with pyscore.Client(**opts) as c, c.open(table_id) as f:
                    while f.read(MiB):
                        pass

            def ours_download() -> None:
                with tempfile.TemporaryDirectory(dir=work) as d, pyscore.Client(**opts) as c:
                    c.download(table_id, output_dir=d)

            def ours_regions() -> float:
                code = (
                    "import sys, time, pyscore\n"
                    f"{LOADED if args.loaded else ''}\n"
                    "start = time.perf_counter()\n"
                    "with pyscore.Client(metadata_url=sys.argv[1], storage_url=sys.argv[1], "
                    "token=sys.argv[2]) as c:\n"
                    "    for b in sys.argv[3:]:\n"
                    f"        sum(1 for _ in c.alignments(b, {REGION!r}))\n"
                    "print(time.perf_counter() - start)\n"
                )
                return child(code, link.url, token, *[b for b, _ in bams])

            def pysam_regions(ready_bams: list[tuple[str, str]] = ready_bams) -> float:
                code = (
                    "import sys, time, pysam\n"
                    "start = time.perf_counter()\n"
                    "for data, index in zip(sys.argv[1::2], sys.argv[2::2]):\n"
                    "    with pysam.AlignmentFile(data, index_filename=index) as f:\n"
                    f"        sum(1 for _ in f.fetch(region={REGION!r}))\n"
                    "print(time.perf_counter() - start)\n"
                )
                return child(code, *[u for pair in ready_bams for u in pair])

            def child(code: str, *argv: str) -> float:
                """Slicing in a process of its own (htslib holds the GIL while it reads,
                which would stall the link running in this one); its own time."""
                with tempfile.TemporaryDirectory(dir=work) as d:  # htslib's index copies
                    done = subprocess.run(
                        [sys.executable, "-c", code, *argv],
                        cwd=d,
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                return float(done.stdout.strip().splitlines()[-1])

            pairs = [
                ("read_csv", "score:// (Client)", ours_csv, "fsspec HTTPFileSystem", http_csv),
                ("random 64 KiB x100", "Client.open", ours_random, "HTTPFileSystem", http_random),
                ("sequential", "Client.open", ours_sequential, "Client.download", ours_download),
                ("regions x16", "Client.alignments", ours_regions, "pysam on URLs", pysam_regions),
            ]
            for key, (work_name, ours_name, ours, peer_name, peer) in zip(WORK, pairs):
                if key not in only:
                    continue
                t = median_of(args.runs, {"ours": ours, "peer": peer})
                rate = ""
                if work_name == "sequential":
                    rate = f" ({size / t['ours'] / 1e6:.0f} vs {size / t['peer'] / 1e6:.0f} MB/s)"
                rows.append(
                    f"| {rtt:.0f} | {work_name} | {ours_name} {t['ours']:.2f} s | {peer_name} "
                    f"{t['peer']:.2f} s | {t['ours'] / t['peer']:.2f}{rate} |"
                )
                print(rows[-1], flush=True)
    link.close()
    table_md = "\n".join(
        [
            "",
            f"## Python API vs fsspec HTTP and pysam ({time.strftime('%Y-%m-%d')}, "
            "bench/library.py)",
            "",
            f"`.venv/bin/python bench/library.py --rtt {args.rtt} --runs {args.runs} "
            f"--tsv-mib {args.tsv_mib} --only {','.join(only)}"
            f"{' --loaded' if args.loaded else ''}`; medians of {args.runs} "
            f"interleaved runs, a table of {size / 1e6:.0f} MB, {BAMS} BAMs (region {REGION}); "
            "ratio = ours / peer.",
            "",
            "| RTT ms | work | ours | peer | ratio |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )
    report(table_md, args)


if __name__ == "__main__":
    main()
