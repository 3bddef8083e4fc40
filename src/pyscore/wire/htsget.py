"""GA4GH htsget 1.3 tickets: what the server writes and the client reads.

JSON names a block's class `class`, a Python keyword: the dataclass calls it `klass`, and
`ticket_to_json` / `ticket_from_json` translate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

from pyscore.wire.codec import WireError, from_wire

MEDIA_TYPE = "application/vnd.ga4gh.htsget.v1.3.0+json"
RANGE = re.compile(r"bytes=(\d+)-(\d+)")


@dataclass
class TicketUrl:
    """One block: a URL (a signed byte range, or inline bytes as a `data:` URI), the headers
    to send with it, and whether it is part of the "header" or the "body"."""

    url: str
    headers: Optional[dict[str, str]] = None
    klass: Optional[str] = None

    def length(self) -> Optional[int]:
        """How many bytes the block is, when its Range header says."""
        match = RANGE.fullmatch((self.headers or {}).get("Range", ""))
        return int(match[2]) - int(match[1]) + 1 if match else None


@dataclass
class Ticket:
    format: str
    urls: list[TicketUrl]


def ticket_to_json(ticket: Ticket) -> dict[str, Any]:
    urls: list[dict[str, Any]] = []
    for u in ticket.urls:
        entry: dict[str, Any] = {"url": u.url}
        if u.headers:
            entry["headers"] = u.headers
        if u.klass:
            entry["class"] = u.klass
        urls.append(entry)
    return {"htsget": {"format": ticket.format, "urls": urls}}


def ticket_from_json(data: Any, what: str) -> Ticket:
    body = data.get("htsget") if isinstance(data, dict) else None
    if not isinstance(body, dict) or not isinstance(body.get("urls"), list):
        raise WireError(f"{what}: the server's answer is not an htsget ticket")
    urls = [
        {**{k: v for k, v in u.items() if k != "class"}, "klass": u.get("class")}
        if isinstance(u, dict)
        else u
        for u in body["urls"]
    ]
    return from_wire(Ticket, {**body, "urls": urls}, what)
