"""Over a long link: score-client beside a peer tool for the same work, both through the same
emulated long-distance link (tests/wanlink.py: a loopback proxy that holds every chunk RTT/2
each way, costs one RTT per new connection, bounds each connection to a window in flight and
all of them to a shared rate cap), at several round-trip times, in one run.

    .venv/bin/python bench/wan.py [--rtt 0,25,100] [--runs 3] [--work small120,...]
                                  [--quick] [--baseline DIR] [--no-record]

--baseline DIR: another tree's code (e.g. `git archive main | tar -x -C DIR`) as a third row
of the many-small-files and upload work: its score-client against its score-server (same data
directory, behind a second link of the same RTT), interleaved with ours and the peer's, so a
before/after is measured in one run under the same load.

Work (each row beside its peer, at each RTT):
  small120   score-client download --manifest of 60 analyses (a 256 KiB BAM + its 2 KiB
             .bai: 120 files) vs aria2c -j16 -i <ready signed URLs>
  small1000  the same with 500 analyses of 64 KiB + 2 KiB (1,000 files)
  big        one 1 GiB file: score-client download vs aria2c -x8 -s8 on its signed URL
  view       one region of 16 BAMs: score-client view --manifest vs `samtools view -X` x8 in
             parallel on ready signed BAM + BAI URLs (each in its own scratch directory)
  upload     40 files of 256 KiB: score-client upload --manifest vs `curl -T` x8 in parallel
             on ready part URLs (initiate before, finalize + complete after: untimed)
  mount      sequential `dd bs=1M` of a 256 MiB file through a fresh score-client mount vs
             score-client download of the same object

The platform is one score-server (one worker, SQLite, local store) whose public URL is the
link's, so API calls, signed URLs and data all cross the link; its files are controlled and
every tool uses the admin token. Peers get their signed URLs from the storage API beforehand
(GET /download/{id}?offset=0&length=-1&external=true, outside the timed region). Medians of
--runs interleaved runs (the order alternates); peak RSS is the largest process's VmHWM.
Link counters are those of score-client's median run: requests, connections, and the most
requests in flight at once. Data is generated deterministically in a temporary directory
(BENCH_DIR, else /tmp). The machine is noisy (2 shared cores): compare within one run.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    BIN,
    RESULTS,
    Serve,
    add_record_flag,
    need_tools,
    run_timed,
    stop,
)
from bench.mount import unmount, vm_hwm  # noqa: E402
from tests.publish import (  # noqa: E402
    FILE_TYPES,
    MiB,
    file_md5,
    publish_many,
    random_file,
    song_payload,
)
from tests.wanlink import LinkStats, RequestRecord, WanLink, peak_overlap  # noqa: E402

KiB = 1024
STUDY, OTHER_STUDY = "WAN", "WAN2"
REGION = "chr1:40001-60000"
WORK = ("small120", "small1000", "big", "view", "upload", "mount")
SECTION = "## Over a long link (bench/wan.py)"


@dataclass
class Sizes:
    small120: tuple[int, int] = (60, 256 * KiB)  # analyses, data file size (+ a 2 KiB index)
    small1000: tuple[int, int] = (500, 64 * KiB)
    big: int = 1024 * MiB
    bams: int = 16
    reads_per_contig: int = 20_000
    uploads: tuple[int, int] = (40, 256 * KiB)
    mount: int = 256 * MiB


QUICK = Sizes(
    small120=(10, 256 * KiB),
    small1000=(50, 64 * KiB),
    big=32 * MiB,
    bams=4,
    reads_per_contig=2_000,
    uploads=(8, 256 * KiB),
    mount=16 * MiB,
)


# -- data ---------------------------------------------------------------------------------
def small_file(path: Path, size: int, stamp: int, block: bytes) -> Path:
    """Reproducible bytes, unique per stamp."""
    path.write_bytes((stamp.to_bytes(8, "little") + block)[:size])
    return path


def make_bam(folder: Path, reads_per_contig: int) -> Path:
    """One coordinate-sorted, indexed demo BAM (pysam, seeded)."""
    from pyscore.server.demo import data as demo

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(17)
    fasta = demo.reference(folder, rng)
    return demo.alignments(folder, "wan", fasta, rng, reads_per_contig)


def publish_all(data_dir: Path, analyses: list[tuple[str, str, list[Path]]]) -> list[dict]:
    """Publish each (group, study, files) as one controlled analysis, in-process (one open
    of the platform); manifest rows (ARGO columns, plus group and path) for every file."""
    published = publish_many(data_dir, [(study, files) for _, study, files in analyses])
    rows = []
    for (group, study, files), (analysis_id, ids) in zip(analyses, published):
        for f, object_id in zip(files, ids):
            rows.append(
                {
                    "repository_code": "pyscore",
                    "analysis_id": analysis_id,
                    "object_id": object_id,
                    "file_type": FILE_TYPES[f.name.rsplit(".", 1)[-1]],
                    "file_name": f.name,
                    "file_size": f.stat().st_size,
                    "md5sum": file_md5(f),
                    "index_object_id": "",
                    "donor_id": f"{study}-D1",
                    "sample_id(s)": f"{study}-D1-S",
                    "program_id": study,
                    "group": group,
                    "path": f,
                }
            )
    return rows


def manifest(path: Path, rows: list[dict]) -> Path:
    """An ARGO file manifest: one row per data file, its index by index_object_id."""
    from pyscore.wire.manifest import format_argo

    by_analysis: dict[str, list[dict]] = {}
    for r in rows:
        by_analysis.setdefault(r["analysis_id"], []).append(r)
    lines = []
    for r in rows:
        if r["file_name"].endswith(".bai"):
            continue
        index = [i for i in by_analysis[r["analysis_id"]] if i["file_name"].endswith(".bai")]
        lines.append({**r, "index_object_id": index[0]["object_id"] if index else ""})
    path.write_text(format_argo(lines))
    return path


# -- measuring ------------------------------------------------------------------------------
@dataclass
class Measure:
    seconds: list[float] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)
    stats: list[LinkStats] = field(default_factory=list)
    notes: set[str] = field(default_factory=set)

    def add(self, seconds: float, peak: int, stats: LinkStats) -> None:
        self.seconds.append(seconds)
        self.peaks.append(peak)
        self.stats.append(stats)

    def median_stats(self) -> LinkStats:
        order = sorted(range(len(self.seconds)), key=self.seconds.__getitem__)
        return self.stats[order[(len(order) - 1) // 2]]


def run_parallel(
    commands: list[list[str]], parallel: int, cwds: list[Path], env: dict | None = None
) -> tuple[float, int]:
    """Run commands `parallel` at a time (each must succeed); wall seconds and the largest
    peak RSS (KiB) of any of them (VmHWM, sampled every 20 ms)."""
    pending = list(zip(commands, cwds))
    running: list[subprocess.Popen] = []
    peak = 0
    full_env = {**os.environ, **(env or {})}
    started = time.perf_counter()
    deadline = time.monotonic() + 3600
    try:
        while pending or running:
            if time.monotonic() > deadline:
                raise SystemExit("parallel commands took over an hour")
            while pending and len(running) < parallel:
                cmd, cwd = pending.pop(0)
                running.append(
                    subprocess.Popen(
                        cmd,
                        cwd=cwd,
                        env=full_env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                    )
                )
            for proc in list(running):
                peak = max(peak, vm_hwm(proc.pid))
                if proc.poll() is not None:
                    running.remove(proc)
                    if proc.returncode != 0:
                        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                        raise SystemExit(f"{proc.args[:2]} failed ({proc.returncode}): {err}")
                    if proc.stderr:
                        proc.stderr.close()
            time.sleep(0.02)
        return time.perf_counter() - started, peak
    finally:
        for proc in running:
            stop(proc)


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def sam_records(folder: Path) -> int:
    n = 0
    for path in sorted(folder.rglob("*.sam")):
        with open(path, "rb") as f:
            n += sum(1 for line in f if not line.startswith(b"@"))
    return n


def kind_of(r: RequestRecord) -> str:
    """A request's kind: 'data GET', 'GET entities', 'entities?gnosId', 'POST upload/…/parts'."""
    path = r.path.split("?", 1)[0]
    if path in ("/download/ping", "/store/objects/heliograph"):
        return "ping" if path.startswith("/download") else "ping data GET"
    if path.startswith("/store/"):
        return f"data {r.method}"
    if path.startswith("/entities") and "gnosId" in r.path:
        return "entities?gnosId"
    parts = path.strip("/").split("/")
    key = parts[0]
    if key == "upload" and len(parts) > 2:
        key = f"upload/…/{parts[2]}"
    return f"{r.method} {key}"


