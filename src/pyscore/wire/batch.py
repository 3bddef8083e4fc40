"""pyscore's batch lookups: many objects' download specifications, or many entities, in one
request. An extension: the original Score and Song have nothing like it, so a client asks for
it only where a server has said it offers it.

Discovery: every answer of a pyscore server carries `Pyscore-Batch: max=<n>` (at most n ids
per batch). A client learns it from the first answer it gets anyway (a download spec, an
entity) and sends later lookups in batches; a server that does not say so (the original,
an older pyscore) gets today's one request per object.

Uploads too, under the same header: `POST /upload/batch/start` begins (or finds, to resume)
the uploads of many objects, `POST /upload/batch/finish` records their sent parts and completes
them; a client sends its files' parts to the URLs they return, so a file costs its PUTs and a
share of two requests instead of five calls of its own. A server that advertises batches but
answers these with 404/405 (an older pyscore) gets the original's calls.

Each id gets its own answer: its result (`status` 200) or its refusal (the status, errorId and
message the single-object call would have answered); one refusal never fails the batch.
Answers come in the order of the request. An item naming what an earlier item of the same
batch named (the same object and range; the same upload) is refused, 400 `batch.repeated`;
a part listed twice in a finish fails its upload, 400 `upload.part.repeated`.

What one answer may cost is bounded: an answer of `/download/batch` stops before the
specification that would take it past ANSWER_PARTS parts, so it may answer only the first
objects asked (never none); a client asks the rest again. (A client that takes such an answer
for one not given as a batch, as pyscore's before it, asks them one by one.)
An answer of `/upload/batch/start` stops the same way, before the upload that would take it
past ANSWER_PARTS parts (the upload left out is not begun), but only for a client that says
it asks again for the rest (`Pyscore-Batch-Accept: partial`): pyscore's before it took a short
answer for a failed batch. A batch of a client that does not say so is answered whole, or,
if its uploads would take more than UNCUT_PARTS parts, refused whole (413 `batch.too.large`)
before any is begun.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from pyscore.wire.score import ObjectSpecification, Part
from pyscore.wire.song import Entity

BATCH_HEADER = "Pyscore-Batch"
SPECS_PATH = "/download/batch"  # under the storage URL
ENTITIES_PATH = "/entities/batch"  # under the metadata URL
UPLOAD_START_PATH = "/upload/batch/start"  # under the storage URL
UPLOAD_FINISH_PATH = "/upload/batch/finish"  # under the storage URL
# parts in one finish request, at most: the client stays within, the server sizes its body limit
FINISH_PARTS = 10_000
# parts in one answer of POST /download/batch, at most (the most one object has): an answer stops
# before the specification that would take it past this (never before the first)
ANSWER_PARTS = 10_000
# a client's header: `partial` says it asks again for what an answer of /upload/batch/start
# leaves out (ACCEPT_PARTIAL); a server cuts those answers only for such a client
ACCEPT_HEADER = "Pyscore-Batch-Accept"
ACCEPT_PARTIAL = {ACCEPT_HEADER: "partial"}
# part URLs of one answer of /upload/batch/start to a client without it, at most: 413 beyond
UNCUT_PARTS = 100_000


def advertised(max_ids: int) -> tuple[tuple[str, str], ...]:
    """The header a server offering batches of up to `max_ids` sends (none for 0)."""
    return ((BATCH_HEADER, f"max={max_ids}"),) if max_ids > 0 else ()


def takes_partial(value: Optional[str]) -> bool:
    """Whether a client's `Pyscore-Batch-Accept` header says it takes cut answers."""
    return "partial" in {item.strip().lower() for item in (value or "").split(",")}


def parse_batch_header(value: Optional[str]) -> Optional[int]:
    """The most ids per batch a server's `Pyscore-Batch` header offers; None if it offers
    none (no header, or one this client does not understand)."""
    if not value:
        return None
    for item in value.split(","):
        key, _, number = item.strip().partition("=")
        if key.strip().lower() == "max" and number.strip().isdigit():
            n = int(number.strip())
            return n if n > 0 else None
    return None


@dataclass
class SpecWanted:
    """One object's download specification asked for: its bytes [offset, offset+length),
    length -1 meaning to the end (as `GET /download/{id}?offset=&length=`)."""

    objectId: str
    offset: int = 0
    length: int = -1


@dataclass
class SpecBatchRequest:
    objects: list[SpecWanted] = field(default_factory=list)


@dataclass
class SpecResult:
    objectId: str
    status: int
    spec: Optional[ObjectSpecification] = None
    errorId: Optional[str] = None
    message: Optional[str] = None


@dataclass
class SpecBatchAnswer:
    results: list[SpecResult]


@dataclass
class EntityBatchRequest:
    ids: list[str] = field(default_factory=list)


@dataclass
class EntityResult:
    id: str
    status: int
    entity: Optional[Entity] = None
    errorId: Optional[str] = None
    message: Optional[str] = None


@dataclass
class EntityBatchAnswer:
    results: list[EntityResult]


@dataclass
class UploadWanted:
    """One upload to begin, as the original client's calls would: refused if the object is
    already uploaded, unless `overwrite`; the upload in progress of the same size resumed;
    else a new one initiated (replacing any other, with `overwrite`)."""

    objectId: str
    fileSize: int
    md5: Optional[str] = None
    overwrite: bool = False


@dataclass
class UploadStartRequest:
    uploads: list[UploadWanted] = field(default_factory=list)


@dataclass
class UploadStartResult:
    """An upload begun (`resumed`: one already in progress), its parts as
    `GET /upload/{id}/status` lists them (finished ones marked, the others with URLs); or its
    refusal."""

    objectId: str
    status: int
    uploadId: Optional[str] = None
    parts: Optional[list[Part]] = None
    resumed: bool = False
    errorId: Optional[str] = None
    message: Optional[str] = None


@dataclass
class UploadStartAnswer:
    results: list[UploadStartResult]


@dataclass
class PartSent:
    """A part the client sent: what `POST /upload/{id}/parts` would record."""

    partNumber: int
    md5: str
    etag: str


@dataclass
class UploadDone:
    objectId: str
    uploadId: str
    parts: list[PartSent] = field(default_factory=list)


@dataclass
class UploadFinishRequest:
    uploads: list[UploadDone] = field(default_factory=list)


@dataclass
class UploadFinishResult:
    objectId: str
    status: int
    errorId: Optional[str] = None
    message: Optional[str] = None


@dataclass
class UploadFinishAnswer:
    results: list[UploadFinishResult]
