"""FUSE mounts of the real score-client for tests: started as subprocesses, waited for with
bounded waits, and always taken down again (fusermount3 -u -z, then kill what is left)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import CLIENT, Server, need

FUSERMOUNT = "fusermount3"
MOUNT_TIMEOUT = 60.0  # s until a started mount must be mounted (a bound, not a time limit)
LOCK_BUG = "Uncaught exception from FUSE operation lock"


@contextlib.contextmanager
def tmpfs(folder: Path, options: str) -> Iterator[None]:
    """A tmpfs mounted on `folder` for the block (a small or a read-only file system); the
    test is skipped where mounting is not allowed (CI, which runs as root, fails instead)."""
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        if os.environ.get("PYSCORE_REQUIRE_TOOLS"):
            pytest.fail(f"cannot mount a tmpfs ({options}): {made.stderr}")
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.strip()})")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def require_fuse() -> None:
    """Skip (fail in CI) where FUSE mounts are not possible."""
    need(FUSERMOUNT)
    if not os.path.exists("/dev/fuse"):
        if os.environ.get("PYSCORE_REQUIRE_TOOLS"):
            pytest.fail("/dev/fuse is required but missing")
        pytest.skip("no /dev/fuse: FUSE mounts are not possible here")


# -- mounts as subprocesses, always cleaned up ----------------------------------------------
@dataclass
class Mount:
    point: Path
    proc: subprocess.Popen | None  # None: a --daemonize mount (its child is found by pgrep)
    log: Path

    @property
    def stderr(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def path(self, *parts: str) -> Path:
        return self.point.joinpath(*parts)


def mount_pids(point: Path) -> list[int]:
    """Ids of processes whose command line names this mount point (pgrep -f)."""
    out = subprocess.run(
        ["pgrep", "-f", "--", f"--mount-point {point}"], capture_output=True, text=True, timeout=10
    )
    return [int(p) for p in out.stdout.split()]


def wait_until(check, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return check()


def tracebacks(log: str) -> int:
    """Python tracebacks in a mount's log, not counting the known FUSE `lock` one (see
    test_posix_locks_work_and_close_logs_no_traceback)."""
    return log.count("Traceback") - log.count(LOCK_BUG)


class Mounter:
    """Starts mounts of the real CLI and takes every one of them down again."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mounts: list[Mount] = []
        self.count = 0

    def point(self) -> Path:
        self.count += 1
        point = self.root / f"mnt{self.count}"
        point.mkdir(parents=True)
        return point

    def env(self, server: Server, token: str | None, extra: dict | None = None) -> dict:
        return {**os.environ, **server.client_env(token), **(extra or {})}

    def start(
        self, server: Server, token: str | None, *args: str, env: dict | None = None
    ) -> Mount:
        """A foreground mount in a Popen, returned once mounted."""
        point = self.point()
        log = point.with_suffix(".log")
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [CLIENT, "mount", "--mount-point", str(point), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=self.env(server, token, env),
            )
        m = Mount(point, proc, log)
        self.mounts.append(m)
        mounted = wait_until(
            lambda: os.path.ismount(point) or proc.poll() is not None, MOUNT_TIMEOUT
        )
        assert mounted and os.path.ismount(point), f"not mounted (exit {proc.poll()}):\n{m.stderr}"
        return m

    def daemonize(
        self, server: Server, token: str | None, *args: str
    ) -> tuple[Mount, subprocess.CompletedProcess]:
        point = self.point()
        m = Mount(point, None, point.with_suffix(".log"))
        self.mounts.append(m)
        result = subprocess.run(
            [CLIENT, "mount", "--mount-point", str(point), "--daemonize", *args],
            capture_output=True,
            text=True,
            timeout=90,
            stdin=subprocess.DEVNULL,
            env=self.env(server, token),
        )
        m.log.write_text(result.stderr)
        return m, result

    def cleanup(self) -> None:
        for m in self.mounts:
            subprocess.run([FUSERMOUNT, "-u", "-z", str(m.point)], capture_output=True, timeout=30)
            procs = [m.proc] if m.proc is not None else []
            for p in procs:
                if p.poll() is None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        p.wait(5)
                if p.poll() is None:
                    p.kill()
                    p.wait(10)
            # the detached child of --daemonize
            if m.proc is None and not wait_until(lambda m=m: not mount_pids(m.point), 5):
                for pid in mount_pids(m.point):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        self.mounts.clear()


def tree(point: Path) -> set[str]:
    """Every file under the mount point, as a relative path (walking with os.walk)."""
    found = set()
    for top, dirs, files in os.walk(point):
        assert len(dirs) + len(files) < 10_000
        for name in files:
            found.add(str(Path(top, name).relative_to(point)))
    return found
