"""The platform's dependencies failing under load: does every client finish, every byte stay
as uploaded, every row agree with the store, and the platform come back by itself?

Two platforms on one PostgreSQL: `s3` (Ceph RGW; two `score-server serve` processes, one
with --workers 2, behind a round-robin TCP balancer, as behind a load balancer) and `local`
(the local store on a small tmpfs of its own, one `serve --workers 2`). Under a mixed load
for `--seconds` (the real score-client downloading many small files and a big one, viewing
a region of a BAM, submitting analyses (upload + publish); HTTP clients asking portal pages,
analysis listings, download specifications and batch lookups), a schedule made from
`--seed` (printed, so a run can be repeated) kills -9 server processes, stops PostgreSQL
(pg_ctl, as an upgrade would) and starts it again, stops the RADOS gateway alone (the
cluster keeps the objects) and starts it again, freezes it (SIGSTOP: connections hang
rather than fail), and fills the local store's disk; a supervisor starts a killed server
again, as systemd would.

Checked afterwards (each failure is a violation, listed; the run exits 1 if any):
- every client run finished, or exited with a documented exit code (1-5) and a one-line
  reason on stderr, and one re-run of the same command (after the faults) finished it;
- every object byte-identical to its row (size, MD5), every row with its bytes and every
  object in the store with its row; no analysis PUBLISHED without its files' objects; every
  analysis a client submitted PUBLISHED with the bytes it uploaded; no upload left open;
- every grant answered to the HTTP load (its X-Request-ID) is in the audit trail;
- while a dependency was away, requests that needed it (probed on every server) were
  answered 503 with Retry-After and a JSON error; no answer anywhere was another 5xx; no
  server log holds a traceback;
- no worker outlived its killed server; after the end no server process, database
  connection, upload body or temporary object is left;
- /health/ready of every server back to 200 after each dependency returned (how long it
  took is reported against the 10 s target; only never coming back is a violation).

    .venv/bin/python bench/chaos.py [--seconds 300] [--seed N] [--no-record]

It starts its own PostgreSQL (scripts/postgres.sh) and Ceph RGW (scripts/s3.sh, Ceph only),
and mounts a tmpfs (root); tests/integration/test_chaos.py runs it for 60 s in CI's
PostgreSQL + S3 pass, on the servers that pass started.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import BIN, free_port, record, serve_command, stop  # noqa: E402
from tests.processes import alive, descendants  # noqa: E402
from tests.publish import file_md5  # noqa: E402
from tests.tcpproxy import TcpProxy  # noqa: E402

MiB = 1024 * 1024
PG_BIN = Path("/usr/lib/postgresql/15/bin")
CLIENT_EXITS = {1, 2, 3, 4, 5}  # score-client's documented failures (130 is an interrupt)
REASONS = ("score-client: error: ", "ERROR: ")  # its lines saying why it ended, or a file failed
READY_TARGET = 10.0  # seconds from a dependency's return to /health/ready 200 (reported)
READY_BOUND = 120.0  # ... and never back after this long: a violation


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# -- the dependencies ---------------------------------------------------------------------
class Postgres:
    """The PostgreSQL server the platforms share, stopped and started with pg_ctl as an
    upgrade would (as the owner of its data directory)."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.url = url
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute("SHOW data_directory").fetchone()
        assert row is not None
        self.data = Path(row[0])
        self.owner = self.data.owner()

    def pg_ctl(self, *args: str) -> None:
        cmd = [str(PG_BIN / "pg_ctl"), "-D", str(self.data), *args]
        if os.geteuid() == 0 and self.owner != "root":
            cmd = ["runuser", "-u", self.owner, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def stop(self) -> None:
        self.pg_ctl("-m", "fast", "-w", "stop")

    def start(self) -> None:
        """Started with the options it ran with (postmaster.opts, which pg_ctl keeps)."""
        words = shlex.split((self.data / "postmaster.opts").read_text())[1:]
        if "-D" in words:
            at = words.index("-D")
            del words[at : at + 2]
        self.pg_ctl("-w", "-l", str(self.data / "chaos.log"), "-o", shlex.join(words), "start")

    def answering(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.url, connect_timeout=2).close()
        except psycopg.Error:
            return False
        return True

    def connections(self, databases: list[str]) -> int:
        """Connections open to these databases (from any process but this query's)."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = ANY(%s) "
                "AND pid <> pg_backend_pid()",
                (databases,),
            ).fetchone()
        return int(row[0]) if row else 0

    def create(self, name: str) -> str:
        """A new database; its URL."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url.rsplit("/", 1)[0] + f"/{name}"


class Gateway:
    """Ceph's RADOS gateway alone (radosgw, by its pid file): the monitor and the OSD, which
    hold the objects, keep running while it is stopped or frozen."""

    def __init__(self, ceph_conf: Path, endpoint: str) -> None:
        self.conf, self.endpoint = ceph_conf, endpoint
        self.pidfile = ceph_conf.parent / "run" / "client.rgw.pid"

    def pid(self) -> int:
        return int(self.pidfile.read_text().strip())

    def stop(self) -> None:
        pid = self.pid()
        os.kill(pid, signal.SIGTERM)
        if not wait_for(lambda: not alive(pid), 20):
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not alive(pid), 10)

    def start(self) -> None:
        with open(self.conf.parent / "log" / "rgw-chaos.out", "ab") as out:
            # radosgw forks into the background once it is started
            subprocess.run(
                ["radosgw", "-n", "client.rgw"],
                env={**os.environ, "CEPH_CONF": str(self.conf)},
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=60,
            )
        if not wait_for(self.answering, 60):
            raise RuntimeError("the RADOS gateway did not answer within 60 s of its start")

    def freeze(self) -> None:
        os.kill(self.pid(), signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid(), signal.SIGCONT)

    def answering(self) -> bool:
        try:
            httpx.get(self.endpoint, timeout=2)
        except httpx.HTTPError:
            return False
        return True


def wait_for(condition: Callable[[], bool], seconds: float, every: float = 0.2) -> bool:
    """Whether `condition` became true within `seconds` (asked every `every`)."""
    deadline = time.monotonic() + seconds
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(every)


