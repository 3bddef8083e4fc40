"""GA4GH htsget 1.3: tickets that point at exactly the bytes holding a region's records.

Byte ranges come from the index and are handed out as signed storage URLs, so the object
store serves the bulk. Where a range starts or ends inside a BGZF block, that block's part is
re-compressed and sent inline as a data: URI; the client's concatenation is then a valid file
with no stray header lines or half records.
"""

from __future__ import annotations

import base64
import contextlib
import re
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from pyscore.server import audit, indexes, metadata, objects
from pyscore.server.app import PrincipalDep, SessionDep, SignerDep
from pyscore.server.auth import Action, authorize
from pyscore.server.errors import ApiError
from pyscore.server.indexes import BGZF_EOF, IndexError_, deflate_block, inflate_block, split
from pyscore.server.tables import File
from pyscore.wire.files import htsget_format

MEDIA = "application/vnd.ga4gh.htsget.v1.3.0+json"
KINDS = {"reads": ("BAM", "CRAM"), "variants": ("VCF", "BCF")}
MAX_HEADER = 64 * 1024 * 1024
CRAM_EOF_PREFIX = bytes.fromhex("0f000000ffffffff0fe0454f46")
FIELDS = {"QNAME", "FLAG", "RNAME", "POS", "MAPQ", "CIGAR", "RNEXT", "PNEXT", "TLEN", "SEQ", "QUAL"}

router = APIRouter(tags=["htsget"])
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


def invalid(kind: str, message: str, status: int = 400) -> ApiError:
    return ApiError(status, kind, message)


@dataclass(frozen=True)
class Piece:
    """Either a byte range [start, end) of the object or inline bytes."""

    start: int = 0
    end: int = 0
    data: bytes | None = None
    klass: str = "body"


class Blocks:
    """BGZF blocks of one stored object, read on demand and cached."""

    def __init__(self, store, object_id: str, size: int) -> None:
        self.store, self.object_id, self.size = store, object_id, size
        self.cache: dict[int, bytes] = {}

    def at(self, offset: int) -> bytes:
        if offset not in self.cache:
            head = self.store.read_range(self.object_id, offset, indexes.MAX_BLOCK + 64)
            size = indexes.block_size(head)
            self.cache[offset] = head[:size]
        return self.cache[offset]

    def inflated(self, offset: int) -> bytes:
        return inflate_block(self.at(offset))

    def voffset_of(self, position: int) -> int:
        """Virtual offset of an uncompressed stream position, walking blocks from the start."""
        coffset, before = 0, 0
        while coffset < self.size:
            data = self.inflated(coffset)
            if position < before + len(data):
                return coffset << 16 | (position - before)
            before += len(data)
            coffset += len(self.at(coffset))
        return coffset << 16

    def prefix(self, limit: int = MAX_HEADER) -> Any:
        """Iterate the uncompressed stream from the start, block by block."""
        coffset, total = 0, 0
        while coffset < self.size and total < limit:
            data = self.inflated(coffset)
            yield data
            total += len(data)
            coffset += len(self.at(coffset))


def inline(data: bytes, klass: str) -> list[Piece]:
    """Bytes as BGZF blocks small enough that even incompressible data fits a block."""
    return [
        Piece(data=deflate_block(data[i : i + 32768]), klass=klass)
        for i in range(0, len(data), 32768)
    ]


def between(blocks: Blocks, vbeg: int, vend: int, klass: str = "body") -> list[Piece]:
    """The exact bytes between two virtual offsets as ranges plus inline boundary blocks."""
    cb, ub = split(vbeg)
    ce, ue = split(vend)
    if (cb, ub) >= (ce, ue):
        return []
    if cb == ce:
        return inline(blocks.inflated(cb)[ub:ue], klass)
    pieces: list[Piece] = []
    start = cb
    if ub:
        pieces += inline(blocks.inflated(cb)[ub:], klass)
        start = cb + len(blocks.at(cb))
    if ce > start:
        pieces.append(Piece(start, ce, klass=klass))
    if ue:
        pieces += inline(blocks.inflated(ce)[:ue], klass)
    return pieces


