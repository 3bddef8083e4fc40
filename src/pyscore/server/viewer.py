"""What the File Repository's genome viewer (igv.js, in the researcher's browser) needs to
show a region of a file, decided before the page is drawn, so that a file it cannot show is a
sentence on the page rather than a blank canvas:

- how the file is read: BAM and VCF over our htsget (the only formats igv.js reads through
  htsget), CRAM (and the others, when asked) over signed URLs with their index;
- the genome igv.js navigates: the operator's reference (`viewer_reference`, a published
  FASTA with its .fai; CRAM needs it to decode), else the sequences the file's own header
  names (BAM and VCF only);
- the region asked for (`chr1:10000-12000`), checked against that genome;
- where the igv.js bundle the server hands out lives (npm `igv`, installed by
  `score-server viewer install` or scripts/setup.sh; never fetched from elsewhere).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sqlalchemy.orm import Session

from pyscore.server import metadata, objects
from pyscore.server.errors import ApiError
from pyscore.server.formats.bgzf import Blocks, FormatError
from pyscore.server.formats.headers import bam_references, vcf_references
from pyscore.server.htsget.tickets import memo, version
from pyscore.server.settings import Settings
from pyscore.server.store.base import ObjectStore
from pyscore.server.tables import File
from pyscore.wire.files import htsget_format

IGV_SCRIPT = "igv.min.js"  # the UMD build: a classic script that defines `igv`
PACKAGE_DIR = Path(__file__).parent / "portal" / "viewer"  # package.json + lock of `igv`
DEFAULT_SPAN = 20_000  # bases shown when no region is asked for


@dataclass(frozen=True)
class Kind:
    track: str  # igv.js track type
    fmt: str  # igv.js format
    htsget: Optional[str]  # our htsget endpoint for it, if igv.js reads it that way


KINDS = {
    "BAM": Kind("alignment", "bam", "reads"),
    "CRAM": Kind("alignment", "cram", None),  # igv.js's htsget reader refuses CRAM
    "VCF": Kind("variant", "vcf", "variants"),
}


@dataclass(frozen=True)
class Region:
    name: str
    start: int  # 1-based, inclusive, as samtools writes regions
    end: int

    def __str__(self) -> str:
        return f"{self.name}:{self.start}-{self.end}"


@dataclass(frozen=True)
class View:
    kind: Kind
    via: str  # "htsget" or "url"
    index_id: str
    reference: Optional[tuple[str, str]]  # (FASTA, FAI) object ids
    sequences: list[tuple[str, int]]  # the genome igv.js navigates
    region: Region


def problem(message: str, status: int = 400) -> ApiError:
    return ApiError(status, "viewer.problem", message)


def kind_of(file_name: str) -> Kind | None:
    """How the viewer reads a file, by its name; None: it cannot show it."""
    return KINDS.get(htsget_format(file_name) or "")


REGION = re.compile(r"\s*([^\s:]+)(?::([\d,]+)(?:-([\d,]+))?)?\s*")


def parse_region(text: str) -> Region:
    """`chr1`, `chr1:10000` or `chr1:10,000-12,000` (1-based, inclusive); else a problem."""
    match = REGION.fullmatch(text[:200])
    if not match:
        raise problem(f"{text[:80]!r} is not a region; write it as chr1:10000-12000")
    name = match[1]
    start = int(match[2].replace(",", "")) if match[2] else 1
    end = int(match[3].replace(",", "")) if match[3] else start + DEFAULT_SPAN - 1
    if start < 1 or end < start:
        raise problem(f"{text[:80]!r} is not a region: it starts at 1 or more and ends no earlier")
    return Region(name, start, end)


def within(region: Region, sequences: list[tuple[str, int]], genome: str) -> Region:
    """The region, clipped to its sequence's end; a problem if the genome has no such
    sequence or the region starts past its end."""
    lengths = dict(sequences)
    if region.name not in lengths:
        names = ", ".join(n for n, _ in sequences[:8]) + (", …" if len(sequences) > 8 else "")
        raise problem(f"{region.name} is not a sequence of {genome} ({names})")
    length = lengths[region.name]
    if region.start > length:
        raise problem(
            f"{region} starts past the end of {region.name}, which is {length:,} bases long"
        )
    return Region(region.name, region.start, min(region.end, length))


def plan(
    session: Session,
    store: ObjectStore,
    f: File,
    reference_id: str,
    region_text: str | None,
    via: str | None,
) -> View:
    """How to show `f` (a published file the caller may read), or a problem saying why not."""
    kind = kind_of(f.file_name)
    if kind is None:
        raise problem(
            f"The viewer shows BAM, CRAM and VCF (.vcf.gz) files; {f.file_name} is "
            f"{f.file_type or 'another kind of file'}. Download it instead."
        )
    index = next(iter(metadata.index_files(session, f.object_id)), None)
    if index is None:
        raise problem(
            f"{f.file_name} has no index file published with it, so no region of it can be "
            "read; download the whole file instead."
        )
    via = via if via in ("htsget", "url") and (via == "url" or kind.htsget) else None
    reference = _reference(session, store, reference_id) if reference_id else None
    if reference is None and kind.fmt == "cram":
        raise problem(
            "A CRAM is decoded against its reference genome, and this server names none "
            "(its operator sets viewer_reference); download the file instead.",
            status=503,
        )
    if reference is not None:
        sequences, genome = reference[2], "the reference genome"
    else:
        sequences, genome = _header_sequences(session, store, f, kind), f.file_name
    if region_text:
        region = within(parse_region(region_text), sequences, genome)
    elif sequences:
        name, length = sequences[0]
        region = Region(name, 1, min(length, DEFAULT_SPAN))
    else:
        raise problem(f"{genome} names no sequence to show")
    return View(
        kind,
        via or ("htsget" if kind.htsget else "url"),
        index.object_id,
        reference[:2] if reference else None,
        sequences,
        region,
    )


def _reference(
    session: Session, store: ObjectStore, object_id: str
) -> tuple[str, str, list[tuple[str, int]]]:
    """(FASTA id, FAI id, sequences) of the configured reference, or a problem for the
    operator to fix."""
    fasta = session.get(File, object_id)
    fai = next(iter(metadata.index_files(session, object_id)), None) if fasta else None
    if fasta is None or fai is None or objects.analysis_state(session, fasta) != "PUBLISHED":
        raise problem(
            f"The reference genome this server names (viewer_reference {object_id}) is not a "
            "published FASTA with its .fai index; its operator can fix the setting.",
            status=503,
        )
    obj = objects.stored(session, fai.object_id)
    sequences = memo.get(
        ("fai", *version(store, obj)),
        lambda: parse_fai(store.read_range(fai.object_id, 0, obj.size)),
        obj.size,
    )
    return fasta.object_id, fai.object_id, sequences


def parse_fai(data: bytes) -> list[tuple[str, int]]:
    """(name, length) of each sequence a FASTA index (.fai) lists."""
    out = []
    for line in data.decode(errors="replace").splitlines():
        fields = line.split("\t")
        if len(fields) >= 2 and fields[1].isdigit():
            out.append((fields[0], int(fields[1])))
    return out


def _header_sequences(session: Session, store: ObjectStore, f: File, kind: Kind) -> list:
    obj = objects.stored(session, f.object_id)
    blocks = Blocks(lambda offset, length: store.read_range(f.object_id, offset, length), obj.size)

    def read() -> list[tuple[str, int]]:
        return bam_references(blocks)[1] if kind.fmt == "bam" else vcf_references(blocks, False)

    try:
        return memo.get(("sequences", *version(store, obj)), read, 64 * 1024)
    except FormatError as exc:
        raise problem(f"{f.file_name}: {exc}") from None


def igv_script(settings: Settings) -> Path | None:
    """The igv.js bundle to serve: under `viewer_igv` if set, else the data directory's
    (`score-server viewer install`), else the one beside the package (scripts/setup.sh)."""
    if settings.viewer_igv:
        roots = [Path(settings.viewer_igv)]
    else:
        roots = [settings.data_dir / "viewer", PACKAGE_DIR]
    for root in roots:
        for place in (root, root / "dist", root / "node_modules" / "igv" / "dist"):
            if (place / IGV_SCRIPT).is_file():
                return place / IGV_SCRIPT
    return None


PICKER_STYLE = re.compile(r"""\.textContent='(\.picker_wrapper\.no_alpha[^'\\]*)'""")


@functools.lru_cache(maxsize=4)
def inline_styles(script: Path, mtime_ns: int) -> tuple[str, ...]:
    """CSP hashes of the one `<style>` igv.js injects as it loads (its colour picker's),
    read from the bundle itself, so the page allows exactly that inline style and no other.
    (Its main stylesheet is a constructed one, which CSP does not govern; the circular
    view's is skipped when a sheet named circular-view.css is on the page.)"""
    found = PICKER_STYLE.search(script.read_text(errors="replace"))
    if found is None:
        return ()
    digest = hashlib.sha256(found[1].encode()).digest()
    return (f"'sha256-{base64.b64encode(digest).decode()}'",)