# -- processes ----------------------------------------------------------------------------
def processes_naming(text: str) -> list[int]:
    """Living processes whose command line holds `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline and alive(int(entry.name)):
                found.append(int(entry.name))
    return found


class ServeProc:
    """One `score-server serve` process (and its workers), started again after a kill as a
    service manager would: a new start every 2 s until one serves."""

    def __init__(
        self, name: str, data_dir: Path, workers: int, logs: Path, env: dict[str, str]
    ) -> None:
        self.name, self.data_dir, self.workers, self.env = name, data_dir, workers, env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = logs / f"{name}.log"
        self.proc: Optional[subprocess.Popen] = None
        self.restarting = False  # killed, and not serving again yet

    def start(self, bound: float = 2 * READY_BOUND) -> None:
        """Start it, and again 2 s after each time it ends before serving (the database
        away, its port still held by a killed one's workers); a slow start (a busy machine)
        is waited for, up to `bound` in all."""
        deadline = time.monotonic() + bound
        while True:
            with open(self.log_path, "ab") as out:
                self.proc = subprocess.Popen(
                    serve_command(self.data_dir, self.port, self.workers),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **self.env},
                )
            left = deadline - time.monotonic()
            wait_for(self.ended_or_serving, left, 0.2)
            if self.proc.poll() is None and self.serving():
                return
            self.stop()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start; see {self.log_path}")
            time.sleep(2)

    def ended_or_serving(self) -> bool:
        return self.proc is None or self.proc.poll() is not None or self.serving()

    def serving(self) -> bool:
        try:
            return httpx.get(f"{self.url}/isAlive", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill9(self) -> list[int]:
        """SIGKILL the server process (not its workers); the workers it had."""
        assert self.proc is not None
        workers = descendants(self.proc.pid)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        return workers

    def stop(self) -> None:
        stop(self.proc, 30)

    def ready(self) -> int:
        try:
            return httpx.get(f"{self.url}/health/ready", timeout=10).status_code
        except httpx.HTTPError:
            return 0


# -- the platforms --------------------------------------------------------------------------
@dataclass
class Platform:
    name: str
    data_dir: Path
    database: str
    servers: list[ServeProc]
    url: str = ""
    admin: str = ""
    reader: str = ""
    many: list[str] = field(default_factory=list)  # object ids of small files
    big: str = ""
    expected: dict[str, tuple[int, str]] = field(default_factory=dict)  # id -> (size, md5)
    bam: str = ""  # a BAM with its index (views)
    region: str = ""
    balancer: Optional[TcpProxy] = None  # in front of its servers, when several
    filler: Optional[Path] = None  # the local store's tmpfs, when it has one

    def env(self, token: str) -> dict[str, str]:
        return {
            "METADATA_URL": self.url,
            "STORAGE_URL": self.url,
            "ACCESSTOKEN": token,
            "SCORE_CLIENT_CONF_DIR": str(self.data_dir / "no-conf"),
        }


def server_cli(*args: str) -> str:
    out = subprocess.run(
        [str(BIN / "score-server"), *args], capture_output=True, text=True, timeout=600
    )
    if out.returncode != 0:
        raise RuntimeError(f"score-server {args[0]} failed: {out.stderr[-2000:]}")
    return out.stdout


def token(data_dir: Path, scopes: str) -> str:
    out = server_cli("token", "create", "--data-dir", str(data_dir), "--scopes", scopes)
    return out.strip().splitlines()[-1]


def seed_files(folder: Path, prefix: str, sizes: list[int], rng: random.Random) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, size in enumerate(sizes):
        path = folder / f"{prefix}-{n:03d}.bam"
        with open(path, "wb") as f:
            for at in range(0, size, MiB):
                f.write(rng.randbytes(min(MiB, size - at)))
        paths.append(path)
    return paths


def make_platform(
    name: str,
    work: Path,
    pg: Postgres,
    cfg: Config,
    s3: Optional[tuple[str, str, str]],
    rng: random.Random,
) -> Platform:
    """`score-server init` on a database of its own, seeded through the submission code
    (tests/publish.py): many small files and one big one, controlled, published."""
    from tests.publish import publish_many

    tag = f"{name}_{os.urandom(4).hex()}"  # unique per run, whatever the seed
    database = f"chaos_{tag}"
    url = pg.create(database)
    data_dir = work / name / "data"
    args = ["init", "--data-dir", str(data_dir), "--database-url", url, "--part-size", "8"]
    if s3 is not None:
        endpoint, key, secret = s3
        args += ["--store", f"s3://chaos-{tag.replace('_', '-')}/objects"]
        args += ["--s3-endpoint", endpoint, "--s3-access-key", key, "--s3-secret-key", secret]
    admin = server_cli(*args).strip().splitlines()[-1]
    platform = Platform(name, data_dir, database, [], admin=admin)
    filler = None
    if s3 is None and cfg.disk_mib:
        filler = small_disk(data_dir / "objects", cfg.disk_mib)
    platform.filler = filler
    seed = work / name / "seed"
    many = seed_files(
        seed / "many",
        "many",
        [rng.randrange(4096, cfg.small_kib * 1024) for _ in range(cfg.many)],
        rng,
    )
    big = seed_files(seed / "big", "big", [cfg.big_mib * MiB], rng)
    published = publish_many(data_dir, [("CHAOS", many), ("CHAOS", big)], access="controlled")
    platform.many, [platform.big] = published[0][1], published[1][1]
    for object_id, path in zip([*platform.many, platform.big], [*many, *big]):
        platform.expected[object_id] = (path.stat().st_size, file_md5(path))
    shutil.rmtree(seed / "big")  # big: not kept twice on disk
    if s3 is not None:
        server_cli("demo", "--data-dir", str(data_dir))
        manifest = data_dir / "demo-files" / "DEMO" / "DEMO-manifest.tsv"
        rows = [line.split("\t") for line in manifest.read_text().splitlines()[1:]]
        platform.bam = next(r[2] for r in rows if r[4].endswith(".bam"))
        platform.region = "chr1:10000-60000"
    platform.reader = token(data_dir, "score.READ song.READ")
    return platform


def small_disk(path: Path, mib: int) -> Path:
    """`path` on a tmpfs of `mib` MiB of its own (what is there is copied in); the file a
    disk-full fault fills it with."""
    held = path.with_name(path.name + ".held")
    path.rename(held)
    path.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={mib}m,mode=0700", "tmpfs", str(path)], check=True
    )
    shutil.copytree(held, path, dirs_exist_ok=True)
    shutil.rmtree(held)
    return path / "filler"


def tmpfs_mountable() -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    with tempfile.TemporaryDirectory() as d:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", d]).returncode == 0
        if ok:
            subprocess.run(["umount", d], check=True)
    return ok


# -- the load -------------------------------------------------------------------------------
@dataclass
class ClientRun:
    """One score-client command, what it did, and (if it failed) its re-run's."""

    kind: str
    platform: str
    cmd: list[str]
    env: dict[str, str]
    cwd: Path
    started: float
    code: int = 0
    stderr: str = ""
    rerun_code: Optional[int] = None
    rerun_stderr: str = ""
    expect: dict[str, tuple[int, str]] = field(default_factory=dict)  # file -> (size, md5)
    study: str = ""


@dataclass
class Answer:
    """An HTTP answer the load or a probe got (5xx and grants are kept)."""

    what: str
    server: str
    status: int
    retry_after: str = ""
    json: bool = False
    request_id: str = ""
    at: float = 0.0  # when it was asked (monotonic)
    note: str = ""
    done: float = 0.0  # when it was answered


class Load:
    """The mixed load: one thread per loop, each until `stop` is set."""

    def __init__(self, platforms: list[Platform], cfg: Config, work: Path, rng: random.Random):
        self.platforms, self.cfg, self.work = platforms, cfg, work
        self.rng = random.Random(rng.random())
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.runs: list[ClientRun] = []
        self.answers: list[Answer] = []
        self.counts: Counter[str] = Counter()
        self.threads: list[threading.Thread] = []
        self.serial = 0
        self.corrupt: list[str] = []  # downloads that finished with other bytes

    def start(self) -> None:
        for p in self.platforms:
            loops: list[Callable[[Platform], None]] = [self.many, self.big, self.submit, self.http]
            if p.bam:
                loops.append(self.view)
            for loop in loops:
                thread = threading.Thread(target=self._loop, args=(loop, p), daemon=True)
                thread.start()
                self.threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(self.cfg.client_timeout + 30)

    def _loop(self, step: Callable[[Platform], None], p: Platform) -> None:
        while not self.stop.is_set():
            try:
                step(p)
            except Exception as exc:  # the bench's own trouble: said, and the loop goes on
                log(f"load {step.__name__} on {p.name}: {type(exc).__name__}: {exc}")
            self.stop.wait(self.cfg.pause)

    def _next(self) -> int:
        with self.lock:
            self.serial += 1
            return self.serial

    # score-client -------------------------------------------------------------------------
    def client(self, run: ClientRun) -> ClientRun:
        code, err = run_client(run.cmd, run.env, run.cwd, self.cfg.client_timeout)
        run.code, run.stderr = code, err
        with self.lock:
            self.runs.append(run)
            self.counts[f"client {run.kind} exit {code}"] += 1
        return run

    def _download(self, p: Platform, kind: str, ids: list[str]) -> None:
        out = self.work / "clients" / f"{p.name}-{kind}-{self._next()}"
        out.mkdir(parents=True)
        cmd = [str(BIN / "score-client"), "--silent", "download", "--object-id", *ids]
        cmd += ["--output-dir", str(out), "--output-layout", "id", "--index", "false"]
        run = ClientRun(kind, p.name, cmd, p.env(p.reader), out, time.monotonic())
        run.expect = {i: p.expected[i] for i in ids}
        if self.client(run).code == 0:
            self.arrived(run)
            shutil.rmtree(out)  # checked: room for the next

    def arrived(self, run: ClientRun) -> None:
        """A finished download must have left exactly the bytes published."""
        for object_id, (size, md5) in run.expect.items():
            path = run.cwd / object_id
            if not path.is_file() or path.stat().st_size != size or file_md5(path) != md5:
                with self.lock:
                    self.corrupt.append(
                        f"{run.kind} on {run.platform}: {object_id} arrived "
                        "other than published, and the client said it finished"
                    )

    def many(self, p: Platform) -> None:
        self._download(p, "many", p.many)

    def big(self, p: Platform) -> None:
        self._download(p, "big", [p.big])

    def view(self, p: Platform) -> None:
        out = self.work / "clients" / f"{p.name}-view-{self._next()}"
        out.mkdir(parents=True)
        cmd = [str(BIN / "score-client"), "--silent", "view", "--object-id", p.bam]
        cmd += ["--query", p.region, "--output-dir", str(out)]
        run = self.client(ClientRun("view", p.name, cmd, p.env(p.reader), out, time.monotonic()))
        if run.code == 0:
            shutil.rmtree(out)
        self.stop.wait(2)  # views are the rarer request

    def submit(self, p: Platform) -> None:
        """A new analysis of two files, uploaded and published by `score-client submit`."""
        from tests.publish import song_payload

        n = self._next()
        folder = self.work / "clients" / f"{p.name}-submit-{n}"
        # the local store's small disk would fill with the load's own uploads in a few
        # minutes (then every re-run meets a disk that is full for good): a quarter there
        most = self.cfg.upload_mib * MiB // (4 if p.filler is not None else 1)
        sizes = [self.rng.randrange(64 * 1024, max(most, 64 * 1024 + 1)) for _ in range(2)]
        files = seed_files(folder, f"up{n}", sizes, self.rng)
        payload = song_payload("CHAOS", files, donor=f"UP{n}", access="controlled")
        (folder / "payload.json").write_text(json.dumps(payload))
        cmd = [str(BIN / "score-client"), "--silent", "submit", "--study-id", "CHAOS"]
        cmd += ["--payload", str(folder / "payload.json"), "--dir", str(folder), "--publish"]
        run = ClientRun("submit", p.name, cmd, p.env(p.admin), folder, time.monotonic())
        run.expect = {f.name: (f.stat().st_size, file_md5(f)) for f in files}
        run.study = "CHAOS"
        self.client(run)

    # HTTP ----------------------------------------------------------------------------------
    def http(self, p: Platform) -> None:
        """One round of the HTTP mix; each answer looked at (see `look`)."""
        reader = {"Authorization": f"Bearer {p.reader}"}
        ids = self.rng.sample(p.many, min(50, len(p.many)))
        calls: list[tuple[str, str, str, dict[str, Any]]] = [
            ("portal", "GET", "/repository", {}),
            ("listing", "GET", "/studies/CHAOS/analysis", {"headers": reader}),
            ("spec", "GET", f"/download/{ids[0]}?offset=0&length=-1", {"headers": reader}),
            (
                "batch",
                "POST",
                "/download/batch",
                {"headers": reader, "json": {"objects": [{"objectId": i} for i in ids]}},
            ),
        ]
        with httpx.Client(base_url=p.url, timeout=self.cfg.http_timeout) as http:
            for what, method, path, kwargs in calls:
                if self.stop.is_set():
                    return
                try:
                    r = http.request(method, path, **kwargs)
                except httpx.HTTPError as exc:
                    with self.lock:
                        self.counts[f"http {what} {type(exc).__name__}"] += 1
                    continue
                self.look(what, p.name, r, grant=what in ("spec", "batch"))

    def look(self, what: str, server: str, r: httpx.Response, grant: bool = False) -> None:
        """Count an answer; keep its request id when it granted controlled data, and every
        5xx (judged in `answer_violations`)."""
        answer = Answer(
            what,
            server,
            r.status_code,
            r.headers.get("Retry-After", ""),
            r.headers.get("content-type", "").startswith(("application/json", "application/vnd")),
            r.headers.get("X-Request-ID", ""),
            time.monotonic(),
        )
        with self.lock:
            self.counts[f"http {what} {r.status_code}"] += 1
            if r.status_code >= 500 or (grant and r.status_code == 200):
                self.answers.append(answer)


def run_client(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float) -> tuple[int, str]:
    """Exit code and stderr of a score-client command (-9: killed by the bench's bound)."""
    try:
        out = subprocess.run(
            cmd,
            env={**os.environ, **env},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        return -9, f"(bench) no end within {timeout:g} s\n{err}"
    return out.returncode, out.stderr


# -- the faults -----------------------------------------------------------------------------
@dataclass
class Fault:
    at: float  # seconds after the load started
    kind: str  # kill9, postgres, gateway-stop, gateway-freeze, disk-full
    target: str = ""  # the server, for kill9
    seconds: float = 0.0  # how long the dependency stays away

    def __str__(self) -> str:
        what = f"{self.kind} {self.target}".strip()
        return f"t={self.at:5.1f}s {what}" + (f" for {self.seconds:g} s" if self.seconds else "")


def schedule(
    seed: int, seconds: float, servers: list[str], kinds: list[str], away: float
) -> list[Fault]:
    """The faults of a run, from its seed: each kind once (kill9 once per server), in a
    shuffled order, spread over the run with a little jitter; a dependency away for `away`
    seconds (PostgreSQL for a third of it: an upgrade's restart is short)."""
    rng = random.Random(seed)
    faults = [Fault(0, "kill9", s) for s in servers]
    for kind in kinds:
        faults.append(Fault(0, kind, seconds=max(3.0, away / 3 if kind == "postgres" else away)))
    rng.shuffle(faults)
    busy = sum(f.seconds for f in faults)
    gap = max((seconds - busy - 10) / (len(faults) + 1), 3.0)
    at = 5.0
    for f in faults:
        f.at = round(at + rng.uniform(0, gap / 3), 1)
        at = f.at + f.seconds + gap
    return faults


@dataclass
class Event:
    """What happened at a fault: when the dependency returned, how long until every
    server's /health/ready said 200 again, and what the probes were answered meanwhile."""

    fault: Fault
    recovered: dict[str, float] = field(default_factory=dict)  # server -> seconds
    probes: list[Answer] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    back: float = float("inf")  # when the dependency returned (monotonic)
    detail: str = ""


class Chaos:
    """Runs the schedule against the platforms and their dependencies."""

    def __init__(
        self,
        platforms: list[Platform],
        pg: Postgres,
        gateway: Optional[Gateway],
        load: Load,
        started: float,
    ) -> None:
        self.platforms, self.pg, self.gateway, self.load = platforms, pg, gateway, load
        self.started = started
        self.events: list[Event] = []
        self.problems: list[str] = []  # workers outliving their server, failed restarts
        self.cancel: list[tuple[Platform, str]] = []  # uploads the probes began
        self.restarts: list[threading.Thread] = []  # killed servers being started again

    def servers(self, name: str = "") -> list[tuple[Platform, ServeProc]]:
        return [(p, s) for p in self.platforms for s in p.servers if name in ("", s.name)]

    def run(self, faults: list[Fault], until: float) -> None:
        for fault in faults:
            wait = self.started + fault.at - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            log(f"fault: {fault}")
            event = Event(fault)
            try:
                getattr(self, fault.kind.replace("-", "_"))(event)
            except Exception as exc:
                event.notes.append(f"the bench could not inject it: {type(exc).__name__}: {exc}")
            self.events.append(event)
        wait = self.started + until - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        for thread in self.restarts:
            thread.join(READY_BOUND + 180)

    def kill9(self, event: Event) -> None:
        """SIGKILL a server process; its workers must end by themselves; a service manager
        starts it again once they have (its port is theirs until then), while the schedule
        goes on."""
        [(p, server)] = self.servers(event.fault.target)
        server.restarting = True
        workers = server.kill9()
        killed = time.monotonic()

        def restart() -> None:
            gone = wait_for(lambda: not any(alive(w) for w in workers), 60)
            ended = time.monotonic() - killed
            if not gone:
                left = [w for w in workers if alive(w)]
                self.problems.append(f"{server.name}: workers {left} outlived their server")
                for w in left:
                    os.kill(w, signal.SIGKILL)
            time.sleep(max(0.0, 2 - ended))  # a service manager's restart delay
            try:
                server.start()
            except RuntimeError as exc:
                self.problems.append(f"{server.name} could not be started again: {exc}")
                event.recovered[server.name] = float("inf")
                return
            server.restarting = False
            again = time.monotonic() - killed
            event.detail = f"workers ended {ended:.1f} s after; serving again {again:.1f} s after"
            self.recover(event, [(p, server)], killed)

        thread = threading.Thread(target=restart, daemon=True)
        thread.start()
        self.restarts.append(thread)

    def postgres(self, event: Event) -> None:
        self.pg.stop()
        self.away(event, self.pg.start, "listing", self.servers())

    def gateway_stop(self, event: Event) -> None:
        assert self.gateway is not None
        self.gateway.stop()
        self.away(event, self.gateway.start, "htsget", self.s3_servers())

    def gateway_freeze(self, event: Event) -> None:
        assert self.gateway is not None
        self.gateway.freeze()
        self.away(event, self.gateway.thaw, "htsget", self.s3_servers())

    def disk_full(self, event: Event) -> None:
        [p] = [p for p in self.platforms if p.filler is not None]
        filler = p.filler
        assert filler is not None
        free = os.statvfs(filler.parent)
        subprocess.run(
            ["fallocate", "-l", str(free.f_bavail * free.f_frsize), str(filler)], check=True
        )
        self.away(event, filler.unlink, "part", [(p, s) for s in p.servers])

    def s3_servers(self) -> list[tuple[Platform, ServeProc]]:
        return [(p, s) for p, s in self.servers() if p.bam]

    def away(
        self,
        event: Event,
        back: Callable[[], None],
        probe: str,
        affected: list[tuple[Platform, ServeProc]],
    ) -> None:
        """While the dependency is away: each affected server probed, one request after
        another, with a request that needs it; then the dependency brought back, and the
        time until every affected server is ready again (a killed one still starting again
        is left out)."""
        affected = [(p, s) for p, s in affected if not s.restarting]
        end = time.monotonic() + event.fault.seconds
        probers = [
            threading.Thread(target=self.probing, args=(event, probe, p, s, end), daemon=True)
            for p, s in affected
        ]
        for t in probers:
            t.start()
        time.sleep(max(0.0, end - time.monotonic()))
        back()
        event.back = time.monotonic()
        self.recover(event, affected, event.back)
        for t in probers:
            t.join(self.load.cfg.http_timeout + 5)
        for p, object_id in self.cancel:
            with contextlib.suppress(httpx.HTTPError):
                httpx.delete(
                    f"{p.url}/upload/{object_id}",
                    headers={"Authorization": f"Bearer {p.admin}"},
                    timeout=30,
                )
        self.cancel.clear()

    def probing(self, event: Event, what: str, p: Platform, s: ServeProc, end: float) -> None:
        while time.monotonic() < end:
            self.probe(event, what, p, s)
            time.sleep(max(0.0, min(1.0, end - time.monotonic())))

    def recover(
        self, event: Event, servers: list[tuple[Platform, ServeProc]], since: float
    ) -> None:
        """Every server's /health/ready asked every 0.2 s until it says 200 (bounded)."""
        waiting = {s.name: s for _, s in servers}
        deadline = since + READY_BOUND
        while waiting and time.monotonic() < deadline:
            for name, server in list(waiting.items()):
                if server.ready() == 200:
                    event.recovered[name] = round(time.monotonic() - since, 1)
                    del waiting[name]
            time.sleep(0.2)
        for name in waiting:
            event.recovered[name] = float("inf")

    def probe(self, event: Event, what: str, p: Platform, s: ServeProc) -> None:
        """A request that needs the dependency away, straight to one server."""
        reader = {"Authorization": f"Bearer {p.reader}"}
        sent = time.monotonic()
        try:
            with httpx.Client(base_url=s.url, timeout=self.load.cfg.http_timeout) as http:
                if what == "listing":
                    r = http.get("/studies/CHAOS/analysis", headers=reader)
                elif what == "htsget":
                    chrom, _, span = p.region.partition(":")
                    start, _, end = span.partition("-")
                    r = http.get(
                        f"/htsget/reads/{p.bam}",
                        params={"referenceName": chrom, "start": start, "end": end},
                        headers={"Authorization": f"Bearer {p.admin}"},
                    )
                else:
                    r = self.part_probe(http, p)
        except httpx.HTTPError as exc:
            event.probes.append(
                Answer(what, s.name, 0, at=sent, note=f"{type(exc).__name__}: {exc}")
            )
            return
        event.probes.append(
            Answer(
                what,
                s.name,
                r.status_code,
                r.headers.get("Retry-After", ""),
                r.headers.get("content-type", "").startswith(
                    ("application/json", "application/vnd")
                ),
                at=sent,
                note=r.text[:200] if r.status_code != 503 else "",
                done=time.monotonic(),
            )
        )

    def part_probe(self, http: httpx.Client, p: Platform) -> httpx.Response:
        """A part PUT to the local store (its disk full); the upload is cancelled after."""
        from tests.publish import song_payload

        admin = {"Authorization": f"Bearer {p.admin}"}
        data = os.urandom(256 * 1024)
        payload = song_payload("CHAOS", {f"probe-{self.load._next()}.bam": data}, donor="PROBE")
        r = http.post(
            "/submit/CHAOS", json=payload, headers=admin, params={"allowDuplicates": "true"}
        )
        if r.status_code != 200:
            return r
        files = http.get(f"/studies/CHAOS/analysis/{r.json()['analysisId']}/files", headers=admin)
        object_id = files.json()[0]["objectId"]
        md5 = hashlib.md5(data).hexdigest()
        spec = http.post(
            f"/upload/{object_id}/uploads",
            params={"fileSize": len(data), "md5": md5},
            headers=admin,
        )
        if spec.status_code != 200:
            return spec
        self.cancel.append((p, object_id))
        return http.put(spec.json()["parts"][0]["url"], content=data)


# -- the checks -------------------------------------------------------------------------------
def rerun_failed(load: Load, timeout: float) -> None:
    """Each client run that did not finish, run once more as it was (it resumes)."""
    for run in load.runs:
        if run.code != 0:
            run.rerun_code, run.rerun_stderr = run_client(run.cmd, run.env, run.cwd, timeout)
            if run.rerun_code == 0 and run.kind in ("many", "big"):
                load.arrived(run)


def client_violations(load: Load) -> list[str]:
    out = []
    for run in load.runs:
        if run.code == 0:
            continue
        where = f"{run.kind} on {run.platform} ({' '.join(run.cmd[2:4])} ...)"
        lines = [line for line in run.stderr.strip().splitlines() if line.strip()]
        if run.code not in CLIENT_EXITS:
            out.append(f"{where}: exit {run.code}, not a documented one: {run.stderr[-500:]}")
        elif not lines or not all(line.startswith(REASONS) for line in lines):
            # one line says why the run ended, or one per file that failed (downloads)
            out.append(f"{where}: exit {run.code} without one-line reasons: {run.stderr[-800:]}")
        if run.rerun_code != 0:
            out.append(f"{where}: its re-run exited {run.rerun_code}: {run.rerun_stderr[-500:]}")
    return out


def store_objects(
    platform: Platform,
) -> tuple[set[str], Callable[[str], Optional[bytes]], list[str]]:
    """What the platform's store holds: its object ids, a reader of an object's bytes, and
    leftovers (temporary files, uploads still open in the store)."""
    from pyscore.server.settings import Settings

    settings = Settings.load(platform.data_dir)
    leftovers: list[str] = []
    if settings.store == "local":
        data = settings.objects_dir / "data"
        held = set()
        for entry in data.iterdir():
            if entry.name.startswith("."):
                leftovers.append(f"temporary object {entry.name}")
            elif not entry.name.endswith(".meta") and entry.name != "heliograph":
                held.add(entry.name)
        uploads = settings.objects_dir / "upload"
        leftovers += [
            f"upload leftover {e.relative_to(uploads)}"
            for e in uploads.rglob("*")
            if e.name.startswith(".body-") or e.suffix == ".tmp"
        ]

        def read_local(object_id: str) -> Optional[bytes]:
            path = data / object_id
            return path.read_bytes() if path.is_file() else None

        return held, read_local, leftovers
    from pyscore.server.store.s3 import S3Store

    store = S3Store.from_settings(settings)
    held = set()
    for page in store.client.get_paginator("list_objects_v2").paginate(
        Bucket=store.bucket, Prefix=store.data_key("") + "/"
    ):
        for item in page.get("Contents", []):
            name = item["Key"].rsplit("/", 1)[1]
            if not name.endswith(".meta") and name != "heliograph":
                held.add(name)
    open_uploads = store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
    leftovers += [f"S3 multipart upload {u['UploadId']} of {u['Key']}" for u in open_uploads]

    def read_s3(object_id: str) -> Optional[bytes]:
        try:
            return store.client.get_object(Bucket=store.bucket, Key=store.data_key(object_id))[
                "Body"
            ].read()
        except store.client.exceptions.NoSuchKey:
            return None

    return held, read_s3, leftovers


def store_violations(platform: Platform, load: Load) -> tuple[list[str], dict[str, int]]:
    """Bytes against rows, rows against bytes, published analyses whole, submissions as
    uploaded, no upload open; and the counts checked."""
    from sqlalchemy import select

    from pyscore.server.db import Database
    from pyscore.server.metadata.analyses import analysis_files, storage_problems
    from pyscore.server.settings import Settings
    from pyscore.server.tables import Analysis, File, StoredObject, Upload

    out: list[str] = []
    held, read, leftovers = store_objects(platform)
    out += [f"{platform.name}: {what}" for what in leftovers]
    db = Database(Settings.load(platform.data_dir).database_url)
    counts = Counter[str]()
    try:
        with db.session() as s:
            rows = {o.object_id: o for o in s.scalars(select(StoredObject))}
            for object_id, row in rows.items():
                data = read(object_id)
                counts["objects checked"] += 1
                if data is None:
                    out.append(f"{platform.name}: object row {object_id} without its bytes")
                elif len(data) != row.size or hashlib.md5(data).hexdigest() != row.md5:
                    out.append(f"{platform.name}: object {object_id} differs from its row")
                want = platform.expected.get(object_id)
                if want and data is not None and (len(data), hashlib.md5(data).hexdigest()) != want:
                    out.append(
                        f"{platform.name}: seeded object {object_id} is not what was published"
                    )
            for object_id in held:
                if object_id not in rows:
                    out.append(f"{platform.name}: object {object_id} in the store without a row")
            for analysis in s.scalars(select(Analysis).where(Analysis.state == "PUBLISHED")):
                counts["published analyses"] += 1
                problems = storage_problems(s, analysis_files(s, analysis.analysis_id), False)
                out += [
                    f"{platform.name}: published {analysis.analysis_id}: {t}" for _, t in problems
                ]
            for upload in s.scalars(select(Upload)):
                out.append(
                    f"{platform.name}: upload {upload.upload_id} of {upload.object_id} left open"
                )
            for run in load.runs:
                if run.kind != "submit" or run.platform != platform.name:
                    continue
                counts["submissions checked"] += 1
                for name, want in run.expect.items():
                    f = s.scalar(select(File).where(File.file_name == name))
                    analysis = s.get(Analysis, f.analysis_id) if f else None
                    data = read(f.object_id) if f else None
                    got = (len(data), hashlib.md5(data).hexdigest()) if data is not None else None
                    if analysis is None or analysis.state != "PUBLISHED" or got != want:
                        state = analysis.state if analysis else "missing"
                        bytes_are = (
                            "as uploaded" if got == want else "missing" if not got else "other"
                        )
                        what = f"analysis {state}, bytes {bytes_are}"
                        out.append(f"{platform.name}: submitted {name}: {what}")
    finally:
        db.engine.dispose()
    return out, dict(counts)


def audit_violations(platform: Platform, load: Load) -> tuple[list[str], int]:
    """Each grant answered to the HTTP load on this platform must be in the audit trail."""
    out = server_cli(
        "audit", "--data-dir", str(platform.data_dir), "--format", "json", "--since", "1d"
    )
    recorded = {json.loads(line).get("request_id") for line in out.splitlines() if line.strip()}
    granted = [
        a for a in load.answers if a.server == platform.name and a.status == 200 and a.request_id
    ]
    missing = [a for a in granted if a.request_id not in recorded]
    return [
        f"{platform.name}: the grant of {a.what} {a.request_id} is not in the audit trail"
        for a in missing
    ], len(granted)


def answer_violations(load: Load, events: list[Event]) -> list[str]:
    """No 5xx but 503, each with Retry-After and JSON; every probe while a dependency was
    away answered 503 (or, asked before it returned and answered after, 200)."""
    out = []
    for a in load.answers:
        if a.status == 503 and (not a.retry_after.isdigit() or not a.json):
            out.append(f"{a.what} on {a.server}: 503 without Retry-After or a JSON body")
        elif a.status >= 500 and a.status != 503:
            out.append(f"{a.what} on {a.server}: {a.status} {a.note}")
    for e in events:
        for a in e.probes:
            if a.status == 503 and (not a.retry_after.isdigit() or not a.json):
                out.append(f"{e.fault}: {a.what} on {a.server}: 503 without Retry-After or JSON")
            elif a.status == 0:
                out.append(f"{e.fault}: {a.what} on {a.server} got no answer: {a.note}")
            elif a.status != 503 and not (a.status < 400 and a.done > e.back):
                out.append(f"{e.fault}: {a.what} on {a.server} answered {a.status}: {a.note}")
    return out


def log_violations(platforms: list[Platform]) -> tuple[list[str], dict[str, int]]:
    out, lines = [], {}
    for p in platforms:
        for s in p.servers:
            text = s.log_path.read_text(errors="replace")
            tracebacks = text.count("Traceback (most recent call last)")
            if tracebacks:
                first = text[text.index("Traceback") :][:1500]
                out.append(f"{s.name}: {tracebacks} traceback(s) in its log; the first:\n{first}")
            lines[s.name] = sum(1 for line in text.splitlines() if "unavailable (" in line)
    return out, lines


def leftover_violations(platforms: list[Platform], pg: Postgres, tmp: Path) -> list[str]:
    """After every server stopped: none of their processes, database connections or
    temporary files (their TMPDIR: metrics directories) is left."""
    out = []
    for p in platforms:
        left = processes_naming(str(p.data_dir))
        if left:
            out.append(f"{p.name}: processes {left} still run after their servers stopped")
    databases = [p.database for p in platforms]
    if not wait_for(lambda: pg.connections(databases) == 0, 15):
        out.append(f"{pg.connections(databases)} database connection(s) left open")
    stale = sorted(e.name for e in tmp.iterdir())
    if stale:
        out.append(f"{len(stale)} temporary file(s) left by the servers: {', '.join(stale[:5])}")
    return out


# -- a run ----------------------------------------------------------------------------------
@dataclass
class Config:
    seconds: float = 300
    seed: int = 0
    away: float = 30  # seconds a dependency stays away (PostgreSQL: a third)
    many: int = 100
    small_kib: int = 512
    big_mib: int = 256
    upload_mib: int = 8
    disk_mib: int = 768  # the local store's tmpfs (0: no disk-full fault)
    pause: float = 0.5  # between a loop's steps
    client_timeout: float = 600
    http_timeout: float = 60


@dataclass
class Report:
    seed: int
    faults: list[Fault]
    events: list[Event]
    violations: list[str]
    runs: list[ClientRun]
    counts: dict[str, int]
    checked: dict[str, int]
    outage_lines: dict[str, int]
    seconds: float

    def recovery(self, kind: str) -> float:
        times = [t for e in self.events if e.fault.kind == kind for t in e.recovered.values()]
        return max(times, default=float("nan"))

    def table(self) -> str:
        failed = [r for r in self.runs if r.code != 0]
        lines = [
            f"### chaos: {self.seconds:g} s of mixed load, seed {self.seed} "
            f"({time.strftime('%Y-%m-%d %H:%M')})",
            "",
            "| fault | /health/ready 200 again after the dependency's return | probes while away "
            "| |",
            "|---|---:|---|---|",
        ]
        for e in self.events:
            probes = Counter(str(a.status) for a in e.probes)
            said = ", ".join(f"{n}x {s}" for s, n in sorted(probes.items())) or "-"
            worst = max(e.recovered.values(), default=float("nan"))
            lines.append(f"| {e.fault} | {worst:.1f} s | {said} | {e.detail} |")
        lines += [
            "",
            f"- client runs: {len(self.runs)}, failed then finished by one re-run: "
            f"{sum(1 for r in failed if r.rerun_code == 0)}, not finished: "
            f"{sum(1 for r in failed if r.rerun_code != 0)} (exit codes of the failures: "
            f"{dict(Counter(r.code for r in failed))})",
            *(
                f"  - exit {code}, e.g.: {reason}"
                for code, reason in sorted(
                    {
                        r.code: r.stderr.strip().splitlines()[-1][:200]
                        for r in failed
                        if r.stderr.strip()
                    }.items()
                )
            ),
            f"- checked: {self.checked}",
            f"- cause lines in the server logs (one as an outage starts, then one per 10 s): "
            f"{self.outage_lines}",
            f"- violations: {len(self.violations)}",
        ]
        lines += [f"  - {v.splitlines()[0][:300]}" for v in self.violations[:30]]
        return "\n".join(lines) + "\n"


def run(
    cfg: Config,
    work: Path,
    pg: Postgres,
    s3: Optional[tuple[str, str, str]],
    gateway: Optional[Gateway],
) -> Report:
    rng = random.Random(cfg.seed)
    logs, tmp = work / "logs", work / "tmp"  # the servers' temporary files go to tmp
    logs.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(exist_ok=True)
    env = {"TMPDIR": str(tmp)}
    platforms: list[Platform] = []
    if s3 is not None:
        p = make_platform("s3", work, pg, cfg, s3, rng)
        p.servers = [
            ServeProc("s3-a", p.data_dir, 2, logs, env),
            ServeProc("s3-b", p.data_dir, 1, logs, env),
        ]
        platforms.append(p)
    disk = cfg.disk_mib if tmpfs_mountable() else 0
    local_cfg = replace(cfg, disk_mib=disk, big_mib=max(1, cfg.big_mib // 4))
    local = make_platform("local", work, pg, local_cfg, None, rng)
    local.servers = [ServeProc("local-a", local.data_dir, 2, logs, env)]
    platforms.append(local)
    for p in platforms:
        for s in p.servers:
            s.start()
        if len(p.servers) > 1:
            p.balancer = TcpProxy(*(s.port for s in p.servers))
            p.url = p.balancer.url
        else:
            p.url = p.servers[0].url
    kinds = ["postgres"]
    if gateway is not None:
        kinds += ["gateway-stop", "gateway-freeze"]
    if local.filler is not None:
        kinds.append("disk-full")
    names = [s.name for p in platforms for s in p.servers]
    faults = schedule(cfg.seed, cfg.seconds, names, kinds, cfg.away)
    log(f"seed {cfg.seed}; schedule:\n  " + "\n  ".join(str(f) for f in faults))
    load = Load(platforms, cfg, work, rng)
    started = time.monotonic()
    load.start()
    chaos = Chaos(platforms, pg, gateway, load, started)
    try:
        chaos.run(faults, cfg.seconds)
    finally:
        log("load stopping; client runs finish")
        load.finish()
    log(f"re-running {sum(1 for r in load.runs if r.code != 0)} failed client run(s)")
    rerun_failed(load, cfg.client_timeout)
    checked: Counter[str] = Counter()
    for p in platforms:
        if p.filler is not None:  # what the load left free of the small disk
            free = os.statvfs(p.filler.parent)
            checked[f"MiB free on {p.name}'s disk after the re-runs"] = (
                free.f_bavail * free.f_frsize // MiB
            )
    violations = list(chaos.problems) + load.corrupt
    violations += client_violations(load)
    violations += answer_violations(load, chaos.events)
    for p in platforms:
        found, counts = store_violations(p, load)
        violations += found
        checked.update(counts)
        missing, grants = audit_violations(p, load)
        violations += missing
        checked["grants checked in the audit trail"] += grants
    for e in chaos.events:
        violations += [f"{e.fault}: {note}" for note in e.notes]
        violations += [
            f"{e.fault}: {name} never ready again"
            for name, t in e.recovered.items()
            if t == float("inf")
        ]
    for p in platforms:
        if p.balancer is not None:
            p.balancer.close()
        for s in p.servers:
            s.stop()
    found, lines = log_violations(platforms)
    violations += found
    violations += leftover_violations(platforms, pg, tmp)
    for p in platforms:
        if p.filler is not None:
            subprocess.run(["umount", "-l", str(p.filler.parent)], check=False)
    return Report(
        cfg.seed,
        faults,
        chaos.events,
        violations,
        load.runs,
        dict(load.counts),
        dict(checked),
        lines,
        cfg.seconds,
    )


@contextlib.contextmanager
def dependencies(work: Path) -> Iterator[tuple[Postgres, tuple[str, str, str], Gateway]]:
    """A PostgreSQL and a Ceph RGW of the run's own (the project's scripts)."""
    (work / "pg").mkdir(parents=True)
    os.chmod(work, 0o755)
    env_line = subprocess.run(
        ["bash", str(ROOT / "scripts/postgres.sh"), "start", str(work / "pg"), str(free_port())],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    url = env_line.strip().split("=", 1)[1]
    try:
        s3_line = subprocess.run(
            ["bash", str(ROOT / "scripts/s3.sh"), "start", str(work / "s3"), str(free_port())],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "S3_SERVER": "ceph"},
        ).stdout
        found = dict(w.split("=", 1) for w in s3_line.replace("export ", "").split())
        try:
            yield (
                Postgres(url),
                (found["S3_ENDPOINT"], found["S3_ACCESS_KEY"], found["S3_SECRET_KEY"]),
                Gateway(Path(found["CEPH_CONF"]), found["S3_ENDPOINT"]),
            )
        finally:
            subprocess.run(
                ["bash", str(ROOT / "scripts/s3.sh"), "stop", str(work / "s3")], check=False
            )
    finally:
        subprocess.run(
            ["bash", str(ROOT / "scripts/postgres.sh"), "stop", str(work / "pg")], check=False
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=300, help="how long the load runs")
    ap.add_argument("--seed", type=int, help="the schedule's seed (default: random, printed)")
    ap.add_argument("--away", type=float, default=30, help="seconds a dependency stays away")
    ap.add_argument(
        "--use",
        metavar="POSTGRES_URL,S3_ENDPOINT,KEY,SECRET,CEPH_CONF",
        help="running servers to use (stopped and started by the run) instead of its own",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, data)")
    ap.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(10**6)
    cfg = Config(seconds=args.seconds, seed=seed, away=args.away)
    work = Path(tempfile.mkdtemp(prefix="pyscore-chaos-"))
    log(f"work directory {work}")
    try:
        if args.use:
            url, endpoint, key, secret, conf = args.use.split(",")
            gateway = Gateway(Path(conf), endpoint)
            report = run(cfg, work, Postgres(url), (endpoint, key, secret), gateway)
        else:
            with dependencies(work) as (pg, s3, gateway):
                report = run(cfg, work, pg, s3, gateway)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    table = report.table()
    print(table)
    for v in report.violations:
        print(f"VIOLATION: {v}")
    if not args.no_record:
        record(table)
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
