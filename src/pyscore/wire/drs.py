"""GA4GH DRS 1.4 objects, bundles and access URLs, as the server writes them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class Checksum:
    checksum: str
    type: str


@dataclass
class AccessMethod:
    type: str
    access_id: str


@dataclass
class AccessURL:
    url: str


@dataclass
class ContentsObject:
    """A member of a bundle."""

    name: str
    id: str
    drs_uri: list[str]


@dataclass
class DrsObject:
    """A file (with `access_methods`) or a bundle of files (with `contents`)."""

    id: str
    self_uri: str
    size: int
    created_time: Optional[str]
    checksums: list[Checksum]
    name: Optional[str] = None
    updated_time: Optional[str] = None
    version: Optional[str] = None
    mime_type: Optional[str] = None
    description: Optional[str] = None
    aliases: Optional[list[str]] = None
    access_methods: Optional[list[AccessMethod]] = None
    contents: Optional[list[ContentsObject]] = None
