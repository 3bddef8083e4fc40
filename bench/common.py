"""What every benchmark needs: a platform serving some files, peak RSS, and the results file."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_of(proc: subprocess.Popen) -> tuple[int, str]:
    """Wait for a child; its peak RSS in KiB (VmHWM, sampled every 20 ms: wait4's ru_maxrss
    would include the parent's memory at fork time) and its stderr (if piped)."""
    chunks: list[bytes] = []
    reader = None
    stderr = proc.stderr
    if stderr is not None:
        import threading

        reader = threading.Thread(target=lambda: chunks.append(stderr.read()), daemon=True)
        reader.start()
    peak = 0
    while proc.poll() is None:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError):
            pass
        time.sleep(0.02)
    if reader is not None:
        reader.join()
    return peak, b"".join(chunks).decode(errors="replace")


def record(text: str) -> None:
    with open(RESULTS, "a") as f:
        f.write(text + "\n")


class Platform:
    """`score-server init` + publish files + `serve` on a free port, for a `with` block."""

    def __init__(
        self,
        data_dir: Path,
        files: list[Path],
        access: str = "open",
        part_mib: int | None = None,
        workers: int = 1,
        extra_env: dict | None = None,
        init_args: list[str] | None = None,
    ):
        self.data_dir, self.files, self.access = data_dir, files, access
        self.part_mib, self.workers, self.extra_env = part_mib, workers, extra_env or {}
        self.init_args = init_args or []  # e.g. --database-url, --store s3://...
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.object_ids: list[str] = []

    def __enter__(self) -> Platform:
        from tests.publish import publish

        extra = ["--part-size", str(self.part_mib)] if self.part_mib else []
        out = subprocess.run(
            [
                str(BIN / "score-server"),
                "init",
                "--data-dir",
                str(self.data_dir),
                *extra,
                *self.init_args,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        self.admin_token = out.stdout.strip().splitlines()[-1]
        self.object_ids = publish(self.data_dir, self.files, study="BENCH", access=self.access)
        self.server = Serve(self.data_dir, self.workers, env=self.extra_env, port=self.port)
        self.proc = self.server.__enter__().proc
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(*exc)

    def client_env(self, token: str = "") -> dict[str, str]:
        return {"METADATA_URL": self.url, "STORAGE_URL": self.url, "ACCESSTOKEN": token}


# -- shared by the peer benchmarks (upload, view, mount, server, scale) ---------------------
def add_record_flag(ap) -> None:
    ap.add_argument(
        "--no-record",
        action="store_true",
        help="print the table only; do not append it to bench/RESULTS.md "
        "(for smoke tests with small sizes)",
    )


def report(table: str, args) -> None:
    """Print a result table, and append it to RESULTS.md unless this is a smoke run."""
    print(table)
    if not getattr(args, "no_record", False):
        record(table)


def need_tools(*tools: str) -> None:
    import shutil

    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        raise SystemExit(
            f"needed: {', '.join(missing)} (Debian: apt-get install "
            f"{' '.join(DEBIAN_PACKAGE.get(t, t) for t in missing)})"
        )


DEBIAN_PACKAGE = {"aria2c": "aria2", "fusermount3": "fuse3", "nginx": "nginx"}


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its living descendants."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(tree_cpu(int(c)) for c in children)


def children_cpu() -> float:
    """CPU seconds used by this process's finished children, for before/after deltas."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_timed(
    cmd: list[str], env: dict | None = None, cwd: Path | None = None, stdout: Path | None = None
) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of a command, which must succeed; stdout goes to a
    file (or nowhere)."""
    out: Any = open(stdout, "wb") if stdout else subprocess.DEVNULL  # noqa: SIM115
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd, env={**os.environ, **(env or {})}, cwd=cwd, stdout=out, stderr=subprocess.PIPE
        )
        peak, err = rss_of(proc)
        seconds = time.perf_counter() - start
    finally:
        if stdout:
            out.close()
    if proc.returncode != 0:
        raise SystemExit(
            f"{' '.join(cmd[:3])} ... failed ({proc.returncode}): {err.strip()[-2000:]}"
        )
    return seconds, peak


def score_client(env: dict, *args: str) -> str:
    """Run score-client (must succeed) and return its stdout, stripped."""
    r = subprocess.run(
        [str(BIN / "score-client"), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise SystemExit(f"score-client {' '.join(args)} failed ({r.returncode}): {r.stderr}")
    return r.stdout.strip()


def create_token(data_dir: Path, scopes: str) -> str:
    out = subprocess.run(
        [
            str(BIN / "score-server"),
            "token",
            "create",
            "--data-dir",
            str(data_dir),
            "--scopes",
            scopes,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def wait_http(url: str, proc: subprocess.Popen, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}) before answering")
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer at {url} within {seconds:.0f} s")


def stop(proc: subprocess.Popen | None, seconds: float = 10) -> None:
    """Terminate one child we started, killing it if it will not go."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def serve_command(data_dir: Path, port: int, workers: int = 1, bin_dir: Path = BIN) -> list[str]:
    """`score-server serve` of a data directory on a loopback port."""
    return [
        str(bin_dir / "score-server"),
        *("serve", "--data-dir", str(data_dir)),
        *("--port", str(port), "--workers", str(workers)),
    ]


class Serve:
    """Another `score-server serve` process on an existing data directory (another port,
    another worker count): what a second host with a copy of server.json would run."""

    def __init__(
        self,
        data_dir: Path,
        workers: int = 1,
        source: Path | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
        bin_dir: Path = BIN,
    ) -> None:
        """`source`: another checkout's tree (its `src/` put first on PYTHONPATH), to serve
        the same data directory with other code, e.g. a baseline; `env`: more environment
        (PYSCORE_<FIELD> settings); `bin_dir`: whose `score-server` (another checkout's venv)."""
        self.data_dir, self.workers, self.source = data_dir, workers, source
        self.env, self.bin_dir = env or {}, bin_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Serve:
        self.log = open(self.data_dir / f"server-{self.port}.log", "ab")
        self.proc = subprocess.Popen(
            serve_command(self.data_dir, self.port, self.workers, self.bin_dir),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                **({"PYTHONPATH": str(self.source / "src")} if self.source else {}),
                **self.env,
            },
        )
        wait_http(f"{self.url}/isAlive", self.proc, "score-server")
        return self

    def __exit__(self, *exc: object) -> None:
        stop(self.proc)
        self.log.close()


class Nginx:
    """Debian's nginx serving one directory (sendfile, autoindex) on a free loopback port,
    in the foreground (`daemon off`), configured in a private temporary directory."""

    def __init__(self, root: Path, workers: int = 1) -> None:
        self.root, self.workers = root.resolve(), workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Nginx:
        import tempfile

        need_tools("nginx")
        self.dir = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        d = self.dir
        user = "user root;" if os.geteuid() == 0 else ""  # workers must read a 0700 tmp dir
        temps = " ".join(
            f"{k}_temp_path {d}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (d / "nginx.conf").write_text(f"""{user}
worker_processes {self.workers};
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    {temps}
    server {{
        listen 127.0.0.1:{self.port};
        root {self.root};
        autoindex on;
    }}
}}
""")
        self.proc = subprocess.Popen(
            ["nginx", "-p", str(d), "-c", str(d / "nginx.conf"), "-e", str(d / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_http(self.url + "/", self.proc, "nginx")
        return self

    def __exit__(self, *exc: object) -> None:
        import shutil

        stop(self.proc)  # SIGTERM: nginx's fast shutdown, workers included
        shutil.rmtree(self.dir, ignore_errors=True)
