"""score-server under many clients at once: does it hold, and shed rather than stall?

500 concurrent clients (one keep-alive connection each, no think time) for 60 s against
`score-server serve --workers 2` on the embedded default (SQLite, local store) with the demo
study, each looping over a mix of what researchers and the page send: download specs with a
READ token, a 64 KiB range of a signed part URL, DRS objects, htsget tickets, entity
listings, the File Repository page and file pages. Meanwhile a prober asks /isAlive on a
fresh connection every 0.25 s.

Passes when: no request waits more than BOUND seconds (admission's queue_timeout_seconds,
10 s, plus the slowest answer), /isAlive answers every probe within 2 s, and no answer is a
5xx other than an intentional 503 (with Retry-After). Records requests/s, p50/p99/max, the
503 share and /isAlive's worst in bench/RESULTS.md.

    .venv/bin/python bench/load.py [--clients 500] [--seconds 60] [--workers 2] [--no-record]

The load generator is a small asyncio HTTP/1.1 client (httpx would take most of the two
cores itself); it shares the machine with the server, so the figures are a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import BIN, Serve, add_record_flag, create_token, report  # noqa: E402
from pyscore.wire.manifest import parse_download  # noqa: E402

BOUND = 20.0  # seconds: queue timeout (10 s) + the slowest answer, with room for a busy box
ALIVE_BOUND = 2.0
TIMEOUT = 60.0  # a client gives up on an answer after this (counted as a failure)
# asyncio's TimeoutError is not the builtin one before Python 3.11
NO_ANSWER = (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError)


class Conn:
    """One keep-alive HTTP/1.1 connection; reconnects when the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None

    async def get(self, target: str, headers: dict[str, str]) -> tuple[int, dict[bytes, bytes]]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        lines = [f"GET {target} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self.writer.drain()
        reader = self.reader
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionError("closed")
        status = int(status_line.split()[1])
        got: dict[bytes, bytes] = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            key, _, value = line.partition(b":")
            got[key.strip().lower()] = value.strip()
        if b"content-length" in got:
            await reader.readexactly(int(got[b"content-length"]))
        elif got.get(b"transfer-encoding", b"").lower() == b"chunked":
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        if got.get(b"connection", b"").lower() == b"close":
            await self.close()
        return status, got


class Mix:
    """The requests clients choose from, with weights."""

    def __init__(self, url: str, token: str, rows: list, specs: dict[str, dict]) -> None:
        self.auth = {"Authorization": f"Bearer {token}"}
        by_name = {r.fileName: r for r in rows}
        self.ids = [r.objectId for r in rows]
        self.bams = [r.objectId for r in rows if r.fileName.endswith(".bam")]
        self.analyses = sorted({r.analysisId for r in rows if r.analysisId})
        self.part_urls = [
            (urlsplit(p["url"]), p["offset"]) for s in specs.values() for p in s["parts"]
        ]
        assert self.bams and by_name
        self.choices = [
            (30, self.spec),
            (10, self.part),
            (20, self.drs),
            (15, self.htsget),
            (10, self.entities),
            (10, self.page),
            (5, self.file_page),
        ]
        self.weights = [w for w, _ in self.choices]

    def pick(self, rng: random.Random) -> tuple[str, str, dict[str, str]]:
        (_, make) = rng.choices(self.choices, self.weights)[0]
        return make(rng)

    def spec(self, rng):
        return "spec", f"/download/{rng.choice(self.ids)}?offset=0&length=-1", self.auth

    def part(self, rng):
        url, offset = rng.choice(self.part_urls)
        rng_header = {"Range": f"bytes={offset}-{offset + 65535}"}
        return "part range", f"{url.path}?{url.query}", rng_header

    def drs(self, rng):
        return "drs", f"/ga4gh/drs/v1/objects/{rng.choice(self.ids)}", self.auth

    def htsget(self, rng):
        start = rng.randrange(0, 90_000)
        target = f"/htsget/reads/{rng.choice(self.bams)}?referenceName=chr1&start={start}"
        return "htsget", f"{target}&end={start + 5000}", self.auth

    def entities(self, rng):
        return "entities", f"/entities?gnosId={rng.choice(self.analyses)}&size=2000", {}

    def page(self, rng):
        return "page", "/repository", {}

    def file_page(self, rng):
        return "file page", f"/file/{rng.choice(self.ids)}", {}


async def client(n: int, host: str, port: int, mix: Mix, until: float, out: list) -> None:
    rng = random.Random(n)
    conn = Conn(host, port)
    try:
        while time.monotonic() < until:
            kind, target, headers = mix.pick(rng)
            started = time.monotonic()
            try:
                status, got = await asyncio.wait_for(conn.get(target, headers), TIMEOUT)
                retry_after = got.get(b"retry-after")
            except NO_ANSWER:
                await conn.close()
                status, retry_after = 0, None
            out.append((kind, status, time.monotonic() - started, retry_after is not None))
            if status == 503:  # shed: honour Retry-After, as a polite client would
                await asyncio.sleep(min(2.0, float(retry_after or 1)))
    finally:
        await conn.close()


async def prober(host: str, port: int, until: float, out: list) -> None:
    """/isAlive on a fresh connection every 0.25 s."""
    while time.monotonic() < until:
        started = time.monotonic()
        conn = Conn(host, port)
        try:
            status, _ = await asyncio.wait_for(conn.get("/isAlive", {}), 10)
        except NO_ANSWER:
            status = 0
        finally:
            await conn.close()
        out.append((status, time.monotonic() - started))
        await asyncio.sleep(0.25)


async def run(url: str, mix: Mix, clients: int, seconds: float) -> tuple[list, list, float]:
    parts = urlsplit(url)
    until = time.monotonic() + seconds
    answers: list = []
    probes: list = []
    started = time.monotonic()
    await asyncio.gather(
        prober(parts.hostname, parts.port, until, probes),
        *(client(i, parts.hostname, parts.port, mix, until, answers) for i in range(clients)),
    )
    return answers, probes, time.monotonic() - started


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] if len(values) > 1 else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--workers", type=int, default=2)
    add_record_flag(ap)
    args = ap.parse_args()
    import resource
    import subprocess

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.clients)), hard))
    with tempfile.TemporaryDirectory(prefix="pyscore-load-") as tmp:
        data = Path(tmp) / "data"
        subprocess.run(
            [str(BIN / "score-server"), "init", "--data-dir", str(data)],
            check=True,
            capture_output=True,
        )
        demo = subprocess.run(
            [str(BIN / "score-server"), "demo", "--data-dir", str(data), "--reads", "2000"],
            check=True,
            capture_output=True,
            text=True,
        )
        rows = parse_download(Path(demo.stdout.strip().splitlines()[-1]).read_text(), "demo")
        token = create_token(data, "PROGRAMDATA-DEMO.READ")
        with Serve(data, workers=args.workers) as server:
            auth = {"Authorization": f"Bearer {token}"}
            specs = {
                r.objectId: httpx.get(
                    f"{server.url}/download/{r.objectId}", headers=auth, timeout=30
                ).json()
                for r in rows
            }
            mix = Mix(server.url, token, rows, specs)
            answers, probes, took = asyncio.run(run(server.url, mix, args.clients, args.seconds))
    summarize(answers, probes, took, args)


