"""Manifest files: the File Repository's download TSV (ARGO, ICGC 25K, GDC) and Song's upload
manifest. Shared by the server (which writes them) and the client (which reads them).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Optional

from pyscore.wire import tsv
from pyscore.wire.codec import WireError

ARGO_COLUMNS = (
    "repository_code",
    "analysis_id",
    "object_id",
    "file_type",
    "file_name",
    "file_size",
    "md5sum",
    "index_object_id",
    "donor_id",
    "sample_id(s)",
    "program_id",
)
GDC_REQUIRED = ("id",)


class ManifestError(WireError):
    """A manifest that cannot be read; the message names the line and the problem."""


@dataclass
class ManifestRow:
    """One row of a download manifest, whatever its dialect (ARGO, ICGC 25K, GDC)."""

    objectId: str
    fileName: Optional[str] = None
    fileSize: Optional[int] = None
    fileMd5sum: Optional[str] = None
    analysisId: Optional[str] = None
    indexObjectId: Optional[str] = None
    studyId: Optional[str] = None
    line: int = 0


def format_argo(rows: Iterable[dict[str, object]]) -> str:
    """The ARGO "File Manifest" TSV: one data file per row, its index by index_object_id;
    cells made safe by `tsv.cell` (which `parse_download` undoes)."""
    lines = [tsv.row(ARGO_COLUMNS)]
    lines += [tsv.row(row.get(c) for c in ARGO_COLUMNS) for row in rows]
    return "\n".join(lines) + "\n"


def _object_id(value: str, where: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ManifestError(f"{where}: '{value}' is not an object id (a UUID)") from None


def _int(value: str, where: str) -> int | None:
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ManifestError(f"{where}: file size '{value}' is not a whole number") from None


def _cells(line: str) -> list[str]:
    """A line's cells, trimmed, each as it was before `tsv.cell` guarded it."""
    return [tsv.uncell(c.strip()) for c in line.split("\t")]


def _body(
    lines: list[str], source: str, columns: int, expected: str
) -> Iterator[tuple[int, str, list[str]]]:
    """(line number, where, cells) of each non-blank line after the first, each of which
    must have `columns` cells."""
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = _cells(line)
        where = f"{source} line {number}"
        if len(cells) != columns:
            raise ManifestError(f"{where}: expected {expected}, found {len(cells)}")
        yield number, where, cells


def parse_download(text: str, source: str) -> list[ManifestRow]:
    """Rows of a download manifest, in order; bad input raises one-line ManifestErrors."""
    if source.lower().endswith(".xml") or text.lstrip().startswith("<"):
        raise ManifestError(
            f"Manifest '{source}' looks like a GNOS-format XML manifest; please use "
            "a tab-delimited manifest from the File Repository"
        )
    lines = text.splitlines()
    if not lines or not any(line.strip() for line in lines[1:]):
        raise ManifestError(f"Manifest '{source}' is empty")
    header = [h.strip().lower() for h in lines[0].split("\t")]
    if "id" in header and "filename" in header:
        return _parse_gdc(lines, header, source)
    rows = []
    for number, where, cells in _body(lines, source, 11, "11 tab-separated columns"):
        rows.append(
            ManifestRow(
                objectId=_object_id(cells[2], f"{where} column 3 (object_id)"),
                analysisId=cells[1] or None,
                fileName=cells[4] or None,
                fileSize=_int(cells[5], f"{where} column 6 (file_size)"),
                fileMd5sum=cells[6].lower() or None,
                indexObjectId=(
                    _object_id(cells[7], f"{where} column 8 (index_object_id)")
                    if cells[7]
                    else None
                ),
                studyId=cells[10] or None,
                line=number,
            )
        )
    return rows


def _parse_gdc(lines: list[str], header: list[str], source: str) -> list[ManifestRow]:
    col = {name: i for i, name in enumerate(header)}
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = _cells(line)
        where = f"{source} line {number}"
        if len(cells) != len(header):
            raise ManifestError(
                f"{where}: expected {len(header)} tab-separated columns, found {len(cells)}"
            )

        def get(name: str, cells: list[str] = cells) -> str:
            return cells[col[name]] if name in col else ""

        rows.append(
            ManifestRow(
                objectId=_object_id(get("id"), f"{where} column {col['id'] + 1} (id)"),
                fileName=get("filename") or None,
                fileSize=_int(get("size"), f"{where} column (size)"),
                fileMd5sum=get("md5").lower() or None,
                line=number,
            )
        )
    return rows


def parse_upload(text: str, source: str) -> tuple[str | None, list[tuple[str, str, str]]]:
    """Song's upload manifest: first line '<analysisId>\\t\\t' (or a header), then
    objectId, path, md5 per line. Returns (analysis id or None, rows)."""
    lines = text.splitlines()
    if not lines:
        raise ManifestError(f"Upload manifest '{source}' is empty")
    first = [c.strip() for c in lines[0].split("\t")]
    analysis_id = first[0] if len(first) >= 1 and not any(first[1:]) and first[0] else None
    rows = []
    for _, where, cells in _body(
        lines, source, 3, "3 tab-separated columns (object id, path, md5)"
    ):
        object_id = _object_id(cells[0], f"{where} column 1")
        md5 = cells[2].lower()
        if len(md5) != 32 or any(c not in "0123456789abcdef" for c in md5):
            raise ManifestError(f"{where} column 3: '{cells[2]}' is not an MD5 (32 hex digits)")
        rows.append((object_id, cells[1], md5))
    if not rows:
        raise ManifestError(f"Upload manifest '{source}' lists no files")
    return analysis_id, rows
