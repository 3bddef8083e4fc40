"""The directory where every worker process of one `serve` writes its metrics.

Kept apart from metrics.py because prometheus-client decides at import whether it runs in
multiprocess mode: `serve` must set PROMETHEUS_MULTIPROC_DIR before anything imports it
(granian forks its workers from the serving process)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "pyscore-metrics-"


def prepare_dir(configured: str = "") -> tuple[Path, bool]:
    """The multiprocess directory for one `serve`: the operator's (emptied of an earlier
    run's files, which would otherwise be added to this run's counts), else a new private
    one. Returns it and whether it is ours to remove at the end."""
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        return path, False
    remove_orphans()
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")), True


def remove_orphans() -> None:
    """The directories of `serve` processes that are gone without removing theirs (killed
    by SIGKILL, or the machine's OOM killer): each is named after its server's pid."""
    for path in Path(tempfile.gettempdir()).glob(f"{PREFIX}*-*"):
        pid = path.name[len(PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not running(int(pid)):
            remove_dir(path)


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another account's
        return True
    return True


def remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
