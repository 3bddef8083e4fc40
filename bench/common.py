"""What every benchmark needs: a platform serving some files, peak RSS, and the results file."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_of(proc: subprocess.Popen) -> int:
    """Wait for a child and return its peak RSS in KiB (VmHWM, sampled every 20 ms: wait4's
    ru_maxrss would include the parent's memory at fork time)."""
    chunks: list[bytes] = []
    reader = None
    if proc.stderr is not None:
        import threading

        reader = threading.Thread(target=lambda: chunks.append(proc.stderr.read()), daemon=True)
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
    proc.stderr_text = b"".join(chunks).decode(errors="replace")  # type: ignore[attr-defined]
    return peak


def record(text: str) -> None:
    with open(RESULTS, "a") as f:
        f.write(text + "\n")


class Platform:
    """`score-server init` + publish files + `serve` on a free port, for a `with` block."""

    def __init__(self, data_dir: Path, files: list[Path], access: str = "open",
                 part_mib: int | None = None, workers: int = 1, extra_env: dict | None = None):
        self.data_dir, self.files, self.access = data_dir, files, access
        self.part_mib, self.workers, self.extra_env = part_mib, workers, extra_env or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.object_ids: list[str] = []

    def __enter__(self) -> Platform:
        from tests.publish import publish

        extra = ["--part-size", str(self.part_mib)] if self.part_mib else []
        out = subprocess.run([str(BIN / "score-server"), "init", "--data-dir",
                              str(self.data_dir), *extra], capture_output=True, text=True,
                             check=True)
        self.admin_token = out.stdout.strip().splitlines()[-1]
        self.object_ids = publish(self.data_dir, self.files, study="BENCH", access=self.access)
        self.log = open(self.data_dir / "server.log", "ab")
        self.proc = subprocess.Popen(
            [str(BIN / "score-server"), "serve", "--data-dir", str(self.data_dir), "--port",
             str(self.port), "--workers", str(self.workers)], stdout=self.log,
            stderr=subprocess.STDOUT, env={**os.environ, **self.extra_env})
        for _ in range(300):
            try:
                if httpx.get(f"{self.url}/isAlive", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()

    def client_env(self, token: str = "") -> dict[str, str]:
        return {"METADATA_URL": self.url, "STORAGE_URL": self.url, "ACCESSTOKEN": token}
