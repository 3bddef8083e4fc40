"""Slicing with htslib (pysam): the records of some regions of an alignment or variant file,
read from a local file, a signed URL (with its index fetched beforehand), or the blocks an
htsget ticket names, into SAM/BAM/CRAM or VCF/BCF."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from pyscore.client.errors import ScoreError, UsageError
from pyscore.client.view.htsget import Tickets, unchecked
from pyscore.client.view.naming import VARIANT_SUFFIXES
from pyscore.client.view.regions import UNMAPPED, Region, check_region

if TYPE_CHECKING:  # htslib loads when a file is sliced, after the first requests left
    import pysam


@dataclass
class Source:
    """Where htslib should read: data path or URL, a local index, the name for messages;
    or, with `tickets`, the server's htsget endpoint (then `data` is the header's file,
    fetched when first needed: `records` of one region needs none)."""

    data: str
    index: Optional[str]
    name: str
    tickets: Optional[Tickets] = None


def _data_of(source: Source) -> str:
    """What htslib opens: through htsget, the header's ticket asked on first use."""
    if not source.data and source.tickets is not None:
        source.data = str(source.tickets.header())
    return source.data


def _open_reads(source: Source, reference: str | None) -> pysam.AlignmentFile:
    import pysam

    try:
        return pysam.AlignmentFile(
            _data_of(source), "r", index_filename=source.index, reference_filename=reference
        )
    except (OSError, ValueError) as exc:
        hint = ""
        if source.name.lower().endswith(".cram") and not reference:
            hint = " (a CRAM needs its reference: --reference-file)"
        raise ScoreError(f"{source.name}: cannot open: {exc}{hint}") from None


def _open_variants(source: Source) -> pysam.VariantFile:
    import pysam

    try:
        return pysam.VariantFile(_data_of(source), index_filename=source.index)
    except (OSError, ValueError) as exc:
        raise ScoreError(f"{source.name}: cannot open: {exc}") from None


def _cram_hint(source: Source) -> str:
    if source.name.lower().endswith(".cram"):
        return " (is the CRAM's reference available? pass --reference-file)"
    return ""


def _wanted(
    source: Source, handle: Any, regions: list[Region], header_only: bool
) -> list[tuple[Optional[str], int, int]]:
    """The regions in htslib's coordinates, checked against the file's header; a file
    without an index cannot give regions (unless the server's htsget slices it)."""
    import pysam

    reads = isinstance(handle, pysam.AlignmentFile)
    if reads:
        contigs = dict(zip(handle.references, handle.lengths))
    else:
        contigs = {
            str(name): (rec.length or 2**31 - 1) for name, rec in handle.header.contigs.items()
        }
    wanted: list[tuple[Optional[str], int, int]] = [
        check_region(r, contigs, source.name) for r in regions
    ]
    if not reads and any(contig == UNMAPPED for contig, _, _ in wanted):
        raise UsageError(f"{source.name}: '*' (unmapped reads) applies to alignment files")
    indexed = handle.has_index() if reads else handle.index is not None
    if wanted and not header_only and source.tickets is None and not indexed:
        raise ScoreError(f"{source.name}: no index available, so regions cannot be sliced")
    return wanted


def records(
    source: Source, regions: list[Region], reference: Optional[str] = None
) -> Iterator[Any]:
    """The records of the regions (none given: the whole file) as pysam objects: what
    `view` writes, for a program to use."""
    import pysam

    reads = not source.name.lower().endswith(VARIANT_SUFFIXES)
    pysam.set_verbosity(0)  # errors come as one-line ScoreErrors, htslib's lines would repeat
    if source.tickets is not None and len(regions) <= 1:
        yield from _one_ticket(source, regions[0] if regions else None, reads, reference)
        return
    handle = _open_reads(source, reference) if reads else _open_variants(source)
    hint = _cram_hint(source)
    with closing_quietly(handle, source.name) as inp:
        for contig, start, end in _wanted(source, inp, regions, False) or [(None, 0, 0)]:
            yield from _records(source, inp, contig, start, end, hint, reference)


def _one_ticket(
    source: Source, region: Optional[Region], reads: bool, reference: Optional[str]
) -> Iterator[Any]:
    """One region (None: the whole file) through htsget in one ticket: its answer is a file
    of its own, header first, so the region is checked against that header and the header's
    own ticket is asked only when the server refuses the region, to give the error checking
    it first would have."""
    assert source.tickets is not None
    try:
        path = source.tickets.region(*unchecked(region))
    except ScoreError as refused:
        raise (_region_error(source, region, reads, reference) or refused) from None
    hint = _cram_hint(source)
    with closing_quietly(_open_part(source, path, reads, reference, hint), source.name) as part:
        for contig, start, end in _wanted(source, part, [region] if region else [], False) or [
            (None, 0, 0)
        ]:
            yield from _kept(source, part, contig, start, end, reads, hint)


