"""SONG's records as the importer reads them, from its database or its HTTP API alike:
studies, analysis types, donors, specimens and samples in the shapes of SONG's JSON, analyses
as SongAnalysis, times as UTC datetimes; and a token per record, so a second run knows what it
has seen."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Optional, Protocol

# The fields of SONG's Analysis JSON; every other field is the analysis's dynamic data
ANALYSIS_KEYS = {
    "analysisId",
    "studyId",
    "analysisState",
    "analysisType",
    "createdAt",
    "updatedAt",
    "firstPublishedAt",
    "publishedAt",
    "analysisStateHistory",
    "samples",
    "files",
}


class SourceError(Exception):
    """SONG cannot be read (unreachable, not SONG, refused): one line for the operator."""


_ISO = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d)(?::(\d\d)(?:\.(\d{1,9}))?)?"
    r"(Z|[+-]\d\d:?\d\d)?"
)


def song_time(value: Any) -> Optional[datetime]:
    """A time as SONG writes it: a LocalDateTime (no zone: SONG's clock, taken as UTC), in
    ISO text with 0-9 fraction digits, or as Jackson's array [y, m, d, h, min, s, nanos]."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, list) and 3 <= len(value) <= 7 and all(isinstance(x, int) for x in value):
        nanos = value[6] if len(value) == 7 else 0
        return datetime(*value[:6], nanos // 1000, tzinfo=timezone.utc)  # type: ignore[misc]
    if isinstance(value, str):
        m = _ISO.fullmatch(value.strip())
        if m:
            y, mo, d, h, mi, s, frac, zone = m.groups()
            at = datetime(
                int(y),
                int(mo),
                int(d),
                int(h),
                int(mi),
                int(s or 0),
                int((frac or "0").ljust(6, "0")[:6]),
                tzinfo=timezone.utc,
            )
            if zone and zone != "Z":
                sign = 1 if zone[0] == "+" else -1
                hours, minutes = int(zone[1:3]), int(zone[-2:])
                at -= sign * timedelta(hours=hours, minutes=minutes)
            return at
    raise ValueError(f"not a time SONG writes: {value!r}")


def digest(value: Any) -> str:
    """A record's token: a hash of its canonical JSON."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode()).hexdigest()


@dataclass
class SongAnalysis:
    """One analysis of SONG with everything pyscore keeps of it; `files` in SONG's JSON."""

    analysis_id: str
    study_id: str
    state: Optional[str]
    type_name: Optional[str]
    type_version: Optional[int]
    data: dict
    created_at: Optional[datetime]
    updated_at: Optional[datetime]
    history: list[tuple[str, str, Optional[datetime]]] = field(default_factory=list)
    sample_ids: list[str] = field(default_factory=list)
    files: list[dict] = field(default_factory=list)

    def token(self) -> str:
        return digest(
            [
                self.analysis_id,
                self.study_id,
                self.state,
                self.type_name,
                self.type_version,
                self.data,
                self.created_at,
                self.updated_at,
                self.history,
                sorted(self.sample_ids),
                sorted(self.files, key=lambda f: str(f.get("objectId"))),
            ]
        )


def analysis_from_json(body: dict) -> SongAnalysis:
    """SongAnalysis from SONG's Analysis JSON (GET /studies/{s}/analysis/...)."""
    kind = body.get("analysisType") or {}
    history = [
        (h.get("initialState"), h.get("updatedState"), song_time(h.get("updatedAt")))
        for h in body.get("analysisStateHistory") or []
    ]
    return SongAnalysis(
        analysis_id=body["analysisId"],
        study_id=body["studyId"],
        state=body.get("analysisState"),
        type_name=kind.get("name"),
        type_version=kind.get("version"),
        data={k: v for k, v in body.items() if k not in ANALYSIS_KEYS},
        created_at=song_time(body.get("createdAt")),
        updated_at=song_time(body.get("updatedAt")),
        history=history,
        sample_ids=[s["sampleId"] for s in body.get("samples") or []],
        files=list(body.get("files") or []),
    )


@dataclass
class Page:
    """A page of a study's analyses: each id's token, in the source's order, and how to read
    the whole of those that changed (the database reads only those; HTTP has them all)."""

    tokens: dict[str, str]
    fetch: Callable[[list[str]], list[SongAnalysis]]


class Source(Protocol):
    """What the importer reads of SONG; SONG's JSON shapes throughout."""

    where: str  # for messages: the URL, without credentials

    def studies(self) -> list[dict]:
        """Study JSON: studyId, name, organization, description, info."""
        ...

    def analysis_types(self) -> Iterator[dict]:
        """Every version: name, version, createdAt, schema (unrendered), options.fileTypes."""
        ...

    def donors(self, study_id: str) -> Iterator[dict]:
        """Donor JSON, those no analysis uses included."""
        ...

    def specimens(self, study_id: str) -> Iterator[dict]:
        """Specimen JSON, each with its donorId."""
        ...

    def samples(self, study_id: str) -> Iterator[dict]:
        """Sample JSON, each with its specimenId."""
        ...

    def count(self, study_id: str) -> int:
        """The study's analyses, in all three states."""
        ...

    def pages(self, study_id: str, size: int) -> Iterator[Page]:
        """The study's analyses, in all three states, `size` at a time."""
        ...

    def fingerprint(self, study_id: str, kind: str) -> Optional[str]:
        """One token for all of a study's donors, specimens, samples or analyses (`kind`), if
        the source can tell it cheaply; None otherwise."""
        ...

    def close(self) -> None: ...
