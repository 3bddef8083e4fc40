"""The metadata API's (Song's) JSON that score-client reads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Entity:
    """Song's legacy entity: what score-client and score-server know of a file."""

    id: str
    gnosId: str
    fileName: str
    projectCode: str
    access: str
    createdTime: int = 0  # epoch ms; Song leaves it out, the Java client's Entity has it
