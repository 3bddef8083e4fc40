"""Song's identifiers and states: ids derived from content, ISO times."""

from __future__ import annotations

import uuid

STATES = ("PUBLISHED", "UNPUBLISHED", "SUPPRESSED")
ID_NAMESPACE = uuid.UUID("6f1e1d3e-2b7a-4c1e-9a43-5c0f0e5d9b11")
BASE_KEYS = {"studyId", "analysisId", "analysisType", "samples", "files", "analysisState"}


def derived_id(*parts: str) -> str:
    """Stable ids for things identified by submitter ids, so resubmission reuses them."""
    return str(uuid.uuid5(ID_NAMESPACE, "/".join(parts)))


def entity_id(prefix: str, *parts: str) -> str:
    """Song-style donor/specimen/sample ids (DO…, SP…, SA…), stable per study and submitter id."""
    return prefix + uuid.uuid5(ID_NAMESPACE, "/".join(parts)).hex[:12].upper()


INT64 = 2**63 - 1  # Song's file sizes are Java longs
