"""The directory where every worker process of one `serve` writes its metrics.

Kept apart from metrics.py because prometheus-client decides at import whether it runs in
multiprocess mode: `serve` must set PROMETHEUS_MULTIPROC_DIR before anything imports it
(granian forks its workers from the serving process)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


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
    return Path(tempfile.mkdtemp(prefix="pyscore-metrics-")), True


def remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
