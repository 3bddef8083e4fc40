"""Tickets: the stored object and its index turned into the URLs (signed ranges and inline
blocks) that hold a region, with parsed indexes and headers kept across tickets."""

from __future__ import annotations

import base64
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from pyscore.server import metadata, objects
from pyscore.server.formats import indexes
from pyscore.server.formats.bgzf import MAX_HEADER, Blocks, FormatError
from pyscore.server.formats.headers import bam_header, cram_names, vcf_header
from pyscore.server.htsget.pieces import binned_pieces, coalesce, cram_pieces
from pyscore.server.htsget.query import KINDS, Query, invalid
from pyscore.server.tables import File
from pyscore.wire.files import htsget_format
from pyscore.wire.htsget import Ticket, TicketUrl

MEMO_BYTES = 32 * 1024 * 1024  # of parsed index files; parsed, a BAI takes ~8x its size


class Memo:
    """Parsed indexes and headers of stored objects, kept across tickets: parsing a BAI of a
    1 GiB BAM takes ~25 ms, a ticket's whole budget. Least recently used entries go once the
    files they were parsed from add up to `budget` bytes. Keys (`version`) change whenever the
    stored bytes may have: a new upload or ingest, a new size, MD5 or completion time."""

    def __init__(self, budget: int = MEMO_BYTES) -> None:
        self.budget = budget
        self.items: OrderedDict[tuple, tuple[Any, int]] = OrderedDict()
        self.total = 0
        self.lock = threading.Lock()

    def get(self, key: tuple, make: Callable[[], Any], weight: int) -> Any:
        """The value for key, made (outside the lock: a rare double parse is harmless) and
        kept if missing; `weight` is the size of what it is parsed from."""
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key][0]
        value = make()
        with self.lock:
            if key not in self.items:
                self.items[key] = (value, weight)
                self.total += weight
            while self.total > self.budget and len(self.items) > 1:
                _, (_, dropped) = self.items.popitem(last=False)
                self.total -= dropped
        return value


memo = Memo()


def version(store, obj) -> tuple:
    """What identifies one stored version of an object, for Memo keys."""
    return (id(store), obj.object_id, obj.upload_id, obj.size, obj.md5, obj.last_modified)


def ticket(session, signer, kind: str, f: File, q: Query) -> Ticket:
    object_id = f.object_id
    fmt = htsget_format(f.file_name)
    if fmt is None or fmt not in KINDS[kind]:
        raise invalid(
            "UnsupportedFormat", f"{f.file_name} is not a {kind} file ({'/'.join(KINDS[kind])})"
        )
    if q.fmt != fmt:
        raise invalid(
            "UnsupportedFormat", f"{f.file_name} is {fmt}; it cannot be served as {q.fmt}"
        )
    obj = objects.stored(session, object_id)
    store = signer.store
    index = next(iter(metadata.index_files(session, object_id)), None)
    if index is None and (q.regions or fmt == "CRAM"):
        raise invalid("NotFound", f"{f.file_name} has no index file, so it cannot be sliced", 404)
    key = version(store, obj)

    def read(offset: int, length: int) -> bytes:
        return store.read_range(object_id, offset, length)

    try:
        if fmt == "CRAM":
            crai = _parsed_index(session, store, index, CRAM_INDEXES)
            first = min((e.container for e in crai), default=obj.size)
            names = memo.get(
                ("names", *key),
                lambda: cram_names(read(0, min(first, MAX_HEADER))),
                min(first, MAX_HEADER),
            )
            pieces = cram_pieces(read, obj.size, q, crai, names)
        else:
            blocks = Blocks(read, obj.size)
            header_len, names = memo.get(
                ("header", *key),
                lambda: (
                    bam_header(blocks) if fmt == "BAM" else vcf_header(blocks, bcf=fmt == "BCF")
                ),
                64 * 1024,
            )
            binned = (
                _parsed_index(session, store, index, BINNED_INDEXES)
                if index is not None
                else indexes.BinnedIndex([])
            )
            if binned.names:
                names = binned.names
            pieces = binned_pieces(blocks, q, binned, header_len, names)
    except FormatError as exc:
        raise invalid("InvalidInput", f"{f.file_name}: {exc}") from None
    urls: list[TicketUrl] = []
    for p in coalesce(pieces):
        if p.data is not None:
            inline = "data:application/octet-stream;base64," + base64.b64encode(p.data).decode()
            urls.append(TicketUrl(inline, klass=p.klass))
        elif p.end > p.start:
            url = store.url_for_get(
                object_id,
                base_url=signer.base_url,
                expires_in=signer.download_expiry,
                offset=p.start,
                length=p.end - p.start,
            )
            urls.append(TicketUrl(url, {"Range": f"bytes={p.start}-{p.end - 1}"}, p.klass))
    return Ticket(fmt, urls)


BINNED_INDEXES = {".bai": indexes.parse_bai, ".csi": indexes.parse_csi, ".tbi": indexes.parse_tbi}
CRAM_INDEXES = {".crai": indexes.parse_crai}


def _parsed_index(session, store, index, parsers: Mapping[str, Callable[[bytes], Any]]) -> Any:
    """The index file parsed by the parser its name calls for, among those this data file's
    format can use."""
    suffix = next((s for s in parsers if index.file_name.lower().endswith(s)), None)
    if suffix is None:
        raise FormatError(
            f"index {index.file_name} is not {' or '.join(s[1:].upper() for s in parsers)}"
        )
    obj = objects.stored(session, index.object_id)
    return memo.get(
        ("index", *version(store, obj)),
        lambda: parsers[suffix](store.read_range(index.object_id, 0, obj.size)),
        obj.size,
    )
