"""Sets of byte ranges, and the journal that records which ranges of a download are on disk."""

from __future__ import annotations

import bisect
import json
import os
from pathlib import Path

from pyscore.client.safefiles import open_private


class Ranges:
    """Disjoint, sorted half-open intervals [start, end) with merging on insert."""

    def __init__(self, spans: list[tuple[int, int]] | None = None) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        for start, end in spans or []:
            self.add(start, end)

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        i = bisect.bisect_left(self.ends, start)  # first span that ends at or after start
        j = bisect.bisect_right(self.starts, end)  # spans starting at or before end
        if i < j:
            start = min(start, self.starts[i])
            end = max(end, self.ends[j - 1])
        self.starts[i:j] = [start]
        self.ends[i:j] = [end]

    def spans(self) -> list[tuple[int, int]]:
        return list(zip(self.starts, self.ends))

    def total(self) -> int:
        return sum(e - s for s, e in zip(self.starts, self.ends))

    def end_of_run(self, pos: int) -> int:
        """How far the data runs contiguously from pos (pos itself if nothing covers it)."""
        i = bisect.bisect_right(self.starts, pos) - 1
        if i >= 0 and self.ends[i] > pos:
            return self.ends[i]
        return pos

    def missing(self, start: int, end: int) -> list[tuple[int, int]]:
        """The gaps of [start, end) not covered."""
        gaps = []
        pos = start
        for s, e in self.spans():
            if e <= pos:
                continue
            if s >= end:
                break
            if s > pos:
                gaps.append((pos, min(s, end)))
            pos = max(pos, e)
            if pos >= end:
                break
        if pos < end:
            gaps.append((pos, end))
        return gaps


class Journal:
    """Append-only record of the ranges of a `.part` file that reached the disk.

    First line: JSON identifying the object (a mismatch means "start over"); then one
    "start end" line per range, appended only after the data was fdatasync'ed. A torn last
    line (kill -9 mid-append) is ignored.
    """

    def __init__(self, path: Path, identity: dict[str, object]) -> None:
        self.path = path
        self.identity = identity
        self.fd: int | None = None

    def load(self) -> Ranges:
        """The recorded ranges, or none if the journal is absent or for another object."""
        try:
            fd = open_private(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return Ranges()
        with os.fdopen(fd) as f:
            text = f.read()
        lines = text.split("\n")
        try:
            if json.loads(lines[0]) != self.identity:
                return Ranges()
        except json.JSONDecodeError:
            return Ranges()
        done = Ranges()
        for line in lines[1:-1]:  # the last element is either "" or a torn line
            parts = line.split()
            if len(parts) == 2 and all(p.isdigit() for p in parts):
                done.add(int(parts[0]), int(parts[1]))
        return done

    def open(self, done: Ranges) -> None:
        """Rewrite the journal compactly with `done`, then keep it open for appends."""
        tmp = self.path.with_suffix(".tmp")
        body = json.dumps(self.identity, sort_keys=True) + "\n"
        body += "".join(f"{s} {e}\n" for s, e in done.spans())
        with os.fdopen(open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "w") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.fd = open_private(self.path, os.O_WRONLY | os.O_APPEND)

    def append(self, spans: list[tuple[int, int]]) -> None:
        if spans and self.fd is not None:
            os.write(self.fd, "".join(f"{s} {e}\n" for s, e in spans).encode())
            os.fsync(self.fd)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
