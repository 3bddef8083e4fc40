"""A GA4GH htsget client for the server's endpoint, and fetching signed object-store URLs
(htsget blocks, index files) into local files."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from pyscore.client.errors import ScoreError
from pyscore.client.view.regions import UNMAPPED
from pyscore.wire.codec import WireError
from pyscore.wire.htsget import ticket_from_json

INDEX_LIMIT = 1024 * 1024 * 1024  # a whole-genome BAI is ~10 MB


class Tickets:
    """Regions of one object fetched through the server's GA4GH htsget endpoint: the ticket
    lists exactly the byte ranges that hold a region's records (bounded requests, unlike
    htslib's open-ended ones), fetched here into local files for htslib to read."""

    def __init__(self, api, object_id: str, kind: str, fmt: str, folder: Path) -> None:
        self.api, self.object_id, self.kind, self.fmt = api, object_id, kind, fmt
        self.folder = folder
        self.count = 0

    def header(self) -> Path:
        return self._fetch({"format": self.fmt, "class": "header"})

    def region(self, contig: str | None, start: int, end: int) -> Path:
        body: dict = {"format": self.fmt}
        if contig is not None:
            region: dict[str, Any] = {"referenceName": contig}
            if contig != UNMAPPED:
                region.update(start=start, end=end)
            body["regions"] = [region]
        return self._fetch(body)

    def _fetch(self, body: dict) -> Path:
        url = f"{self.api.settings.storage_url}/htsget/{self.kind}/{self.object_id}"
        what = f"htsget ticket for {self.object_id}"
        try:
            ticket = ticket_from_json(self.api.request("POST", url, what, json=body).json(), what)
        except WireError as exc:
            raise ScoreError(str(exc)) from None
        self.count += 1
        path = self.folder / f"part{self.count}.{self.fmt.lower()}"
        with open(path, "wb") as out:
            for block in ticket.urls:  # in order
                if block.url.startswith("data:"):
                    out.write(base64.b64decode(block.url.split(",", 1)[1]))
                else:  # no more than the block's range says, should the store send more
                    fetch_into(
                        self.api,
                        block.url,
                        out,
                        f"an htsget block of {self.object_id}",
                        block.headers,
                        block.length(),
                    )
        return path


def speaks_htsget(api) -> bool:
    """A pyscore server (or any htsget server at the storage URL) answers service-info."""
    try:
        r = api.send_once(
            "GET",
            f"{api.settings.storage_url}/htsget/reads/service-info",
            "htsget service-info",
            timeout=10,
        )
        return r.status_code == 200 and r.json().get("type", {}).get("artifact") == "htsget"
    except Exception:
        return False


def fetch_into(
    api, url: str, out, what: str, headers: dict | None = None, limit: int | None = None
) -> None:
    """A signed object-store URL's bytes appended to `out` (refused beyond `limit` bytes)."""
    from pyscore.client import http1
    from pyscore.client.httpio import USER_AGENT

    try:
        status = api.store.get_into(
            url, {"User-Agent": USER_AGENT, **(headers or {})}, out.write, limit
        )
    except http1.TooLarge:
        raise ScoreError(f"{what} is larger than {limit:,} bytes; stopped reading") from None
    except (OSError, ValueError) as exc:
        raise ScoreError(f"downloading {what} failed: {exc}") from None
    if status >= 400:
        raise ScoreError(f"object store answered {status} for {what}")
