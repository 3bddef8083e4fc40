"""Search of a study's analyses by ids and by info fields."""

from __future__ import annotations

import importlib
import re
import sys
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pyscore.server.errors import bad_request
from pyscore.server.metadata.analyses import analyses_json
from pyscore.server.metadata.studies import get_study
from pyscore.server.tables import (
    Analysis,
    AnalysisSample,
    Donor,
    File,
    Sample,
    Specimen,
)

# Song's IdSearchRequest: each term a regular expression matched case-insensitively
# anywhere in its column (PostgreSQL's `~*` over Song's idview), ".*" when not given.
ID_TERMS = {
    "donorId": Donor.donor_id,
    "specimenId": Specimen.specimen_id,
    "sampleId": Sample.sample_id,
    "objectId": File.object_id,
    "submitterDonorId": Donor.submitter_donor_id,
    "submitterSpecimenId": Specimen.submitter_specimen_id,
    "submitterSampleId": Sample.submitter_sample_id,
}
ALIASES = {  # the GET's parameter; the POST body's field names (Lombok's, plural)
    "fileId": "objectId",
    "submitterDonorIds": "submitterDonorId",
    "submitterSpecimenIds": "submitterSpecimenId",
}
MAX_PATTERN = 256
_parser = importlib.import_module("re._parser" if sys.version_info >= (3, 11) else "sre_parse")


def id_pattern(term: str, text: Any) -> re.Pattern[str]:
    """A search term as a regular expression, refused (400 search.term.syntax) when it is
    not one or could take long: backtracking grows with every repetition a pattern has, so
    a pattern may repeat one thing (`DO.*`, `^SA[0-9]+$`), not more, and not inside a group
    that repeats or alternates."""
    if not isinstance(text, str) or len(text) > MAX_PATTERN:
        raise bad_request(
            "search.term.syntax",
            f"{term} must be a regular expression of at most {MAX_PATTERN} characters",
        )
    try:
        compiled = re.compile(text, re.IGNORECASE)
        repeats = _repeats(_parser.parse(text), False)
    except (re.error, RecursionError, ValueError) as exc:
        raise bad_request(
            "search.term.syntax", f"{term}: {text!r} is not a regular expression: {exc}"
        ) from None
    if repeats > 1:
        raise bad_request(
            "search.term.syntax",
            f"{term}: {text!r} repeats more than one thing (or repeats within a repetition, "
            "or refers back); one repetition per term is accepted",
        )
    return compiled


def _repeats(items: Any, inside: bool) -> int:
    """How many repetitions a parsed pattern holds: 2 (refused) for one inside another, an
    alternation inside one, or a backreference anywhere; alternatives count as their most."""
    count = 0
    for op, av in items:
        name = str(op)
        if name.startswith("GROUPREF"):
            return 2
        if name.endswith("REPEAT"):
            low, high, sub = av
            varies = high > 1 and high != low  # x{3} is xxx: nothing to backtrack
            if varies and inside:
                return 2
            count += varies + _repeats(sub, inside or varies)
        elif name == "BRANCH":
            if inside:
                return 2
            count += max(_repeats(b, inside) for b in av[1])
        elif name == "SUBPATTERN":
            count += _repeats(av[-1], inside)
        elif name == "ATOMIC_GROUP":
            count += _repeats(av, inside)
        elif name in ("ASSERT", "ASSERT_NOT"):
            count += _repeats(av[1], inside)
    return count


def search_by_id(session: Session, study_id: str, terms: dict[str, Any]) -> list[dict]:
    """Song's IdSearch (GET and POST /studies/{s}/analysis/search/id): the study's analyses,
    whatever their state, with a sample, specimen, donor and file whose ids (and submitter
    ids) each match their term."""
    get_study(session, study_id)
    wanted = {
        ALIASES.get(k, k): id_pattern(k, v)
        for k, v in terms.items()
        if ALIASES.get(k, k) in ID_TERMS and v is not None
    }
    columns = [ID_TERMS[k] for k in wanted]
    rows = session.execute(
        select(Analysis.analysis_id, *columns)
        .join(AnalysisSample, AnalysisSample.analysis_id == Analysis.analysis_id)
        .join(Sample, Sample.sample_id == AnalysisSample.sample_id)
        .join(Specimen, Specimen.specimen_id == Sample.specimen_id)
        .join(Donor, Donor.donor_id == Specimen.donor_id)
        .join(File, File.analysis_id == Analysis.analysis_id)
        .where(Analysis.study_id == study_id)
        .distinct()
    )
    patterns = list(wanted.values())
    found = {
        row[0] for row in rows if all(p.search(value or "") for p, value in zip(patterns, row[1:]))
    }
    if not found:
        return []
    analyses = session.scalars(
        select(Analysis)
        .where(Analysis.analysis_id.in_(found))
        .order_by(Analysis.created_at, Analysis.analysis_id)
    )
    return analyses_json(session, list(analyses))


def _matches(document: Any, path: list[str], value: str) -> bool:
    for key in path:
        if not isinstance(document, dict) or key not in document:
            return False
        document = document[key]
    if isinstance(document, list):
        return any(str(v) == value for v in document)
    return str(document) == value


def search_by_info(
    session: Session, study_id: str, include_info: bool, terms: dict[str, str]
) -> list[dict]:
    """Song's /analysis/search/info: analyses whose info (or payload) fields equal the terms."""
    get_study(session, study_id)
    out = []
    for row in session.scalars(
        select(Analysis).where(Analysis.study_id == study_id).order_by(Analysis.created_at)
    ):
        doc = row.payload or {}
        if all(
            _matches(doc.get("info", {}), k.split("."), v) or _matches(doc, k.split("."), v)
            for k, v in terms.items()
        ):
            found = {"analysisId": row.analysis_id}
            if include_info:
                found["info"] = doc.get("info", {})
            out.append(found)
    return out
