"""Start-up: how long `score-client` takes from process start to its first network request,
per command, and how long `import pyscore` takes, side by side with another tree's code.

    .venv/bin/python bench/startup.py [--runs 15] [--baseline DIR] [--no-record]

A loopback listener notes when the first bytes of a request reach it (then answers 503 and
the client is stopped): that instant minus the moment before the client was spawned is the
row's time. Commands: download (--object-id), view (--object-id --query), url, manifest (a
manifest URL on the listener); `version` and `python -c "import pyscore"` are timed to
their exit, beside `python -c pass` (the interpreter alone). --baseline DIR: the same
commands with DIR/src first on PYTHONPATH (e.g. `git archive main | tar -x -C DIR`), runs
interleaved. Byte-compile both trees first (`python -m compileall -q src`): this machine sets
PYTHONDONTWRITEBYTECODE=1, so a tree without .pyc files compiles every module on every run.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import BIN, add_record_flag, report  # noqa: E402

OBJECT = "2c1d5f1e-3a4b-4c5d-8e6f-7a8b9c0d1e2f"


class FirstRequest:
    """A loopback listener that records when the first bytes of each connection arrive."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.arrived = threading.Event()
        self.at = 0.0
        threading.Thread(target=self.serve, daemon=True).start()

    def reset(self) -> None:
        self.arrived.clear()
        self.at = 0.0

    def serve(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self.answer, args=(conn,), daemon=True).start()

    def answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                if not conn.recv(65536):
                    return
            except OSError:
                return
            if not self.arrived.is_set():
                self.at = time.perf_counter()
                self.arrived.set()
            body = b"busy"
            head = f"HTTP/1.1 503 Service Unavailable\r\nContent-Length: {len(body)}\r\n"
            conn.sendall(head.encode() + b"Retry-After: 60\r\nConnection: close\r\n\r\n" + body)


def first_request(cmd: list[str], env: dict[str, str], listener: FirstRequest) -> float:
    """Milliseconds from just before spawning to the first request's arrival."""
    listener.reset()
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        if not listener.arrived.wait(30):
            raise SystemExit(f"{' '.join(cmd[:3])}: no request within 30 s")
        return (listener.at - start) * 1000
    finally:
        proc.kill()
        proc.wait()
        if proc.stderr:
            proc.stderr.close()


def to_exit(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--baseline", type=Path, default=None, help="another tree, interleaved")
    add_record_flag(ap)
    args = ap.parse_args()
    listener = FirstRequest()
    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    client = str(BIN / "score-client")
    python = sys.executable
    base_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ACCESSTOKEN")} | {
        "METADATA_URL": listener.url,
        "STORAGE_URL": listener.url,
        "SCORE_CLIENT_CONF_DIR": str(work / "no-conf"),
    }
    commands = {
        "download": [
            client,
            "--quiet",
            "download",
            "--object-id",
            OBJECT,
            "--output-dir",
            str(work / "out"),
        ],
        "view": [client, "view", "--object-id", OBJECT, "--query", "chr1:1-100"],
        "url": [client, "url", "--object-id", OBJECT],
        "manifest": [client, "manifest", "--manifest", listener.url + "/manifest.tsv"],
    }
    exits = {
        "score-client version": [client, "version"],
        'python -c "import pyscore"': [python, "-c", "import pyscore"],
        "python -c pass": [python, "-c", "pass"],
    }
    trees = {"this tree": base_env}
    if args.baseline:
        trees[f"baseline {args.baseline.name}"] = base_env | {
            "PYTHONPATH": str(args.baseline.resolve() / "src")
        }
    times: dict[tuple[str, str], list[float]] = {}
    load = [os.getloadavg()[0]]
    for run in range(args.runs):
        order = list(trees.items())
        if run % 2:
            order.reverse()
        for tree, env in order:
            for name, cmd in commands.items():
                times.setdefault((tree, name), []).append(first_request(cmd, env, listener))
            for name, cmd in exits.items():
                times.setdefault((tree, name), []).append(to_exit(cmd, env))
    load.append(os.getloadavg()[0])
    names = [*commands, *exits]
    header = "| tree | " + " | ".join(names) + " |"
    rows = [
        f"| {tree} | "
        + " | ".join(f"{statistics.median(times[(tree, n)]):.0f} ms" for n in names)
        + " |"
        for tree in trees
    ]
    table = "\n".join(
        [
            f"### start-up: process start to first request, median of {args.runs} "
            f"({time.strftime('%Y-%m-%d %H:%M')})",
            f"`{' '.join(['.venv/bin/python', 'bench/startup.py', *sys.argv[1:]])}`. A loopback "
            "listener notes the first request's arrival (download, view, url: the service URLs "
            "point at it; manifest: a manifest URL on it); the last three columns are times to "
            "exit. Load average (1 min) "
            f"{load[0]:.1f} at the start, {load[1]:.1f} at the end, on 2 cores.",
            "",
            header,
            "|---|" + "---|" * len(names),
            *rows,
            "",
        ]
    )
    report(table, args)


if __name__ == "__main__":
    main()