def phases(stats: LinkStats) -> str:
    """Per kind of request, in order of first use: how many, when the first was sent and the
    last answered (seconds from the first request), and how many were in flight at once."""
    if not stats.log:
        return "no requests"
    t0 = min(r.sent for r in stats.log)
    by_kind: dict[str, list[RequestRecord]] = {}
    for r in stats.log:
        by_kind.setdefault(kind_of(r), []).append(r)
    out = []
    for kind, records in sorted(by_kind.items(), key=lambda kv: min(r.sent for r in kv[1])):
        first = min(r.sent for r in records) - t0
        last = max((r.done or r.sent) for r in records) - t0
        at_once = peak_overlap(records, lambda r: True)
        out.append(f"{kind} ×{len(records)} {first:.2f}–{last:.2f} s (≤{at_once} at once)")
    return "; ".join(out)


# -- the bench ------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace, sizes: Sizes, work: Path) -> None:
        self.args, self.sizes, self.work = args, sizes, work
        self.results: dict[tuple[str, float, str], Measure] = {}
        self.peer_of: dict[str, tuple[str, str]] = {}  # work -> (score-client row, peer row)
        self.extra_rows: dict[str, list[str]] = {}  # work -> more rows (the baseline's)

    def setup(self) -> None:
        sizes, work = self.sizes, self.work
        started = time.perf_counter()
        block = random.Random(3).randbytes(MiB)
        analyses: list[tuple[str, str, list[Path]]] = []
        self.sets: dict[str, tuple[int, int]] = {}
        wanted = self.args.work
        for name in ("small120", "small1000"):
            if name not in wanted:
                continue
            count, size = getattr(sizes, name)
            folder = fresh_dir(work / "files" / name)
            for i in range(count):
                stem = f"{name}-{i:04d}.bam"
                stamp = (1 + WORK.index(name)) * 1_000_000 + i
                data = small_file(folder / stem, size, stamp, block)
                index = small_file(folder / (stem + ".bai"), 2 * KiB, stamp, block[::-1])
                analyses.append((name, STUDY, [data, index]))
            self.sets[name] = (count, size)
        if "big" in wanted:
            big = random_file(work / "files" / "big.bin.bam", sizes.big, seed=5)
            analyses.append(("big", STUDY, [big]))
        if "mount" in wanted:
            mounted = random_file(work / "files" / "mounted.bam", sizes.mount, seed=6)
            analyses.append(("mount", STUDY, [mounted]))
        if "view" in wanted:
            bam = make_bam(work / "files" / "bam", sizes.reads_per_contig)
            for i in range(sizes.bams):
                # the last two share a file name, in different studies
                name = "same.bam" if i >= sizes.bams - 2 else f"sample{i:02d}.bam"
                folder = fresh_dir(work / "files" / f"bam{i:02d}")
                os.link(bam, folder / name)
                os.link(str(bam) + ".bai", folder / (name + ".bai"))
                study = OTHER_STUDY if i == sizes.bams - 1 else STUDY
                analyses.append(("view", study, [folder / name, folder / (name + ".bai")]))
        port_holder = Serve(work / "data")
        self.link = WanLink(
            port_holder.port,
            rtt_ms=0,
            window=self.args.window_mib * MiB,
            rate=self.args.rate_mbit * 1e6 / 8,
        )
        out = subprocess.run(
            [
                str(BIN / "score-server"),
                "init",
                "--data-dir",
                str(work / "data"),
                "--public-url",
                self.link.url,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        self.token = out.stdout.strip().splitlines()[-1]
        rows = publish_all(work / "data", analyses)
        self.rows = rows
        self.serve = port_holder.__enter__()
        self.baseline: tuple[WanLink, dict[str, str], Serve] | None = None
        if self.args.baseline:
            holder = Serve(work / "data", source=self.args.baseline)
            link = WanLink(
                holder.port,
                rtt_ms=0,
                window=self.args.window_mib * MiB,
                rate=self.args.rate_mbit * 1e6 / 8,
            )
            holder.env = {"PYSCORE_PUBLIC_URL": link.url}
            old_env = {
                "METADATA_URL": link.url,
                "STORAGE_URL": link.url,
                "ACCESSTOKEN": self.token,
                "SCORE_CLIENT_CONF_DIR": str(work / "no-conf"),
                "PYTHONPATH": str(self.args.baseline / "src"),
            }
            self.baseline = (link, old_env, holder.__enter__())
        self.api = httpx.Client(
            base_url=self.serve.url, timeout=120, headers={"Authorization": f"Bearer {self.token}"}
        )
        self.env = {
            "METADATA_URL": self.link.url,
            "STORAGE_URL": self.link.url,
            "ACCESSTOKEN": self.token,
            "SCORE_CLIENT_CONF_DIR": str(work / "no-conf"),
        }
        print(
            f"setup: {len(rows)} files published in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )

    def close(self) -> None:
        if getattr(self, "baseline", None):
            link, _, serve = self.baseline  # type: ignore[misc]
            serve.__exit__()
            link.close()
        if hasattr(self, "api"):
            self.api.close()
        if hasattr(self, "serve"):
            self.serve.__exit__()
        if hasattr(self, "link"):
            self.link.close()

    def signed_url(self, object_id: str) -> str:
        r = self.api.get(
            f"/download/{object_id}", params={"offset": 0, "length": -1, "external": "true"}
        )
        r.raise_for_status()
        return r.json()["parts"][0]["url"]

    def measure(self, work: str, rtt: float, tool: str, fn, link: WanLink | None = None) -> None:
        """One timed measurement: fn() -> (seconds, peak KiB), with the link's counters."""
        link = link or self.link
        link.reset()
        seconds, peak = fn()
        deadline = time.monotonic() + 10
        while link.stats().in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = link.stats()
        self.results.setdefault((work, rtt, tool), Measure()).add(seconds, peak, stats)
        print(
            f"  {work} rtt={rtt:g} {tool}: {seconds:.2f} s, {stats.requests} requests, "
            f"{stats.connections} connections, {stats.peak_in_flight} in flight at most",
            file=sys.stderr,
        )

    # -- many small files ----------------------------------------------------------------
    def small(self, name: str, rtt: float, run: int) -> None:
        rows = [r for r in self.rows if r["group"] == name]
        m = manifest(self.work / f"{name}.tsv", rows)
        url_list = self.work / f"{name}.aria2"
        if not url_list.exists():
            url_list.write_text(
                "".join(
                    f"{self.signed_url(r['object_id'])}\n  out={r['file_name']}\n" for r in rows
                )
            )
        out = self.work / "out"
        score = "score-client download --manifest"
        peer = "aria2c -j16"
        self.peer_of[name] = (score, peer)

        def score_client(env: dict[str, str]):
            fresh_dir(out)
            return run_timed(
                [
                    str(BIN / "score-client"),
                    "--quiet",
                    "download",
                    "--manifest",
                    str(m),
                    "--output-dir",
                    str(out),
                ],
                env,
            )

        def aria2c():
            fresh_dir(out)
            return run_timed(
                [
                    "aria2c",
                    "-q",
                    "-j16",
                    "-i",
                    str(url_list),
                    "-d",
                    str(out),
                    "--file-allocation=none",
                    "--auto-file-renaming=false",
                    "--allow-overwrite=true",
                ]
            )

        tools = [(score, lambda: score_client(self.env), self.link), (peer, aria2c, self.link)]
        self.add_baseline(name, score, tools, score_client)
        turn = run % len(tools)
        for tool, fn, link in tools[turn:] + tools[:turn]:
            self.measure(name, rtt, tool, fn, link)
            got = {p.name: p.stat().st_size for p in out.iterdir() if p.is_file()}
            want = {r["file_name"]: r["file_size"] for r in rows}
            if got != want:
                missing = sorted(set(want) - set(got))[:3]
                raise SystemExit(f"{name} {tool}: wrong files (missing e.g. {missing})")

    # -- one big file -----------------------------------------------------------------------
    def big(self, rtt: float, run: int) -> None:
        row = next(r for r in self.rows if r["group"] == "big")
        if not hasattr(self, "big_url"):
            self.big_url = self.signed_url(row["object_id"])
        out = self.work / "out"
        score, peer = "score-client download", "aria2c -x8 -s8"
        self.peer_of["big"] = (score, peer)

        def score_client():
            fresh_dir(out)
            return run_timed(
                [
                    str(BIN / "score-client"),
                    "--quiet",
                    "download",
                    "--object-id",
                    row["object_id"],
                    "--output-dir",
                    str(out),
                ],
                self.env,
            )

        def aria2c():
            fresh_dir(out)
            return run_timed(
                [
                    "aria2c",
                    "-q",
                    "-x8",
                    "-s8",
                    "-d",
                    str(out),
                    "-o",
                    "big.bin.bam",
                    "--file-allocation=none",
                    "--allow-overwrite=true",
                    self.big_url,
                ]
            )

        for tool, fn in self.ordered(run, (score, score_client), (peer, aria2c)):
            self.measure("big", rtt, tool, fn)
            if (out / "big.bin.bam").stat().st_size != row["file_size"]:
                raise SystemExit(f"big {tool}: wrong size")
        shutil.rmtree(out)

    # -- a region of many BAMs --------------------------------------------------------------
    def view(self, rtt: float, run: int) -> None:
        rows = [r for r in self.rows if r["group"] == "view"]
        bams = [r for r in rows if r["file_name"].endswith(".bam")]
        m = manifest(self.work / "view.tsv", rows)
        if not hasattr(self, "bam_urls"):
            index_of = {
                r["analysis_id"]: r["object_id"] for r in rows if r["file_name"].endswith(".bai")
            }
            self.bam_urls = [
                (self.signed_url(r["object_id"]), self.signed_url(index_of[r["analysis_id"]]))
                for r in bams
            ]
            local = Path(bams[0]["path"])
            self.expected = int(
                subprocess.run(
                    ["samtools", "view", "-c", str(local), REGION],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            ) * len(bams)
        out = self.work / "out"
        score = f"score-client view --manifest ({len(bams)} BAMs)"
        peer = "samtools view -X ×8"
        self.peer_of["view"] = (score, peer)

        def score_client():
            fresh_dir(out)
            scratch = fresh_dir(self.work / "scratch")
            return run_timed(
                [
                    str(BIN / "score-client"),
                    "--quiet",
                    "view",
                    "--manifest",
                    str(m),
                    "--query",
                    REGION,
                    "--output-dir",
                    str(out),
                ],
                self.env,
                cwd=scratch,
            )

        def samtools():
            fresh_dir(out)
            scratch = fresh_dir(self.work / "scratch")
            cwds = [fresh_dir(scratch / str(i)) for i in range(len(self.bam_urls))]
            commands = [
                ["samtools", "view", "-h", "-X", bam, bai, REGION, "-o", str(out / f"{i}.sam")]
                for i, (bam, bai) in enumerate(self.bam_urls)
            ]
            return run_parallel(commands, 8, cwds)

        for tool, fn in self.ordered(run, (score, score_client), (peer, samtools)):
            self.measure("view", rtt, tool, fn)
            got = sam_records(out)
            if got != self.expected:
                note = f"{tool} wrote {got:,} records of {self.expected:,}"
                self.results[("view", rtt, tool)].notes.add(note)
                print(f"  NOTE: {note}", file=sys.stderr)

    # -- many small uploads -------------------------------------------------------------------
    def fresh_objects(self, files: list[Path]) -> tuple[str, dict[str, str]]:
        if self.api.get(f"/studies/{STUDY}").status_code == 404:  # `--work upload` alone
            self.api.post(f"/studies/{STUDY}/", json={"studyId": STUDY}).raise_for_status()
        payload = song_payload(STUDY, files, donor="up")
        r = self.api.post(f"/submit/{STUDY}", params={"allowDuplicates": "true"}, json=payload)
        r.raise_for_status()
        analysis_id = r.json()["analysisId"]
        listed = self.api.get(f"/studies/{STUDY}/analysis/{analysis_id}/files")
        listed.raise_for_status()
        return analysis_id, {f["fileName"]: f["objectId"] for f in listed.json()}

    def upload(self, rtt: float, run: int) -> None:
        count, size = self.sizes.uploads
        folder = self.work / "files" / "upload"
        if not folder.exists():
            folder.mkdir(parents=True)
            block = random.Random(9).randbytes(MiB)
            self.up_files = [
                small_file(folder / f"up-{i:03d}.bam", size, 1000 + i, block) for i in range(count)
            ]
            self.up_md5 = {f.name: file_md5(f) for f in self.up_files}
        score, peer = "score-client upload --manifest", "curl -T ×8"
        self.peer_of["upload"] = (score, peer)

        def score_client(env: dict[str, str]):
            analysis_id, ids = self.fresh_objects(self.up_files)
            m = self.work / "upload.tsv"
            m.write_text(
                f"{analysis_id}\t\t\n"
                + "".join(f"{ids[f.name]}\t{f}\t{self.up_md5[f.name]}\n" for f in self.up_files)
            )
            self.uploaded = list(ids.values())
            return run_timed(
                [str(BIN / "score-client"), "--quiet", "upload", "--manifest", str(m)], env
            )

        def curl():
            _, ids = self.fresh_objects(self.up_files)
            specs = {}
            for f in self.up_files:
                r = self.api.post(
                    f"/upload/{ids[f.name]}/uploads",
                    params={"fileSize": size, "md5": self.up_md5[f.name]},
                )
                r.raise_for_status()
                specs[f.name] = r.json()
                if len(specs[f.name]["parts"]) != 1:
                    raise SystemExit("expected one part per small file")
            heads = fresh_dir(self.work / "heads")
            commands = [
                [
                    "curl",
                    "-s",
                    "-f",
                    "-T",
                    str(f),
                    "-D",
                    str(heads / f.name),
                    "-o",
                    "/dev/null",
                    specs[f.name]["parts"][0]["url"],
                ]
                for f in self.up_files
            ]
            result = run_parallel(commands, 8, [heads] * len(commands))
            for f in self.up_files:  # untimed: finalize each part, complete each upload
                head = (heads / f.name).read_text()
                etag = re.search(r"^etag:\s*\"?([0-9a-fA-F]+)\"?", head, re.I | re.M)
                if not etag:
                    raise SystemExit(f"no ETag for {f.name}: {head}")
                spec = specs[f.name]
                oid = ids[f.name]
                self.api.post(
                    f"/upload/{oid}/parts",
                    params={
                        "uploadId": spec["uploadId"],
                        "partNumber": 1,
                        "md5": self.up_md5[f.name],
                        "etag": etag[1],
                    },
                ).raise_for_status()
                self.api.post(
                    f"/upload/{oid}", params={"uploadId": spec["uploadId"]}
                ).raise_for_status()
            self.uploaded = list(ids.values())
            return result

        tools = [
            (score, lambda: score_client(self.env), self.link),
            (peer, curl, self.link),
        ]
        self.add_baseline("upload", score, tools, score_client)
        turn = run % len(tools)
        for tool, fn, link in tools[turn:] + tools[:turn]:
            self.measure("upload", rtt, tool, fn, link)
            for oid in self.uploaded:
                if self.api.get(f"/upload/{oid}").json() is not True:
                    raise SystemExit(f"upload {tool}: {oid} is not uploaded")

    def add_baseline(
        self, work: str, score: str, tools: list, client: Callable[[dict[str, str]], Any]
    ) -> None:
        """With --baseline: the other tree's client (its environment, behind its own link) as
        a row beside `score`'s, second in the rotation."""
        if self.baseline:
            link, old_env, _ = self.baseline
            old = f"{score} (baseline {self.args.baseline.name})"
            self.extra_rows[work] = [old]
            tools.insert(1, (old, lambda: client(old_env), link))

    # -- mount ------------------------------------------------------------------------------
    def mount(self, rtt: float, run: int) -> None:
        row = next(r for r in self.rows if r["group"] == "mount")
        m = manifest(self.work / "mount.tsv", [row])
        mount_point = self.work / "mnt"
        mount_point.mkdir(exist_ok=True)
        out = self.work / "out"
        score, peer = "score-client mount + dd bs=1M", "score-client download"
        self.peer_of["mount"] = (score, peer)

        def mounted_dd():
            log = self.work / "mount.log"
            with open(log, "ab") as f:
                proc = subprocess.Popen(
                    [
                        str(BIN / "score-client"),
                        "mount",
                        "--mount-point",
                        str(mount_point),
                        "--manifest",
                        str(m),
                    ],
                    env={**os.environ, **self.env},
                    stdin=subprocess.DEVNULL,
                    stdout=f,
                    stderr=f,
                )
            try:
                deadline = time.monotonic() + 120
                while not os.path.ismount(mount_point):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"mount failed: {log.read_text()[-2000:]}")
                    time.sleep(0.05)
                found = [
                    Path(d) / "mounted.bam"
                    for d, _, n in os.walk(mount_point)
                    if "mounted.bam" in n
                ]
                if len(found) != 1:
                    raise SystemExit(f"mount: expected one mounted.bam, found {found}")
                self.link.reset()  # count the read only, not mounting
                seconds, _ = run_timed(["dd", f"if={found[0]}", "of=/dev/null", "bs=1M"])
                return seconds, vm_hwm(proc.pid)
            finally:
                unmount(mount_point)
                stop(proc)
                unmount(mount_point)

        def download():
            fresh_dir(out)
            return run_timed(
                [
                    str(BIN / "score-client"),
                    "--quiet",
                    "download",
                    "--object-id",
                    row["object_id"],
                    "--output-dir",
                    str(out),
                ],
                self.env,
            )

        for tool, fn in self.ordered(run, (score, mounted_dd), (peer, download)):
            self.measure("mount", rtt, tool, fn)
        shutil.rmtree(out, ignore_errors=True)

    @staticmethod
    def ordered(run: int, first, second):
        return [first, second] if run % 2 == 0 else [second, first]

    # -- the table ------------------------------------------------------------------------------
    def table(self, rtts: list[float]) -> str:
        s, a = self.sizes, self.args
        titles = {
            "small120": f"{2 * s.small120[0]:,} files ({s.small120[0]} × "
            f"{s.small120[1] // KiB} KiB + 2 KiB index)",
            "small1000": f"{2 * s.small1000[0]:,} files ({s.small1000[0]} × "
            f"{s.small1000[1] // KiB} KiB + 2 KiB index)",
            "big": f"one {s.big // MiB:,} MiB file",
            "view": f"{REGION} of {s.bams} BAMs",
            "upload": f"upload {s.uploads[0]} × {s.uploads[1] // KiB} KiB",
            "mount": f"sequential read of {s.mount // MiB:,} MiB",
        }
        rows = []
        notes = []
        for work in WORK:
            if work not in self.peer_of:
                continue
            score, peer = self.peer_of[work]
            for rtt in rtts:
                base = self.results.get((work, rtt, peer))
                if base is None:
                    continue
                peer_med = statistics.median(base.seconds)
                for tool in (score, *self.extra_rows.get(work, []), peer):
                    m = self.results[(work, rtt, tool)]
                    med = statistics.median(m.seconds)
                    st = m.median_stats()
                    data_peak = peak_overlap(st.log, lambda r: r.path.startswith("/store/"))
                    rows.append(
                        f"| {titles[work]} | {rtt:g} ms | {tool} | {med:.2f} s | "
                        f"{med / peer_med:.2f}× | {st.requests:,} | {st.connections:,} | "
                        f"{st.peak_in_flight} ({data_peak}) | {max(m.peaks) / 1024:.0f} MiB |"
                    )
                    notes += [f"- {rtt:g} ms, {tool}: {n}" for n in sorted(m.notes)]
        return "\n".join(
            [
                f"### over a long link: score-client beside peers, median of {a.runs} "
                f"({time.strftime('%Y-%m-%d %H:%M')})",
                f"`{' '.join(['.venv/bin/python', 'bench/wan.py', *sys.argv[1:]])}`. "
                f"Link: tests/wanlink.py, RTT as shown, {a.window_mib} MiB window per "
                f"connection, {a.rate_mbit:,} Mbit/s shared each way; one score-server worker, "
                "SQLite, local store, public URL = the link. Peers use signed URLs fetched "
                "beforehand. Ratio = the tool's time / its peer's (lower is faster). Requests, "
                "connections and in flight (data requests in parentheses) are the link's "
                "counts for the median run. Noisy 2-core machine shared with other work: "
                "compare rows within this run.",
                "",
                "| work | RTT | tool | time | vs peer | requests | connections | "
                "in flight at most | peak RSS |",
                "|---|---|---|---|---|---|---|---|---|",
                *rows,
                *(["", *notes] if notes else []),
                "",
            ]
        )


def record_in_section(table: str) -> None:
    """Add the table at the end of RESULTS.md's SECTION (made at the end if missing), so
    every run of this bench stays together whatever the other benches append."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    if SECTION not in text:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n\n"
    start = text.index(SECTION) + len(SECTION)
    following = text.find("\n## ", start)
    end = len(text) if following < 0 else following + 1
    head, tail = text[:end].rstrip("\n") + "\n\n", text[end:]
    RESULTS.write_text(head + table.rstrip("\n") + "\n" + ("\n" + tail if tail else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rtt", default=None, help="round-trip times in ms (default 0,25,100)")
    ap.add_argument("--runs", type=int, default=None, help="runs per row (default 3)")
    ap.add_argument("--work", default=",".join(WORK), help=f"some of {','.join(WORK)}")
    ap.add_argument("--window-mib", type=int, default=4)
    ap.add_argument("--rate-mbit", type=int, default=1000)
    ap.add_argument(
        "--quick", action="store_true", help="small sizes, one run, RTT 0 and 100 (a smoke run)"
    )
    ap.add_argument(
        "--baseline", type=Path, default=None, help="another tree: its client and server too"
    )
    add_record_flag(ap)
    args = ap.parse_args()
    if args.baseline:
        args.baseline = args.baseline.resolve()
    args.work = [w.strip() for w in args.work.split(",") if w.strip()]
    unknown = set(args.work) - set(WORK)
    if unknown:
        raise SystemExit(f"unknown work: {sorted(unknown)}; choose from {','.join(WORK)}")
    sizes = QUICK if args.quick else Sizes()
    args.runs = args.runs or (1 if args.quick else 3)
    rtts = [float(x) for x in (args.rtt or ("0,100" if args.quick else "0,25,100")).split(",")]
    tools = {"small120": ["aria2c"], "small1000": ["aria2c"], "big": ["aria2c"]}
    tools.update(view=["samtools"], upload=["curl"], mount=["fusermount3", "dd"])
    need_tools(*sorted({t for w in args.work for t in tools[w]}))
    work = Path(tempfile.mkdtemp(prefix="bench-wan-", dir=os.environ.get("BENCH_DIR")))
    bench = Bench(args, sizes, work)
    try:
        bench.setup()
        for rtt in rtts:
            bench.link.configure(rtt_ms=rtt)
            if bench.baseline:
                bench.baseline[0].configure(rtt_ms=rtt)
            for run in range(args.runs):
                for name in args.work:
                    if name in ("small120", "small1000"):
                        bench.small(name, rtt, run)
                    else:
                        getattr(bench, name)(rtt, run)
        for (name, rtt, tool), m in sorted(bench.results.items()):
            if tool.startswith("score-client"):
                print(f"{name} rtt={rtt:g} {tool}: {phases(m.median_stats())}", file=sys.stderr)
        table = bench.table(rtts)
        print(table)
        if not args.no_record:
            record_in_section(table)
    finally:
        bench.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
