"""Regions as the original's --query and --bed-query give them, checked against a file's
header: `seq`, `seq:start`, `seq:start-end` (1-based, inclusive), BED lines (0-based,
half-open), and '*' for unplaced unmapped reads."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from pyscore.client.errors import UsageError

REGION = re.compile(r"^(?P<contig>[^:]+?)(?::(?P<start>[\d,]+)(?:-(?P<end>[\d,]+))?)?$")
UNMAPPED = "*"


@dataclass(frozen=True)
class Region:
    contig: str
    start: Optional[int] = None  # 1-based, inclusive
    end: Optional[int] = None

    def label(self) -> str:
        if self.start is None:
            return self.contig
        return f"{self.contig}:{self.start}" + (f"-{self.end}" if self.end is not None else "")


def parse_region(text: str) -> Region:
    """`seq`, `seq:start` or `seq:start-end` (1-based, inclusive; commas allowed)."""
    match = REGION.match(text.strip())
    if not match:
        raise UsageError(f"Bad region {text!r}: use contig, contig:start or contig:start-end")
    start = int(match["start"].replace(",", "")) if match["start"] else None
    end = int(match["end"].replace(",", "")) if match["end"] else None
    if start is not None and start < 1:
        raise UsageError(f"Bad region {text!r}: positions start at 1")
    if start is not None and end is not None and end < start:
        raise UsageError(f"Bad region {text!r}: end {end:,} is before start {start:,}")
    return Region(match["contig"], start, end)


def parse_bed(path: Path) -> list[Region]:
    """BED lines (0-based, half-open) as 1-based regions; header/comment lines skipped."""
    regions = []
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise UsageError(f"Cannot read BED file {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith(("#", "track", "browser")):
            continue
        cells = line.split("\t")
        try:
            start, end = int(cells[1]), int(cells[2])
        except (IndexError, ValueError):
            raise UsageError(f"{path} line {number}: expected contig<TAB>start<TAB>end") from None
        if end <= start:
            raise UsageError(f"{path} line {number}: end {end} is not after start {start}")
        regions.append(Region(cells[0], start + 1, end))
    return regions


def check_region(region: Region, contigs: dict[str, int], name: str) -> tuple[str, int, int]:
    """The region as pysam's 0-based half-open coordinates, validated against the header.
    '*' (unplaced unmapped reads) comes back as ('*', 0, 0)."""
    if region.contig == UNMAPPED and region.start is None and UNMAPPED not in contigs:
        return UNMAPPED, 0, 0
    if region.contig not in contigs:
        known = ", ".join(list(contigs)[:10]) + (", ..." if len(contigs) > 10 else "")
        raise UsageError(f"{name}: unknown contig '{region.contig}' (the file has {known})")
    length = contigs[region.contig]
    start = (region.start or 1) - 1
    if start >= length:
        raise UsageError(
            f"{name}: {region.label()} starts beyond the end of {region.contig} ({length:,} bp)"
        )
    end = min(region.end if region.end is not None else length, length)
    return region.contig, start, end
