"""Song's identifiers and states: ids minted as SONG's LocalIdService mints them, ISO times."""

from __future__ import annotations

import uuid

STATES = ("PUBLISHED", "UNPUBLISHED", "SUPPRESSED")
# SONG's IdConfig: name-based (SHA-1) UUIDs in RFC 4122's X.500 namespace
SONG_NAMESPACE = uuid.UUID("6ba7b812-9dad-11d1-80b4-00c04fd430c8")
BASE_KEYS = {"studyId", "analysisId", "analysisType", "samples", "files", "analysisState"}


def song_id(*keys: str) -> str:
    """The id SONG's LocalIdService gives: uuid5 of the keys joined by ':' (studyId and
    submitter id for a donor, specimen or sample; analysisId and file name for an object),
    so the same submission names the same objects on SONG and here."""
    return str(uuid.uuid5(SONG_NAMESPACE, ":".join(keys)))


INT64 = 2**63 - 1  # Song's file sizes are Java longs
