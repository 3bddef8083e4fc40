"""Progress and messages on stderr: rich bars on a terminal, plain periodic lines otherwise,
newline-delimited JSON events with --json, less with --quiet, only errors with --silent.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TextIO

from pyscore.client.errors import ScoreError
from pyscore.wire.files import human_size as human

PLAIN_EVERY = 5.0


@dataclass
class Totals:
    files: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    bytes_expected: int = 0
    bytes_done: int = 0
    bytes_moved: int = 0  # this run only (resumed bytes excluded)
    started: float = field(default_factory=time.monotonic)

    @property
    def seconds(self) -> float:
        return max(time.monotonic() - self.started, 1e-6)


class Reporter:
    """Counts everything; subclasses decide what to show. Thread-safe."""

    def __init__(self, stream: TextIO | None = None, verbosity: str = "normal") -> None:
        self.stream = stream or sys.stderr
        self.verbosity = verbosity  # normal | quiet | silent
        self.totals = Totals()
        self.lock = threading.Lock()
        self.verb = "downloaded"  # or "uploaded"

    # user-facing lines
    def info(self, message: str) -> None:
        if self.verbosity == "normal":
            self._line(message)

    def notice(self, message: str) -> None:
        """Shown unless --silent (e.g. skipped files, the summary)."""
        if self.verbosity != "silent":
            self._line(message)

    def warn(self, message: str) -> None:
        if self.verbosity != "silent":
            self._line(f"WARNING: {message}")

    def error(self, message: str) -> None:
        self._line(f"ERROR: {message}")

    def _line(self, message: str) -> None:
        with self.lock:
            print(message, file=self.stream, flush=True)

    # engine events
    def plan(self, files: int, total_bytes: int) -> None:
        with self.lock:
            self.totals.files = files
            self.totals.bytes_expected = total_bytes

    def started(self, target, already: int) -> None:
        with self.lock:
            self.totals.bytes_done += already

    def advanced(self, target, nbytes: int) -> None:
        with self.lock:
            self.totals.bytes_done += nbytes
            self.totals.bytes_moved += nbytes

    def finished(self, target, seconds: float) -> None:
        with self.lock:
            self.totals.done += 1
        where = f"→ {target.final}" if self.verb == "downloaded" else f"as {target.object_id}"
        self.info(f"{self.verb.capitalize()} {target.file_name} ({human(target.size)}) {where}")

    def failed(self, target, error: ScoreError) -> None:
        self.error(str(error))

    def skipped(self, name: str, reason: str) -> None:
        """A file not fetched, and why (`reason` follows its name: "is already complete...")."""
        with self.lock:
            self.totals.skipped += 1
        self.notice(f"{name} {reason}")

    def close(self) -> None:
        pass

    def summary(self, failed: int) -> str:
        t = self.totals
        rate = t.bytes_moved / t.seconds
        return (
            f"{t.done} {self.verb}, {t.skipped} skipped, {failed} failed; "
            f"{human(t.bytes_moved)} transferred in {t.seconds:.1f} s ({human(rate)}/s)"
        )


class PlainReporter(Reporter):
    """For logs and pipes: one status line every few seconds."""

    def __init__(self, stream: TextIO | None = None, verbosity: str = "normal") -> None:
        super().__init__(stream, verbosity)
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def plan(self, files: int, total_bytes: int) -> None:
        super().plan(files, total_bytes)
        if self.verbosity == "normal" and self.thread is None:
            self.thread = threading.Thread(target=self._tick, daemon=True)
            self.thread.start()

    def _tick(self) -> None:
        while not self.stop.wait(PLAIN_EVERY):
            t = self.totals
            rate = t.bytes_moved / t.seconds
            left = max(t.bytes_expected - t.bytes_done, 0)
            eta = f", ETA {left / rate:.0f} s" if rate > 0 else ""
            pct = 100 * t.bytes_done / t.bytes_expected if t.bytes_expected else 100
            self._line(
                f"{t.done}/{t.files} files, {human(t.bytes_done)} of "
                f"{human(t.bytes_expected)} ({pct:.0f}%), {human(rate)}/s{eta}"
            )

    def close(self) -> None:
        self.stop.set()


class RichReporter(Reporter):
    """A terminal: an overall bar plus one bar per file in flight."""

    def __init__(self, stream: TextIO | None = None, verbosity: str = "normal") -> None:
        super().__init__(stream, verbosity)
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.console = Console(file=self.stream)
        self.progress = Progress(
            TextColumn("{task.description}", justify="left"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.overall = self.progress.add_task("total", total=0)
        self.tasks: dict[str, int] = {}
        self.progress.start()

    def _line(self, message: str) -> None:
        self.console.print(message, highlight=False, markup=False)

    def plan(self, files: int, total_bytes: int) -> None:
        super().plan(files, total_bytes)
        self.progress.update(self.overall, total=total_bytes, description=f"total ({files} files)")

    def started(self, target, already: int) -> None:
        super().started(target, already)
        name = target.file_name if len(target.file_name) < 40 else target.file_name[:37] + "…"
        self.tasks[target.object_id] = self.progress.add_task(
            name, total=target.size, completed=already
        )
        self.progress.advance(self.overall, already)

    def advanced(self, target, nbytes: int) -> None:
        super().advanced(target, nbytes)
        task = self.tasks.get(target.object_id)
        if task is not None:
            self.progress.advance(task, nbytes)
        self.progress.advance(self.overall, nbytes)

    def _drop(self, target) -> None:
        task = self.tasks.pop(target.object_id, None)
        if task is not None:
            self.progress.remove_task(task)

    def finished(self, target, seconds: float) -> None:
        self._drop(target)
        super().finished(target, seconds)

    def failed(self, target, error: ScoreError) -> None:
        self._drop(target)
        super().failed(target, error)

    def close(self) -> None:
        self.progress.stop()


class JsonReporter(Reporter):
    """--json: one JSON object per line on stdout, for scripts and workflow engines."""

    def __init__(self, stream: TextIO | None = None, verbosity: str = "normal") -> None:
        super().__init__(sys.stderr, verbosity)
        self.out = stream or sys.stdout
        self.last: dict[str, float] = {}

    def emit(self, event: str, **fields: object) -> None:
        with self.lock:
            print(
                json.dumps({"event": event, "time": round(time.time(), 3), **fields}),
                file=self.out,
                flush=True,
            )

    def info(self, message: str) -> None:
        self.emit("info", message=message)

    def notice(self, message: str) -> None:
        self.emit("notice", message=message)

    def warn(self, message: str) -> None:
        self.emit("warning", message=message)

    def error(self, message: str) -> None:
        self.emit("error", message=message)

    def plan(self, files: int, total_bytes: int) -> None:
        super().plan(files, total_bytes)
        self.emit("plan", files=files, bytes=total_bytes)

    def started(self, target, already: int) -> None:
        super().started(target, already)
        self.emit(
            "start",
            objectId=target.object_id,
            fileName=target.file_name,
            size=target.size,
            resumedBytes=already,
        )

    def advanced(self, target, nbytes: int) -> None:
        super().advanced(target, nbytes)
        now = time.monotonic()
        if now - self.last.get(target.object_id, 0) >= 1.0:
            self.last[target.object_id] = now
            self.emit(
                "progress",
                objectId=target.object_id,
                bytesDone=self.totals.bytes_done,
                bytesTotal=self.totals.bytes_expected,
            )

    def finished(self, target, seconds: float) -> None:
        with self.lock:
            self.totals.done += 1
        self.emit(
            "done",
            objectId=target.object_id,
            fileName=target.file_name,
            path=str(target.final),
            size=target.size,
            seconds=round(seconds, 3),
        )

    def failed(self, target, error: ScoreError) -> None:
        self.emit(
            "failed",
            objectId=target.object_id,
            fileName=target.file_name,
            error=str(error),
            exitCode=error.exit_code,
        )

    def skipped(self, name: str, reason: str) -> None:
        with self.lock:
            self.totals.skipped += 1
        self.emit("skipped", fileName=name, reason=reason)


def reporter(json_events: bool, quiet: bool, silent: bool) -> Reporter:
    verbosity = "silent" if silent else "quiet" if quiet else "normal"
    if json_events:
        return JsonReporter(verbosity=verbosity)
    if verbosity == "normal" and sys.stderr.isatty():
        return RichReporter(verbosity=verbosity)
    return PlainReporter(verbosity=verbosity)
