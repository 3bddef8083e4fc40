"""The metadata API's (Song's) JSON that score-client reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Optional, TypeVar

T = TypeVar("T")


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
class Page(Generic[T]):
    """A Spring Page (Song's /entities) as far as a client reads it: its rows, how many
    there are in all (when it says), and whether it is the last."""

    content: list[T] = field(default_factory=list)
    totalElements: Optional[int] = None
    last: Optional[bool] = True