def _region_error(
    source: Source, region: Optional[Region], reads: bool, reference: Optional[str]
) -> Optional[UsageError]:
    """What the file's header says is wrong with a region, if anything."""
    if region is None:
        return None
    try:
        handle = _open_reads(source, reference) if reads else _open_variants(source)
        with closing_quietly(handle, source.name):
            _wanted(source, handle, [region], False)
    except UsageError as wrong:
        return wrong
    except ScoreError:
        pass
    return None


def alignment_format(output_format: str) -> str:
    fmt = output_format.upper()
    if fmt not in ("SAM", "BAM", "CRAM"):
        raise UsageError(f"--output-format {output_format} is not SAM, BAM or CRAM")
    return fmt


def slice_reads(
    source: Source,
    regions: list[Region],
    out: str,
    output_format: str = "SAM",
    header_only: bool = False,
    contained: bool = False,
    reference: str | None = None,
) -> None:
    """Write the alignments overlapping (or contained in) the regions (`out` "-": stdout)."""
    fmt = alignment_format(output_format)
    if fmt == "CRAM" and not reference:
        raise UsageError("CRAM output needs --reference-file")
    with closing_quietly(_open_reads(source, reference), source.name) as inp:
        wanted = _wanted(source, inp, regions, header_only)
        if not header_only and samtools_can_copy(source, fmt, wanted, contained):
            samtools_copy(source, wanted, out, fmt)
        else:
            _copy_records(source, inp, wanted, out, fmt, header_only, contained, reference)


def samtools_can_copy(
    source: Source, fmt: str, wanted: list[tuple[Optional[str], int, int]], contained: bool
) -> bool:
    """Whether samtools' own `view`, in C, can write the slice: a BAM into SAM or BAM, the
    whole file or one region of a contig. Python's loop (a call per record, ~2 µs each)
    keeps the rest: several regions (each written in turn, overlaps repeated), '*',
    --contained, CRAM on either side (its decoding and writing options stay as they were)."""
    return (
        fmt in ("SAM", "BAM")
        and source.name.lower().endswith(".bam")
        and (not wanted or (len(wanted) == 1 and not contained and wanted[0][0] != UNMAPPED))
    )


_SAMTOOLS = threading.Lock()  # samtools' main, run in this process, keeps global state
# threads that inflate and format beside samtools' own (halves its time on 2 cores; the
# blocks and lines written are the same)
SAMTOOLS_THREADS = min(4, os.cpu_count() or 1)


def samtools_copy(
    source: Source, wanted: list[tuple[Optional[str], int, int]], out: str, fmt: str
) -> None:
    """`samtools view -h --no-PG` in this process (pysam's copy of it): htslib reads,
    filters and writes in C. A file or URL with an index: samtools queries the region (an
    index it cannot use is an error, as before). The blocks of an htsget answer (no index,
    records on either side of the region): samtools keeps those overlapping the region given
    as a BED file, htslib's test, the records the index query would return."""
    import pysam

    contig, start, end = wanted[0] if wanted else (None, 0, 0)
    where = "the file" if contig is None else f"{contig}:{start + 1}-{end}"
    args = ["-h", "--no-PG", "-O", fmt, "-o", out, "-@", str(SAMTOOLS_THREADS)]
    with contextlib.ExitStack() as stack:
        if source.tickets is not None:
            if contig is not None:
                bed = stack.enter_context(tempfile.NamedTemporaryFile("w", suffix=".bed"))
                bed.write(f"{contig}\t{start}\t{end}\n")
                bed.flush()
                args += ["-L", bed.name]
            args.append(str(source.tickets.region(contig, start, end)))
        else:
            args += ["-X", source.data, source.index] if source.index else [source.data]
            if contig is not None:
                args.append(f"{{{contig}}}:{start + 1}-{end}")  # {}: a name may hold ':'
        if out == "-":
            sys.stdout.flush()
        try:
            with _SAMTOOLS:
                pysam.samtools.view(*args, catch_stdout=False)
        except pysam.SamtoolsError as exc:
            said = str(exc.value).partition("stderr=")[2].strip().splitlines() or [""]
            reason = said[0].removeprefix("samtools view: ") or str(exc.value)
            raise ScoreError(f"{source.name}: reading {where} failed: {reason}") from None