# -- headers and reference names -----------------------------------------------------------
def bam_header(blocks: Blocks) -> tuple[int, list[str]]:
    """(uncompressed header length, reference names) of a BAM."""
    buf = b""
    for data in blocks.prefix():
        buf += data
        try:
            if buf[:4] != b"BAM\x01":
                raise IndexError_("not a BAM file")
            l_text = struct.unpack_from("<i", buf, 4)[0]
            pos = 8 + l_text
            n_ref = struct.unpack_from("<i", buf, pos)[0]
            pos += 4
            names = []
            for _ in range(n_ref):
                l_name = struct.unpack_from("<i", buf, pos)[0]
                names.append(buf[pos + 4 : pos + 4 + l_name - 1].decode())
                pos += 4 + l_name + 4
            if pos > len(buf):
                continue
            return pos, names
        except struct.error:
            continue
    raise IndexError_("BAM header is truncated or too large")


CONTIG = re.compile(r"^##contig=<.*?ID=([^,>]+)", re.MULTILINE)


def vcf_header(blocks: Blocks, bcf: bool) -> tuple[int, list[str]]:
    """(uncompressed header length, contig names in header order) of a VCF.gz or BCF."""
    buf = b""
    for data in blocks.prefix():
        buf += data
        if bcf:
            if len(buf) < 9:
                continue
            if buf[:3] != b"BCF":
                raise IndexError_("not a BCF file")
            l_text = struct.unpack_from("<I", buf, 5)[0]
            if len(buf) >= 9 + l_text:
                text = buf[9 : 9 + l_text].decode(errors="replace")
                return 9 + l_text, CONTIG.findall(text)
            continue
        pos = 0
        while True:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                break
            if not buf.startswith(b"#", pos):
                text = buf[:pos].decode(errors="replace")
                return pos, CONTIG.findall(text)
            pos = nl + 1
    if not bcf and buf:
        return len(buf), CONTIG.findall(buf.decode(errors="replace"))
    raise IndexError_("header is truncated or too large")


def eof_voffset(blocks: Blocks) -> int:
    tail = blocks.store.read_range(blocks.object_id, max(blocks.size - 28, 0), 28)
    end = blocks.size - 28 if tail == BGZF_EOF else blocks.size
    return end << 16


# -- tickets -------------------------------------------------------------------------------
@dataclass
class Query:
    fmt: str
    header_only: bool
    regions: list[tuple[str, int | None, int | None]]  # (name or "*", start, end), 0-based


def parse_query(kind: str, params: dict[str, Any], body: bool = False) -> Query:
    fmt = str(params.get("format") or KINDS[kind][0]).upper()
    if fmt not in KINDS[kind]:
        raise invalid("UnsupportedFormat", f"format {fmt} is not one of {KINDS[kind]}")
    klass = params.get("class")
    if klass not in (None, "header"):
        raise invalid("InvalidInput", f"class must be 'header', not {klass!r}")
    for key in ("fields", "tags", "notags"):
        value = params.get(key)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v] if value else []
        if key == "fields" and value and not set(value) <= FIELDS:
            raise invalid("InvalidInput", f"unknown fields {sorted(set(value) - FIELDS)}")
        params[key] = value
    if params.get("tags") and params.get("notags") and set(params["tags"]) & set(params["notags"]):
        raise invalid("InvalidInput", "tags and notags overlap")
    regions: list[tuple[str, int | None, int | None]] = []
    raw_regions = params.get("regions") if body else None
    if raw_regions is None and params.get("referenceName") is not None:
        raw_regions = [
            {
                "referenceName": params.get("referenceName"),
                "start": params.get("start"),
                "end": params.get("end"),
            }
        ]
    elif raw_regions is None and (params.get("start") is not None or params.get("end") is not None):
        raise invalid("InvalidInput", "start and end need referenceName")
    for region in raw_regions or []:
        if not isinstance(region, dict) or not region.get("referenceName"):
            raise invalid("InvalidInput", "each region needs a referenceName")
        name = str(region["referenceName"])
        start, end = (_coordinate(region.get(k), k) for k in ("start", "end"))
        if name == "*" and (start is not None or end is not None):
            raise invalid("InvalidInput", "start and end cannot be used with referenceName=*")
        if start is not None and end is not None and start > end:
            raise invalid("InvalidRange", f"start {start} is greater than end {end}")
        regions.append((name, start, end))
    if klass == "header" and regions:
        raise invalid("InvalidInput", "class=header cannot be combined with a region")
    return Query(fmt, klass == "header", regions)


