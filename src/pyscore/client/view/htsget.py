"""A GA4GH htsget client for the server's endpoint, and fetching signed object-store URLs
(htsget blocks, index files) into local files."""

from __future__ import annotations

import base64
import itertools
import json
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

from pyscore.client.errors import ScoreError
from pyscore.client.view.regions import UNMAPPED, Region
from pyscore.wire.codec import WireError
from pyscore.wire.htsget import TicketUrl, ticket_from_json

INDEX_LIMIT = 1024 * 1024 * 1024  # a whole-genome BAI is ~10 MB
BLOCKS_AT_ONCE = 4  # a ticket's signed ranges fetched side by side
USUAL_FORMAT = {"reads": "BAM", "variants": "VCF"}  # htsget's defaults


class Tickets:
    """Regions of one object fetched through the server's GA4GH htsget endpoint: the ticket
    lists exactly the byte ranges that hold a region's records (bounded requests, unlike
    htslib's open-ended ones), fetched here into local files for htslib to read."""

    def __init__(self, api, object_id: str, kind: str, fmt: str, folder: Path) -> None:
        self.api, self.object_id, self.kind, self.fmt = api, object_id, kind, fmt
        self.folder = folder
        self.numbers = itertools.count(1)  # of the answers' files (next() is atomic)
        self.early: dict[str, Future[Path]] = {}  # asked ahead, by request body

    def header(self) -> Path:
        return self._fetch({"format": self.fmt, "class": "header"})

    def region(self, contig: str | None, start: int, end: Optional[int]) -> Path:
        """The blocks of a region (contig None: the whole file; end None: to the contig's
        end) as one file: a ticket's answer starts with the header."""
        return self._fetch(self._body(contig, start, end))

    def ask_early(self, contig: str | None, start: int, end: Optional[int]) -> None:
        """Fetch a region's blocks in a thread now; `region` then takes them (or the error)."""
        body = self._body(contig, start, end)
        pool = ThreadPoolExecutor(1, "htsget-early")
        self.early[json.dumps(body, sort_keys=True)] = pool.submit(self._ask, body)
        pool.shutdown(wait=False)

    def settle(self) -> None:
        """Wait for what was asked early and not taken (before its folder goes)."""
        for future in self.early.values():
            future.exception()
        self.early.clear()

    def _body(self, contig: str | None, start: int, end: Optional[int]) -> dict[str, Any]:
        body: dict[str, Any] = {"format": self.fmt}
        if contig is not None:
            region: dict[str, Any] = {"referenceName": contig}
            if contig != UNMAPPED:
                region["start"] = start
                if end is not None:
                    region["end"] = end
            body["regions"] = [region]
        return body

    def _fetch(self, body: dict) -> Path:
        asked = self.early.pop(json.dumps(body, sort_keys=True), None)
        return asked.result() if asked is not None else self._ask(body)

    def _ask(self, body: dict) -> Path:
        url = f"{self.api.settings.storage_url}/htsget/{self.kind}/{self.object_id}"
        what = f"htsget ticket for {self.object_id}"
        try:
            ticket = ticket_from_json(self.api.request("POST", url, what, json=body).json(), what)
        except WireError as exc:
            raise ScoreError(str(exc)) from None
        path = self.folder / f"part{next(self.numbers)}.{self.fmt.lower()}"
        self._write(ticket.urls, path)
        return path

    def _write(self, blocks: list[TicketUrl], path: Path) -> None:
        """The blocks, in order, into one file. When every block's size is known (inline
        bytes, a Range header), the signed ranges are fetched side by side, each written at
        its place; else one after another."""
        inline = [_inline(b) if b.url.startswith("data:") else None for b in blocks]
        sizes = [len(d) if d is not None else b.length() for b, d in zip(blocks, inline)]
        remote = sum(d is None for d in inline)
        what = f"an htsget block of {self.object_id}"
        with open(path, "wb") as out:
            if remote < 2 or None in sizes:
                for block, data in zip(blocks, inline):
                    if data is not None:
                        out.write(data)
                    else:  # no more than the block's range says, should the store send more
                        fetch_into(self.api, block.url, out, what, block.headers, block.length())
                return
            at, places = 0, []
            for size in sizes:
                places.append(at)
                at += size or 0
            with ThreadPoolExecutor(min(remote, BLOCKS_AT_ONCE), "htsget-block") as pool:
                fetches = [
                    pool.submit(self._fetch_at, block, out.fileno(), place, size or 0)
                    for block, data, place, size in zip(blocks, inline, places, sizes)
                    if data is None
                ]
                for data, place in zip(inline, places):
                    if data is not None:
                        _Slot(out.fileno(), place).write(memoryview(data))
                for fetch in fetches:
                    fetch.result()

    def _fetch_at(self, block: TicketUrl, fd: int, place: int, size: int) -> None:
        what = f"an htsget block of {self.object_id}"
        slot = _Slot(fd, place)
        fetch_into(self.api, block.url, slot, what, block.headers, size)
        if slot.at != place + size:  # it would leave a hole in the file
            raise ScoreError(f"{what} ended {place + size - slot.at:,} bytes early")


class _Slot:
    """A block's place in the file, written as its bytes come."""

    def __init__(self, fd: int, at: int) -> None:
        self.fd, self.at = fd, at

    def write(self, data: memoryview) -> None:
        while data:
            n = os.pwrite(self.fd, data, self.at)
            self.at, data = self.at + n, data[n:]


def unchecked(region: Optional[Region]) -> tuple[Optional[str], int, Optional[int]]:
    """A region as htsget's 0-based half-open coordinates, before the file's header is
    known (the server clips to the contig; htslib's positions are below 2**31)."""
    if region is None:
        return None, 0, None
    end = min(region.end, 2**31 - 1) if region.end is not None else None
    return region.contig, (region.start or 1) - 1, end


def _inline(block: TicketUrl) -> bytes:
    return base64.b64decode(block.url.split(",", 1)[1])


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
