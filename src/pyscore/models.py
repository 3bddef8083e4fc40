"""The wire contract shared by client and server.

Field names are Score's and Song's camelCase exactly, because existing clients (the Java
score-client, the overture-song SDK) bind to them by name.

Plain dataclasses: FastAPI serves and documents them on the server, and the client checks what
it receives with msgspec (`from_wire`), which imports in ~20 ms where pydantic's model machinery
took ~200 ms of every score-client start.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from pyscore.errors import ScoreError

T = TypeVar("T")


@dataclass
class Part:
    partNumber: int
    partSize: int
    offset: int
    url: str | None = None
    md5: str | None = None
    sourceMd5: str | None = None


@dataclass
class ObjectSpecification:
    objectKey: str
    objectId: str
    uploadId: str
    parts: list[Part]
    objectSize: int
    objectMd5: str | None = None


@dataclass
class UploadProgress:
    objectId: str
    uploadId: str
    parts: list[Part]


@dataclass
class ListingEntry:
    id: str
    lastModified: int
    size: int


@dataclass
class Entity:
    """Song's legacy entity: what score-client and score-server know of a file."""

    id: str
    gnosId: str
    fileName: str
    projectCode: str
    access: str
    createdTime: int = 0  # epoch ms; Song leaves it out, the Java client's Entity has it


@dataclass
class ManifestRow:
    """One row of a download manifest, whatever its dialect (ARGO, ICGC 25K, GDC)."""

    objectId: str
    fileName: str | None = None
    fileSize: int | None = None
    fileMd5sum: str | None = None
    analysisId: str | None = None
    indexObjectId: str | None = None
    studyId: str | None = None
    line: int = 0


HTSGET_FORMATS = (
    (".bam", "BAM"),
    (".cram", "CRAM"),
    (".vcf.gz", "VCF"),
    (".vcf.bgz", "VCF"),
    (".bcf", "BCF"),
)


def htsget_format(file_name: str) -> str | None:
    """The GA4GH htsget format a file is served as, by its name (None: not sliceable)."""
    name = file_name.lower()
    return next((fmt for suffix, fmt in HTSGET_FORMATS if name.endswith(suffix)), None)


def from_wire(kind: type[T], data: Any, what: str) -> T:
    """Decoded JSON as a wire object, checked: unknown fields are ignored (as the original's
    Jackson mappers do); a missing or mistyped field is a one-line ScoreError."""
    import msgspec

    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        raise ScoreError(
            f"{what}: the server's answer is not a valid {kind.__name__}: {exc}"
        ) from None


def to_wire(obj: Any) -> dict:
    """A wire object as JSON-ready data, leaving out fields that are None (as Score does)."""

    def prune(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: prune(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [prune(v) for v in value]
        return value

    return prune(asdict(obj))
