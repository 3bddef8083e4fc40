"""What the metadata says of studies' analyses and files, as plain records a notebook can
print, filter, or turn into a pandas DataFrame (`to_frame`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, TypeVar

from pyscore.client.errors import ScoreError
from pyscore.wire.files import find_index

if TYPE_CHECKING:
    import pandas

T = TypeVar("T")


@dataclass(frozen=True)
class FileInfo:
    """One file of a published (or named) analysis, as Song describes it."""

    object_id: str
    name: str
    size: int
    md5: str
    study: str
    analysis: str
    access: str  # "open" or "controlled"
    file_type: str = ""
    data_type: str = ""
    index_object_id: Optional[str] = None  # the .bai/.crai/.tbi/.csi beside it, if any


@dataclass(frozen=True)
class AnalysisInfo:
    """One analysis: its state, type, when it was published, and its files."""

    analysis_id: str
    study: str
    state: str
    analysis_type: str
    published_at: str  # ISO 8601, "" when never published
    files: tuple[FileInfo, ...] = ()


class Records(list[T]):
    """A list of records that becomes a pandas DataFrame on request (pandas is optional)."""

    def to_frame(self) -> pandas.DataFrame:
        """One row per record, one column per field (an analysis's files as their count)."""
        try:
            import pandas
        except ImportError:
            raise ScoreError("to_frame() needs pandas: pip install pandas") from None
        rows = []
        for record in self:
            row = dataclasses.asdict(record)  # type: ignore[call-overload]
            if "files" in row:
                row["files"] = len(row["files"])
            rows.append(row)
        return pandas.DataFrame(rows)


def analysis_from(body: Any, what: str) -> AnalysisInfo:
    """Song's analysis JSON as a record; each data file linked to its index beside it."""
    if not isinstance(body, dict) or not isinstance(body.get("files", []), list):
        raise ScoreError(f"{what}: the answer is not an analysis")
    try:
        entries = [f for f in body.get("files", []) if isinstance(f, dict)]
        by_name = {str(f["fileName"]).lower(): str(f["objectId"]) for f in entries}
        files = tuple(
            FileInfo(
                object_id=str(f["objectId"]),
                name=str(f["fileName"]),
                size=int(f.get("fileSize") or 0),
                md5=str(f.get("fileMd5sum") or "").lower(),
                study=str(f.get("studyId") or body.get("studyId") or ""),
                analysis=str(f.get("analysisId") or body.get("analysisId") or ""),
                access=str(f.get("fileAccess") or ""),
                file_type=str(f.get("fileType") or ""),
                data_type=str(f.get("dataType") or ""),
                index_object_id=_index_id(str(f["fileName"]), str(f["objectId"]), by_name),
            )
            for f in entries
        )
        return AnalysisInfo(
            analysis_id=str(body["analysisId"]),
            study=str(body.get("studyId") or ""),
            state=str(body.get("analysisState") or ""),
            analysis_type=str((body.get("analysisType") or {}).get("name") or ""),
            published_at=str(body.get("publishedAt") or body.get("firstPublishedAt") or ""),
            files=files,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ScoreError(f"{what}: the answer lacks {exc} or has it in another shape") from None


def _index_id(name: str, object_id: str, by_name: dict[str, str]) -> Optional[str]:
    found = find_index(name, by_name)
    return found if found != object_id else None