def _copy_records(
    source: Source,
    inp: pysam.AlignmentFile,
    wanted: list[tuple[Optional[str], int, int]],
    out: str,
    fmt: str,
    header_only: bool,
    contained: bool,
    reference: str | None,
) -> None:
    """The records written one by one from Python: every case `samtools_copy` leaves."""
    import pysam

    mode = {"SAM": "w", "BAM": "wb", "CRAM": "wc"}[fmt]
    hint = _cram_hint(source)
    dst = pysam.AlignmentFile(out, mode, template=inp, reference_filename=reference)
    with closing_quietly(dst, out):
        if header_only:
            return
        for contig, start, end in wanted or [(None, 0, 0)]:
            for read in _records(source, inp, contig, start, end, hint, reference):
                if (
                    contained
                    and contig not in (None, UNMAPPED)
                    and (
                        read.reference_start < start
                        or (read.reference_end or read.reference_start + 1) > end
                    )
                ):
                    continue
                dst.write(read)


def _records(
    source: Source,
    handle,
    contig: str | None,
    start: int,
    end: int,
    hint: str = "",
    reference: str | None = None,
) -> Iterator:
    """A region's records: from the remote file through its index, or, through htsget,
    from the ticket's blocks, keeping exactly the records the index query would return."""
    import pysam

    if source.tickets is None:
        yield from _fetch(handle, contig, start, end, source.name, hint)
        return
    path = source.tickets.region(contig, start, end)
    reads = isinstance(handle, pysam.AlignmentFile)
    with closing_quietly(_open_part(source, path, reads, reference, hint), source.name) as part:
        yield from _kept(source, part, contig, start, end, reads, hint)


def _open_part(source: Source, path: Any, reads: bool, reference: Optional[str], hint: str) -> Any:
    """A ticket's answer, opened."""
    import pysam

    try:
        if reads:
            return pysam.AlignmentFile(str(path), "r", reference_filename=reference)
        return pysam.VariantFile(str(path))
    except (OSError, ValueError) as exc:
        raise ScoreError(f"{source.name}: cannot read the htsget answer: {exc}{hint}") from None


def _kept(
    source: Source, part: Any, contig: Optional[str], start: int, end: int, reads: bool, hint: str
) -> Iterator[Any]:
    """The records of a ticket's answer that the index query would return: the answer's
    blocks may hold records either side of the region."""
    for rec in _fetch(part, None, 0, 0, source.name, hint):
        if contig is None or _overlaps(rec, reads, contig, start, end):
            yield rec


def _overlaps(rec, reads: bool, contig: str, start: int, end: int) -> bool:
    """htslib's region test: begins before the end, ends after the start."""
    if reads:
        if contig == UNMAPPED:
            return rec.reference_id < 0
        if rec.reference_name != contig:
            return False
        first = rec.reference_start
        last = rec.reference_end if rec.reference_end is not None else first + 1
        return first < end and last > start
    return rec.contig == contig and rec.start < end and rec.stop > start


class closing_quietly:
    """Close an htslib handle; a failure to close becomes a ScoreError, unless an error is
    already on its way out (htslib's close would only repeat it)."""

    def __init__(self, handle, name: str) -> None:
        self.handle, self.name = handle, name

    def __enter__(self):
        return self.handle

    def __exit__(self, kind, exc, tb) -> None:
        try:
            self.handle.close()
        except (OSError, ValueError) as error:
            if kind is None:
                raise ScoreError(f"{self.name}: closing failed: {error}") from None


def _fetch(handle, contig: str | None, start: int, end: int, name: str, hint: str = "") -> Iterator:
    """Records of a region (None: the whole file), with read errors as one-line ScoreErrors."""
    import pysam

    where = (
        "the file"
        if contig is None
        else "unmapped reads"
        if contig == UNMAPPED
        else f"{contig}:{start + 1}-{end}"
    )
    try:
        if contig is None:
            yield from (
                handle.fetch(until_eof=True)
                if isinstance(handle, pysam.AlignmentFile)
                else handle.fetch()
            )
        elif contig == UNMAPPED:
            yield from handle.fetch(region=UNMAPPED)
        else:
            yield from handle.fetch(contig, start, end)
    except (OSError, ValueError) as exc:
        raise ScoreError(f"{name}: reading {where} failed: {exc}{hint}") from None


def slice_variants(
    source: Source,
    regions: list[Region],
    out: str,
    output_format: str = "VCF",
    header_only: bool = False,
) -> int:
    import pysam

    fmt = output_format.upper()
    if fmt not in ("VCF", "BCF", "SAM"):  # SAM is the option's default: treat as VCF text
        raise UsageError(f"--output-format {output_format} is not VCF or BCF for variants")
    mode = "wb" if fmt == "BCF" else "w"
    inp = _open_variants(source)
    count = 0
    with closing_quietly(inp, source.name):
        wanted = _wanted(source, inp, regions, header_only)
        with closing_quietly(pysam.VariantFile(out, mode, header=inp.header), out) as dst:
            if header_only:
                return 0
            for contig, start, end in wanted or [(None, 0, 0)]:
                for rec in _records(source, inp, contig, start, end):
                    dst.write(rec)
                    count += 1
    return count
