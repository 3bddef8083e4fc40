"""Region slicing benchmark: one 1 Mb region of a >= 1 GiB coordinate-sorted, indexed BAM on
a score-server, side by side in one run:
`score-client view --object-id ID --query chr:s-e` vs
`samtools view -X <signed BAM URL> <signed BAI URL> chr:s-e`,
both through a byte-counting proxy in front of the server (bytes moved are counted where the
server sends them).

    .venv/bin/python bench/view.py [--size-gib 1] [--runs 5] [--cache DIR] [--no-record]

The BAM is generated once and cached under --cache (default /tmp/pyscore-bench-cache): SAM
text from Python (100 bp reads from a random ~100 Mb reference in 4 contigs, random
qualities; the read count is scaled from a small pilot so the BAM reaches --size-gib), piped
through `samtools view -u | samtools sort -@2 -m 512M`, then `samtools index`. Signed URLs
for samtools come from `score-client url` (outside its timed region; score-client view asks
for its own inside). Each command runs in a fresh empty directory (htslib caches remote
indexes in the current directory). Both outputs must hold the same number of records.
Targets: time <= 1.1x samtools; bytes moved < 1% of the file. A third row times what a
researcher holding only object ids runs: two `score-client url` calls, then samtools.

Note: with the default reference (100 Mb) a 1 Mb region holds ~1% of all reads, so the
region's own compressed records are ~1% of the file; the table shows that floor ("region's
share") beside the bytes each tool moved.
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    BIN,
    Platform,
    add_record_flag,
    need_tools,
    report,
    run_timed,
    score_client,
)
from tests.faultproxy import FaultProxy, Stats  # noqa: E402

GiB = 1024**3
URLS_THEN_SAMTOOLS = "score-client url ×2, then samtools"
READ_LENGTH = 100
CONTIGS = 4


def write_sam(out, reference: bytes, contig_len: int, reads: int, seed: int) -> None:
    """Sorted SAM records, `reads` in all, spread evenly over the contigs."""
    rng = random.Random(seed)
    # 8 MiB of random qualities ('#'..'J'); each read takes 100 of them from a random offset
    quals = rng.randbytes(1 << 23).translate(bytes(35 + b % 40 for b in range(256)))
    span = contig_len - READ_LENGTH
    per_contig = reads // CONTIGS
    mean_gap = span / max(per_contig, 1)
    n = 0
    for c in range(CONTIGS):
        name = b"chr%d" % (c + 1)
        base = c * contig_len
        pos = 0.0
        lines = []
        for _ in range(per_contig):
            pos += rng.random() * 2 * mean_gap
            p = min(int(pos), span - 1)
            q = rng.randrange(len(quals) - READ_LENGTH)
            lines.append(
                b"r%d\t%d\t%s\t%d\t60\t100M\t*\t0\t0\t%s\t%s\n"
                % (
                    n,
                    16 if n & 1 else 0,
                    name,
                    p + 1,
                    reference[base + p : base + p + READ_LENGTH],
                    quals[q : q + READ_LENGTH],
                )
            )
            n += 1
            if len(lines) == 20000:
                out.write(b"".join(lines))
                lines = []
        out.write(b"".join(lines))


def header(contig_len: int) -> bytes:
    return b"@HD\tVN:1.6\tSO:unsorted\n" + b"".join(
        b"@SQ\tSN:chr%d\tLN:%d\n" % (c + 1, contig_len) for c in range(CONTIGS)
    )


def pilot_bytes(path: Path, reference: bytes, contig_len: int, reads: int, seed: int) -> int:
    """Size of a BAM of `reads` generated reads on contigs of `contig_len`."""
    pilot = path.with_suffix(".pilot.tmp.bam")
    try:
        with subprocess.Popen(
            ["samtools", "view", "-b", "-@2", "-o", str(pilot), "-"], stdin=subprocess.PIPE
        ) as view:
            view.stdin.write(header(contig_len))
            write_sam(view.stdin, reference, contig_len, reads, seed)
            view.stdin.close()
        return pilot.stat().st_size
    finally:
        pilot.unlink(missing_ok=True)


def make_bam(path: Path, size: int, reference_mb: int, seed: int = 11) -> None:
    """Generate a coordinate-sorted BAM of at least `size` bytes, and its .bai."""
    rng = random.Random(seed)
    contig_len = reference_mb * 1_000_000 // CONTIGS
    reference = rng.randbytes(contig_len * CONTIGS).translate(
        bytes(b"ACGT"[b & 3] for b in range(256))
    )
    # Bytes per read depend on coverage (overlapping reads share sequence), so estimate it
    # twice: sparse first, then at the estimated coverage on a proportionally short reference.
    pilot_reads = 200_000
    reads = pilot_reads
    per_read = 0.0
    for _ in range(2):
        pilot_len = max(READ_LENGTH * 10, int(contig_len * pilot_reads / reads))
        per_read = pilot_bytes(path, reference, pilot_len, pilot_reads, seed) / pilot_reads
        reads = int(size * 1.02 / per_read) // CONTIGS * CONTIGS
    print(
        f"generating {path.name}: {reads:,} reads of {READ_LENGTH} bp on {reference_mb} Mb "
        f"(~{per_read:.0f} B/read)",
        file=sys.stderr,
    )
    tmp = path.with_suffix(".tmp.bam")
    started = time.perf_counter()
    view = subprocess.Popen(
        ["samtools", "view", "-u", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    sort = subprocess.Popen(
        [
            "samtools",
            "sort",
            "-@2",
            "-m",
            "512M",
            "-T",
            str(path.with_suffix(".sorting")),
            "-o",
            str(tmp),
            "-",
        ],
        stdin=view.stdout,
    )
    view.stdout.close()
    try:
        view.stdin.write(header(contig_len))
        write_sam(view.stdin, reference, contig_len, reads, seed)
        view.stdin.close()
        if view.wait() != 0 or sort.wait() != 0:
            raise SystemExit("samtools view | samtools sort failed")
        subprocess.run(["samtools", "index", "-@2", str(tmp), str(tmp) + ".bai"], check=True)
        os.replace(str(tmp) + ".bai", str(path) + ".bai")
        os.replace(tmp, path)
    finally:
        for p in (view, sort):
            if p.poll() is None:
                p.kill()
                p.wait()
        for leftover in path.parent.glob(path.with_suffix("").name + ".*tmp*"):
            leftover.unlink()
        for leftover in path.parent.glob(path.with_suffix("").name + ".sorting*"):
            leftover.unlink()
    print(
        f"generated {path} ({path.stat().st_size / GiB:.2f} GiB) in "
        f"{time.perf_counter() - started:.0f} s",
        file=sys.stderr,
    )


def cached_bam(cache: Path, size_gib: float, reference_mb: int) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"bench-{size_gib:g}gib-{reference_mb}mb.bam"
    if not (path.exists() and Path(str(path) + ".bai").exists()):
        make_bam(path, int(size_gib * GiB), reference_mb)
    return path


def records(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if not line.startswith(b"@"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-gib", type=float, default=1.0)
    ap.add_argument("--reference-mb", type=int, default=100)
    ap.add_argument("--region-kb", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/pyscore-bench-cache"))
    ap.add_argument(
        "--baseline", type=Path, default=None, help="another tree's score-client view too"
    )
    add_record_flag(ap)
    args = ap.parse_args()
    need_tools("samtools")
    bam = cached_bam(args.cache, args.size_gib, args.reference_mb)
    bai = Path(str(bam) + ".bai")
    size = bam.stat().st_size
    contig_len = args.reference_mb * 1_000_000 // CONTIGS
    start = contig_len // 2
    region = f"chr2:{start + 1}-{start + args.region_kb * 1000}"
    work = Path(tempfile.mkdtemp(prefix="bench-view-", dir=os.environ.get("BENCH_DIR")))
    proxy = None
    try:
        # the platform gets links, not copies, of the cached files' names
        files = work / "files"
        files.mkdir()
        (files / "big.bam").symlink_to(bam)
        (files / "big.bam.bai").symlink_to(bai)
        with Platform(
            work / "data", [files / "big.bam", files / "big.bam.bai"], access="open"
        ) as platform:
            bam_id, bai_id = platform.object_ids
            proxy = FaultProxy(platform.port)
            env = {
                "METADATA_URL": proxy.url,
                "STORAGE_URL": proxy.url,
                "ACCESSTOKEN": "",
                "SCORE_CLIENT_CONF_DIR": str(work / "no-conf"),
            }
            stats = subprocess.run(
                ["samtools", "idxstats", str(bam)], capture_output=True, text=True, check=True
            ).stdout.splitlines()
            total = sum(int(c[2]) + int(c[3]) for c in (line.split("\t") for line in stats))
            expected = int(
                subprocess.run(
                    ["samtools", "view", "-c", str(bam), region],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )
            client = BIN / "score-client"
            tools = {
                "score-client view": lambda: [
                    str(BIN / "score-client"),
                    "--quiet",
                    "view",
                    "--object-id",
                    bam_id,
                    "--query",
                    region,
                ],
                "samtools view -X": lambda: [
                    "samtools",
                    "view",
                    "-X",
                    score_client(env, "url", "--object-id", bam_id),
                    score_client(env, "url", "--object-id", bai_id),
                    region,
                ],
                # what a researcher with only object ids runs: the URLs, then samtools
                URLS_THEN_SAMTOOLS: lambda: [
                    "sh",
                    "-c",
                    f'samtools view -X "$({client} url --object-id {bam_id})" '
                    f'"$({client} url --object-id {bai_id})" {region}',
                ],
            }
            envs = {name: env for name in tools}
            if args.baseline:
                old = f"score-client view (baseline {args.baseline.name})"
                tools[old] = tools["score-client view"]
                envs[old] = {**env, "PYTHONPATH": str(args.baseline.resolve() / "src")}
            times: dict[str, list[float]] = {t: [] for t in tools}
            moved: dict[str, list[int]] = {t: [] for t in tools}
            counts: dict[str, set[int]] = {t: set() for t in tools}
            for run in range(args.runs):
                names = list(tools) if run % 2 == 0 else list(reversed(tools))
                for name in names:
                    cmd = tools[name]()
                    cwd = Path(tempfile.mkdtemp(dir=work))
                    proxy.stats = Stats()
                    seconds, _ = run_timed(cmd, envs[name], cwd=cwd, stdout=cwd / "out.sam")
                    moved[name].append(proxy.stats.data_bytes)
                    times[name].append(seconds)
                    counts[name].add(records(cwd / "out.sam"))
                    shutil.rmtree(cwd)
        for name, seen in counts.items():
            if seen != {expected}:
                raise SystemExit(
                    f"{name} returned {sorted(seen)} records; samtools on the "
                    f"local file finds {expected}"
                )
        base = statistics.median(times["samtools view -X"])
        rows = []
        for name in tools:
            med = statistics.median(times[name])
            b = statistics.median(moved[name])
            rows.append(
                f"| {name} | {med:.2f} s | {med / base:.2f}× | {b / 1e6:,.1f} MB | "
                f"{100 * b / size:.2f}% |"
            )
        table = "\n".join(
            [
                f"### view, {region} ({args.region_kb:,} kb) of a {size / GiB:.2f} GiB BAM, "
                f"median of {args.runs} ({time.strftime('%Y-%m-%d %H:%M')})",
                f"Generated BAM: {total:,} reads of {READ_LENGTH} bp on a {args.reference_mb} Mb "
                f"random reference in {CONTIGS} contigs; the region holds {expected:,} records "
                f"(both tools returned exactly that), its share of the reads is "
                f"{100 * expected / total:.2f}%. Bytes = object bytes (BAM + BAI) the server sent "
                "through a counting proxy, including what htslib's first open-ended GET pushed "
                "before it hung up. Time ratio = the tool's time / samtools' (target ≤ 1.1×); "
                "bytes target < 1% of the file. score-client's time includes its API calls and "
                "Python start-up; samtools' signed URLs were fetched beforehand, except in the "
                "row `score-client url ×2, then samtools`, which times getting them too (as a "
                "researcher holding object ids must). Load average (1 min) "
                f"{os.getloadavg()[0]:.1f} at the end, on 2 cores.",
                "",
                "| tool | time | vs samtools | bytes moved | of the file |",
                "|---|---|---|---|---|",
                *rows,
                "",
            ]
        )
        report(table, args)
    finally:
        if proxy is not None:
            proxy.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