def _coordinate(value: Any, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise invalid("InvalidInput", f"{name} must be an integer, not {value!r}") from None
    if not 0 <= number < 2**32:
        raise invalid("InvalidRange", f"{name} {number} is out of range")
    return number


def _names_check(names: list[str], wanted: str) -> int:
    try:
        return names.index(wanted)
    except ValueError:
        raise invalid("NotFound", f"reference {wanted!r} is not in this file", 404) from None


def binned_pieces(
    blocks: Blocks, q: Query, index: indexes.BinnedIndex, header_len: int, names: list[str]
) -> list[Piece]:
    head_end = blocks.voffset_of(header_len)
    pieces = between(blocks, 0, head_end, "header")
    if q.header_only:  # with an EOF marker, so readers do not warn of truncation
        return [*pieces, Piece(data=BGZF_EOF, klass="header")]
    end = eof_voffset(blocks)
    chunks: list[tuple[int, int]] = []
    if not q.regions:
        chunks = [(head_end, end)]
    for name, start, stop in q.regions:
        if name == "*":
            chunks.append((max(index.last_offset(), head_end), end))
            continue
        ref = _names_check(names, name)
        chunks += index.chunks(ref, start or 0, stop if stop is not None else 2**31 - 1)
    for vbeg, vend in indexes.merge(chunks):
        pieces += between(blocks, max(vbeg, head_end), vend)
    return [*pieces, Piece(data=BGZF_EOF, klass="body")]


def cram_pieces(
    store, object_id: str, size: int, q: Query, crai: list[indexes.CraiEntry], names: list[str]
) -> list[Piece]:
    containers = sorted({e.container for e in crai})
    tail = store.read_range(object_id, max(size - 38, 0), 38)
    eof_at = size - 38 if tail.startswith(CRAM_EOF_PREFIX) else size
    first = containers[0] if containers else eof_at
    pieces = [Piece(0, first, klass="header")]
    if q.header_only:
        return [*pieces, Piece(eof_at, size, klass="header")] if eof_at < size else pieces
    chosen: set[int] = set()
    if not q.regions:
        chosen = set(containers)
    for name, start, stop in q.regions:
        ref = -1 if name == "*" else _names_check(names, name)
        chosen.update(indexes.crai_containers(crai, ref, start, stop))
    bounds = [*containers, eof_at]
    for offset in sorted(chosen):
        nxt = bounds[bounds.index(offset) + 1]
        pieces.append(Piece(offset, nxt))
    if eof_at < size:
        pieces.append(Piece(eof_at, size))
    return pieces


def cram_names(store, object_id: str, first_container: int) -> list[str]:
    """Reference names from the SAM header text inside the CRAM header container."""
    head = store.read_range(object_id, 0, min(first_container, MAX_HEADER))
    text = head.decode("latin-1")
    gz = head.find(b"\x1f\x8b\x08")  # htslib gzips the header block of CRAM 3
    if gz >= 0:
        with contextlib.suppress(zlib.error):
            text = zlib.decompressobj(31).decompress(head[gz:]).decode("latin-1")
    return re.findall(r"@SQ\t(?:[^\n]*\t)?SN:([^\t\n]+)", text)


def coalesce(pieces: list[Piece]) -> list[Piece]:
    out: list[Piece] = []
    for p in pieces:
        prev = out[-1] if out else None
        if (
            prev
            and p.data is None
            and prev.data is None
            and prev.end == p.start
            and prev.klass == p.klass
        ):
            out[-1] = Piece(prev.start, p.end, klass=p.klass)
        elif prev and p.data is not None and prev.data is not None and prev.klass == p.klass:
            out[-1] = Piece(data=prev.data + p.data, klass=p.klass)
        else:
            out.append(p)
    return out


def ticket(session, signer, kind: str, f: File, q: Query) -> dict:
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
    try:
        if fmt == "CRAM":
            crai = _parsed_index(session, store, index, CRAM_INDEXES)
            first = min((e.container for e in crai), default=obj.size)
            names = memo.get(
                ("names", *key), lambda: cram_names(store, object_id, first), min(first, MAX_HEADER)
            )
            pieces = cram_pieces(store, object_id, obj.size, q, crai, names)
        else:
            blocks = Blocks(store, object_id, obj.size)
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
    except IndexError_ as exc:
        raise invalid("InvalidInput", f"{f.file_name}: {exc}") from None
    urls = []
    for p in coalesce(pieces):
        if p.data is not None:
            urls.append(
                {
                    "url": "data:application/octet-stream;base64,"
                    + base64.b64encode(p.data).decode(),
                    "class": p.klass,
                }
            )
        elif p.end > p.start:
            url = store.url_for_get(
                object_id,
                base_url=signer.base_url,
                expires_in=signer.download_expiry,
                offset=p.start,
                length=p.end - p.start,
            )
            urls.append(
                {"url": url, "headers": {"Range": f"bytes={p.start}-{p.end - 1}"}, "class": p.klass}
            )
    return {"htsget": {"format": fmt, "urls": urls}}


BINNED_INDEXES = {".bai": indexes.parse_bai, ".csi": indexes.parse_csi, ".tbi": indexes.parse_tbi}
CRAM_INDEXES = {".crai": indexes.parse_crai}


def _parsed_index(session, store, index, parsers: dict[str, Callable[[bytes], Any]]) -> Any:
    """The index file parsed by the parser its name calls for, among those this data file's
    format can use."""
    suffix = next((s for s in parsers if index.file_name.lower().endswith(s)), None)
    if suffix is None:
        raise IndexError_(
            f"index {index.file_name} is not {' or '.join(s[1:].upper() for s in parsers)}"
        )
    obj = objects.stored(session, index.object_id)
    return memo.get(
        ("index", *version(store, obj)),
        lambda: parsers[suffix](store.read_range(index.object_id, 0, obj.size)),
        obj.size,
    )


# -- HTTP ----------------------------------------------------------------------------------
def readable(object_id: str, s: SessionDep, who: PrincipalDep) -> File:
    """The published file a caller may read (a dependency, so that a POST's body is read
    only once the caller is allowed)."""
    try:
        f = metadata.get_file(s, object_id)
    except ApiError:
        raise invalid("NotFound", f"no object {object_id}", 404) from None
    authorize(
        who,
        Action.READ,
        f.study_id,
        f.file_access,
        f"read {f.file_name}",
        object_id=f.object_id,
        event="htsget",
    )
    objects.require_published(s, f)
    return f


ReadableFile = Annotated[File, Depends(readable)]


class Ticket(JSONResponse):
    media_type = MEDIA


def _answer(session, signer, kind: str, f: File, q: Query) -> JSONResponse:
    body = ticket(session, signer, kind, f, q)
    audit.ranges(ticket_ranges(body))
    return Ticket(body)


def ticket_ranges(body: dict) -> list[tuple[int, int]]:
    """(offset, length) of the stored object's bytes a ticket's URLs hand out."""
    out = []
    for u in body["htsget"]["urls"]:
        rng = u.get("headers", {}).get("Range", "")
        if rng.startswith("bytes="):
            lo, _, hi = rng[6:].partition("-")
            out.append((int(lo), int(hi) - int(lo) + 1))
    return out


SERVICE_INFO = {
    "id": "org.pyscore.htsget",
    "name": "pyscore htsget",
    "type": {"group": "org.ga4gh", "artifact": "htsget", "version": "1.3.0"},
    "organization": {"name": "pyscore", "url": "https://pypi.org/project/pyscore/"},
    "version": "1.3.0",
}


async def json_body(request: Request) -> dict:
    try:
        data = await request.json()
    except (ValueError, RecursionError):
        raise invalid(
            "InvalidInput", "the request body is not JSON (or nested too deeply)"
        ) from None
    if not isinstance(data, dict):
        raise invalid("InvalidInput", "the request body must be a JSON object")
    if request.query_params:
        raise invalid("InvalidInput", "POST requests take no query parameters")
    return data


def _routes(kind: str) -> None:
    @router.get(f"/htsget/{kind}/service-info", name=f"{kind}_service_info")
    def service_info() -> JSONResponse:
        return JSONResponse(
            {
                **SERVICE_INFO,
                "htsget": {
                    "datatype": kind,
                    "formats": list(KINDS[kind]),
                    "fieldsParametersEffective": False,
                    "tagsParametersEffective": False,
                },
            }
        )

    @router.get(f"/htsget/{kind}/{{object_id}}", name=f"{kind}_ticket", response_class=Ticket)
    def get(
        object_id: str, request: Request, s: SessionDep, f: ReadableFile, signer: SignerDep
    ) -> JSONResponse:
        return _answer(s, signer, kind, f, parse_query(kind, dict(request.query_params)))

    @router.post(f"/htsget/{kind}/{{object_id}}", name=f"{kind}_ticket_post", response_class=Ticket)
    def post(
        object_id: str,
        s: SessionDep,
        f: ReadableFile,
        data: Annotated[dict, Depends(json_body)],
        signer: SignerDep,
    ) -> JSONResponse:
        return _answer(s, signer, kind, f, parse_query(kind, data, body=True))


for _kind in KINDS:
    _routes(_kind)
