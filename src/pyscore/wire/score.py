"""The storage API's (Score's) JSON: download and upload specifications, the listing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class Part:
    partNumber: int
    partSize: int
    offset: int
    url: Optional[str] = None
    md5: Optional[str] = None
    sourceMd5: Optional[str] = None


@dataclass
class ObjectSpecification:
    objectKey: str
    objectId: str
    uploadId: str
    parts: list[Part]
    objectSize: int
    objectMd5: Optional[str] = None


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
