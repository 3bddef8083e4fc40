"""Reading a running SONG through its open HTTP API (no token needed): /studies/all,
/studies/{s}, /studies/{s}/all (donors, specimens and samples, those no analysis uses
included), /studies/{s}/analysis/paginated in all three states, and /schemas with every version
(unrendered; SONG's offset counts elements). Standard library only: the server loads no HTTP
client library."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any, Optional

from pyscore.server.importing.records import (
    Page,
    SongAnalysis,
    SourceError,
    analysis_from_json,
    digest,
)

STATES = "PUBLISHED,UNPUBLISHED,SUPPRESSED"
TIMEOUT = 120.0
SCHEMA_PAGE = 100


def _quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")


class SongApi:
    def __init__(self, url: str, timeout: float = TIMEOUT) -> None:
        self.base = url.rstrip("/")
        parts = urllib.parse.urlsplit(self.base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SourceError(f"--song-url must be an http(s) URL, not {url!r}")
        self.where = self.base
        self.timeout = timeout
        self._entities: tuple[str, list[dict]] | None = None  # one study's /all at a time

    def _get(self, path: str, **params: Any) -> Any:
        url = self.base + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                raise SourceError(f"SONG at {self.base} answered {exc.code} to {path}") from None
        except (OSError, ValueError) as exc:  # refused, unresolvable, timed out
            reason = getattr(exc, "reason", exc)
            raise SourceError(f"cannot reach SONG at {self.base}: {reason}") from None
        try:
            return json.loads(body)
        except ValueError:
            raise SourceError(
                f"{self.base}{path} did not answer JSON: is {self.base} SONG's API?"
            ) from None

    def _expect(self, value: Any, kind: type, path: str) -> Any:
        if not isinstance(value, kind):
            raise SourceError(f"{self.base}{path} did not answer as SONG does")
        return value

    def studies(self) -> list[dict]:
        ids = self._expect(self._get("/studies/all"), list, "/studies/all")
        out = []
        for study_id in ids:
            path = f"/studies/{_quote(study_id)}"
            out.append(self._expect(self._get(path), dict, path))
        return out

    def analysis_types(self) -> Iterator[dict]:
        offset = 0
        while True:
            page = self._expect(
                self._get(
                    "/schemas",
                    hideSchema="false",
                    unrenderedOnly="true",
                    limit=SCHEMA_PAGE,
                    offset=offset,
                ),
                dict,
                "/schemas",
            )
            rows = page.get("resultSet") or []
            yield from rows
            offset += len(rows)
            if not rows or offset >= int(page.get("count") or 0):
                return

    def _donors(self, study_id: str) -> list[dict]:
        if self._entities is None or self._entities[0] != study_id:
            path = f"/studies/{_quote(study_id)}/all"
            body = self._expect(self._get(path), dict, path)
            self._entities = (study_id, list(body.get("donors") or []))
        return self._entities[1]

    def donors(self, study_id: str) -> Iterator[dict]:
        for donor in self._donors(study_id):
            yield {k: v for k, v in donor.items() if k != "specimens"}

    def specimens(self, study_id: str) -> Iterator[dict]:
        for donor in self._donors(study_id):
            for specimen in donor.get("specimens") or []:
                yield {
                    **{k: v for k, v in specimen.items() if k != "samples"},
                    "donorId": specimen.get("donorId") or donor["donorId"],
                }

    def samples(self, study_id: str) -> Iterator[dict]:
        for donor in self._donors(study_id):
            for specimen in donor.get("specimens") or []:
                for sample in specimen.get("samples") or []:
                    yield {
                        **sample,
                        "specimenId": sample.get("specimenId") or specimen["specimenId"],
                    }

    def _page(self, study_id: str, size: int, offset: int) -> dict:
        path = f"/studies/{_quote(study_id)}/analysis/paginated"
        return self._expect(
            self._get(path, analysisStates=STATES, limit=size, offset=offset), dict, path
        )

    def count(self, study_id: str) -> int:
        return int(self._page(study_id, 1, 0).get("totalAnalyses") or 0)

    def pages(self, study_id: str, size: int) -> Iterator[Page]:
        offset = 0
        while True:
            rows = self._page(study_id, size, offset).get("analyses") or []
            if not rows:
                return
            try:
                records = {a.analysis_id: a for a in map(analysis_from_json, rows)}
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise SourceError(
                    f"an analysis of study {study_id} is not SONG's Analysis JSON: {exc}"
                ) from None
            yield Page({i: a.token() for i, a in records.items()}, _picker(records))
            offset += len(rows)

    def fingerprint(self, study_id: str, kind: str) -> Optional[str]:
        """The study's entities come in one answer: its hash (analyses: none, they are read
        page by page anyway)."""
        if kind == "analysis":
            return None
        return "api:" + digest(self._donors(study_id))

    def close(self) -> None:
        self._entities = None


def _picker(records: dict[str, SongAnalysis]):
    def pick(ids: list[str]) -> list[SongAnalysis]:
        return [records[i] for i in ids if i in records]

    return pick