def summarize(answers: list, probes: list, took: float, args) -> None:
    statuses = Counter(s for _, s, _, _ in answers)
    times = [t for _, s, t, _ in answers if s]
    served = [t for _, s, t, _ in answers if s and s != 503]
    shed = statuses[503]
    bad_5xx = sum(n for s, n in statuses.items() if s >= 500 and s != 503)
    shed_without_retry_after = sum(1 for _, s, _, r in answers if s == 503 and not r)
    failed = statuses[0]
    worst = max(times, default=0.0)
    alive_worst = max((t if s == 200 else float("inf")) for s, t in probes) if probes else 0
    by_kind = Counter(k for k, s, _, _ in answers if s and s < 400)
    table = (
        f"### load: {args.clients} clients for {args.seconds:.0f} s, "
        f"--workers {args.workers} ({time.strftime('%Y-%m-%d %H:%M')})\n"
        "Embedded default (SQLite, local store), demo study; each client one keep-alive "
        "connection, no think time, a mix of download specs (30%), 64 KiB signed-URL ranges "
        "(10%), DRS objects (20%), htsget tickets (15%), entity lists (10%), the repository "
        "page (10%) and file pages (5%); /isAlive probed on a fresh connection every 0.25 s. "
        f"Bounds: every answer within {BOUND:.0f} s, /isAlive within {ALIVE_BOUND:.0f} s, no 5xx "
        "but 503 + Retry-After.\n\n"
        "| requests | requests/s | p50 | p99 | max | 503 share | other 5xx | no answer | "
        "/isAlive worst |\n|---|---|---|---|---|---|---|---|---|\n"
        f"| {len(answers)} | {len(answers) / took:.0f} | "
        f"{percentile(served, 0.5) * 1000:.0f} ms | {percentile(served, 0.99) * 1000:.0f} ms | "
        f"{worst:.1f} s | {shed / max(1, len(answers)):.1%} | {bad_5xx} | {failed} | "
        f"{alive_worst * 1000:.0f} ms ({len(probes)} probes) |\n\n"
        "Answered (2xx/3xx) by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(by_kind.items()))
    )
    report(table, args)
    problems = []
    if worst > BOUND:
        problems.append(f"a request waited {worst:.1f} s (bound {BOUND:.0f} s)")
    if alive_worst > ALIVE_BOUND:
        problems.append(f"/isAlive took {alive_worst:.1f} s (bound {ALIVE_BOUND:.0f} s)")
    if bad_5xx or failed or shed_without_retry_after:
        problems.append(
            f"{bad_5xx} 5xx other than 503, {failed} without an answer, "
            f"{shed_without_retry_after} 503 without Retry-After"
        )
    other = {s: n for s, n in statuses.items() if s not in (200, 206, 503)}
    if other:
        problems.append(f"unexpected statuses {other}")
    if problems:
        raise SystemExit("load: " + "; ".join(problems))
    print("load: within bounds")


if __name__ == "__main__":
    main()
