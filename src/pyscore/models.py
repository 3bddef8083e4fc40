"""The wire contract shared by client and server.

Field names are Score's and Song's camelCase exactly, because existing clients (the Java
score-client, the overture-song SDK) bind to them by name.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Wire(BaseModel):
    """Base: ignore unknown fields, as the original's Jackson mappers do. Validators are
    built on first use, not at import: a client command uses two or three of these."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, defer_build=True)


class Part(Wire):
    partNumber: int
    partSize: int
    offset: int
    url: str | None = None
    md5: str | None = None
    sourceMd5: str | None = None


class ObjectSpecification(Wire):
    objectKey: str
    objectId: str
    uploadId: str
    parts: list[Part]
    objectSize: int
    objectMd5: str | None = None


class UploadProgress(Wire):
    objectId: str
    uploadId: str
    parts: list[Part]


class ListingEntry(Wire):
    id: str
    lastModified: int
    size: int


class Entity(Wire):
    """Song's legacy entity: what score-client and score-server know of a file."""

    id: str
    gnosId: str
    fileName: str
    projectCode: str
    access: str


class EntityPage(Wire):
    content: list[dict]
    last: bool
    first: bool = True
    totalPages: int = 1
    totalElements: int = 0
    size: int = 2000
    number: int = 0
    numberOfElements: int = 0
    empty: bool = False


class FileEntity(Wire):
    objectId: str
    studyId: str
    analysisId: str
    fileName: str
    fileSize: int
    fileType: str | None = None
    fileMd5sum: str
    fileAccess: Literal["open", "controlled"]
    dataType: str | None = None
    info: dict = Field(default_factory=dict)


class ManifestRow(Wire):
    """One row of a download manifest, whatever its dialect (ARGO, ICGC 25K, GDC)."""

    objectId: str
    fileName: str | None = None
    fileSize: int | None = None
    fileMd5sum: str | None = None
    analysisId: str | None = None
    indexObjectId: str | None = None
    studyId: str | None = None
    line: int = 0
