"""Region slicing of remote (or local) BAM, CRAM and VCF through htslib, fetching only the
blocks the index points at.

htslib reads the data file over HTTP Range on a signed whole-object URL. The index is fetched
first into a private temporary directory: htslib otherwise caches remote indexes in the
current directory by file name and reuses stale ones.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pysam

from pyscore.client.errors import ScoreError, UsageError
from pyscore.client.safefiles import data_mode
from pyscore.wire.files import INDEX_SUFFIXES, htsget_format

ALIGNMENT_SUFFIXES = (".bam", ".sam", ".cram")
INDEX_LIMIT = 1024 * 1024 * 1024  # a whole-genome BAI is ~10 MB
VARIANT_SUFFIXES = (".vcf.gz", ".vcf.bgz", ".bcf", ".vcf")
REGION = re.compile(r"^(?P<contig>[^:]+?)(?::(?P<start>[\d,]+)(?:-(?P<end>[\d,]+))?)?$")


@dataclass(frozen=True)
class Region:
    contig: str
    start: int | None = None  # 1-based, inclusive
    end: int | None = None

    def label(self) -> str:
        if self.start is None:
            return self.contig
        return f"{self.contig}:{self.start}" + (f"-{self.end}" if self.end is not None else "")


def parse_region(text: str) -> Region:
    """`seq`, `seq:start` or `seq:start-end` (1-based, inclusive; commas allowed)."""
    match = REGION.match(text.strip())
    if not match:
        raise UsageError(f"Bad region {text!r}: use contig, contig:start or contig:start-end")
    start = int(match["start"].replace(",", "")) if match["start"] else None
    end = int(match["end"].replace(",", "")) if match["end"] else None
    if start is not None and start < 1:
        raise UsageError(f"Bad region {text!r}: positions start at 1")
    if start is not None and end is not None and end < start:
        raise UsageError(f"Bad region {text!r}: end {end:,} is before start {start:,}")
    return Region(match["contig"], start, end)


def parse_bed(path: Path) -> list[Region]:
    """BED lines (0-based, half-open) as 1-based regions; header/comment lines skipped."""
    regions = []
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise UsageError(f"Cannot read BED file {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith(("#", "track", "browser")):
            continue
        cells = line.split("\t")
        try:
            start, end = int(cells[1]), int(cells[2])
        except (IndexError, ValueError):
            raise UsageError(f"{path} line {number}: expected contig<TAB>start<TAB>end") from None
        if end <= start:
            raise UsageError(f"{path} line {number}: end {end} is not after start {start}")
        regions.append(Region(cells[0], start + 1, end))
    return regions


def kind_of(name: str) -> str:
    lowered = name.lower()
    if lowered.endswith(VARIANT_SUFFIXES):
        return "variants"
    if lowered.endswith(ALIGNMENT_SUFFIXES):
        return "reads"
    raise UsageError(f"{name} is not an alignment (BAM/SAM/CRAM) or variant (VCF/BCF) file")


@dataclass
class Source:
    """Where htslib should read: data path or URL, a local index, the name for messages;
    or, with `tickets`, the server's htsget endpoint (then `data` is the header's file)."""

    data: str
    index: str | None
    name: str
    tickets: Tickets | None = None


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
            region = {"referenceName": contig}
            if contig != UNMAPPED:
                region.update(start=start, end=end)
            body["regions"] = [region]
        return self._fetch(body)

    def _fetch(self, body: dict) -> Path:
        import base64

        url = f"{self.api.settings.storage_url}/htsget/{self.kind}/{self.object_id}"
        ticket = self.api.request(
            "POST", url, f"htsget ticket for {self.object_id}", json=body
        ).json()["htsget"]
        self.count += 1
        path = self.folder / f"part{self.count}.{self.fmt.lower()}"
        with open(path, "wb") as out:
            for block in ticket["urls"]:  # in order
                if block["url"].startswith("data:"):
                    out.write(base64.b64decode(block["url"].split(",", 1)[1]))
                else:
                    _fetch_into(
                        self.api,
                        block["url"],
                        out,
                        f"an htsget block of {self.object_id}",
                        block.get("headers"),
                    )
        return path


UNMAPPED = "*"


def check_region(region: Region, contigs: dict[str, int], name: str) -> tuple[str, int, int]:
    """The region as pysam's 0-based half-open coordinates, validated against the header.
    '*' (unplaced unmapped reads) comes back as ('*', 0, 0)."""
    if region.contig == UNMAPPED and region.start is None and UNMAPPED not in contigs:
        return UNMAPPED, 0, 0
    if region.contig not in contigs:
        known = ", ".join(list(contigs)[:10]) + (", ..." if len(contigs) > 10 else "")
        raise UsageError(f"{name}: unknown contig '{region.contig}' (the file has {known})")
    length = contigs[region.contig]
    start = (region.start or 1) - 1
    if start >= length:
        raise UsageError(
            f"{name}: {region.label()} starts beyond the end of {region.contig} ({length:,} bp)"
        )
    end = min(region.end if region.end is not None else length, length)
    return region.contig, start, end


def _open_reads(source: Source, reference: str | None) -> pysam.AlignmentFile:
    try:
        return pysam.AlignmentFile(
            source.data, "r", index_filename=source.index, reference_filename=reference
        )
    except (OSError, ValueError) as exc:
        hint = ""
        if source.name.lower().endswith(".cram") and not reference:
            hint = " (a CRAM needs its reference: --reference-file)"
        raise ScoreError(f"{source.name}: cannot open: {exc}{hint}") from None


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
) -> int:
    """Write the alignments overlapping (or contained in) the regions; return how many."""
    fmt = alignment_format(output_format)
    mode = {"SAM": "w", "BAM": "wb", "CRAM": "wc"}[fmt]
    if fmt == "CRAM" and not reference:
        raise UsageError("CRAM output needs --reference-file")
    count = 0
    hint = ""
    if source.name.lower().endswith(".cram"):
        hint = " (is the CRAM's reference available? pass --reference-file)"
    with closing_quietly(_open_reads(source, reference), source.name) as inp:
        contigs = dict(zip(inp.references, inp.lengths))
        wanted = [check_region(r, contigs, source.name) for r in regions]
        if wanted and not header_only and source.tickets is None and not inp.has_index():
            raise ScoreError(f"{source.name}: no index available, so regions cannot be sliced")
        dst = pysam.AlignmentFile(out, mode, template=inp, reference_filename=reference)
        with closing_quietly(dst, out):
            if header_only:
                return 0
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
                    count += 1
    return count


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
    if source.tickets is None:
        yield from _fetch(handle, contig, start, end, source.name, hint)
        return
    path = source.tickets.region(contig, start, end)
    reads = isinstance(handle, pysam.AlignmentFile)
    try:
        part = (
            pysam.AlignmentFile(str(path), "r", reference_filename=reference)
            if reads
            else pysam.VariantFile(str(path))
        )
    except (OSError, ValueError) as exc:
        raise ScoreError(f"{source.name}: cannot read the htsget answer: {exc}{hint}") from None
    with closing_quietly(part, source.name):
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
    fmt = output_format.upper()
    if fmt not in ("VCF", "BCF", "SAM"):  # SAM is the option's default: treat as VCF text
        raise UsageError(f"--output-format {output_format} is not VCF or BCF for variants")
    mode = "wb" if fmt == "BCF" else "w"
    try:
        inp = pysam.VariantFile(source.data, index_filename=source.index)
    except (OSError, ValueError) as exc:
        raise ScoreError(f"{source.name}: cannot open: {exc}") from None
    count = 0
    with closing_quietly(inp, source.name):
        contigs = {name: (rec.length or 2**31 - 1) for name, rec in inp.header.contigs.items()}
        wanted = [check_region(r, contigs, source.name) for r in regions]
        if any(contig == UNMAPPED for contig, _, _ in wanted):
            raise UsageError(f"{source.name}: '*' (unmapped reads) applies to alignment files")
        if wanted and not header_only and source.tickets is None and inp.index is None:
            raise ScoreError(f"{source.name}: no index available, so regions cannot be sliced")
        with closing_quietly(pysam.VariantFile(out, mode, header=inp.header), out) as dst:
            if header_only:
                return 0
            for contig, start, end in wanted or [(None, 0, 0)]:
                for rec in _records(source, inp, contig, start, end):
                    dst.write(rec)
                    count += 1
    return count


def output_name(
    file_name: str, regions: list[Region], header_only: bool, bed: Path | None, ext: str
) -> str:
    """The original's naming: <base>.<q1>__<q2>.<ext>, .header., or .<bed name>., ≤128 chars."""
    base = file_name
    for suffix in (*VARIANT_SUFFIXES, *ALIGNMENT_SUFFIXES):
        if base.lower().endswith(suffix):
            base = base[: -len(suffix)]
            break
    if header_only:
        middle = "header"
    elif bed is not None:
        middle = bed.name
    else:
        middle = "__".join(r.label().replace(":", "_") for r in regions) or "all"
    name = f"{base}.{middle}.{ext}"
    if len(name) > 128:
        name = name[: 127 - len(ext) - 1] + "~." + ext
    return name


def private_workdir() -> tempfile.TemporaryDirectory:
    """A directory for htslib's side files (downloaded indexes) that nobody else shares."""
    return tempfile.TemporaryDirectory(prefix="score-view-")


def run_in(directory: str):
    """Context manager: chdir for the duration (htslib writes index caches to the cwd)."""
    from contextlib import contextmanager

    @contextmanager
    def _cd():
        previous = os.getcwd()
        os.chdir(directory)
        try:
            yield
        finally:
            os.chdir(previous)

    return _cd()


# -- the command, over local files or remote objects ----------------------------------------
@dataclass
class Job:
    regions: list[Region]
    output_format: str = "SAM"
    header_only: bool = False
    contained: bool = False
    output_dir: Path | None = None
    output_index: bool = False
    reference: str | None = None
    bed: Path | None = None
    written: set[str] = field(default_factory=set)  # output names used so far

    def absolute(self) -> None:
        """Pin relative paths before slicing chdirs into a private directory."""
        if self.output_dir is not None:
            self.output_dir = self.output_dir.resolve()
        if self.reference:
            self.reference = str(Path(self.reference).resolve())


def _extension(kind: str, fmt: str) -> str:
    if kind == "variants":
        return "bcf" if fmt == "BCF" else "vcf"
    return fmt.lower()


def slice_one(job: Job, source: Source) -> Path | None:
    """Slice one file to stdout or into job.output_dir; return the written path, if any.
    A file is written (and indexed) under a temporary name, then renamed: no partial output
    under the final name, and no link planted at that name is written through."""
    kind = kind_of(source.name)
    fmt = job.output_format.upper()
    if kind == "variants" and fmt == "SAM":
        fmt = "VCF"
    pysam.set_verbosity(0)  # our one-line errors say what failed; htslib's lines would repeat it
    if job.output_dir is None:
        _slice_to(job, source, kind, fmt, "-")
        return None
    job.output_dir.mkdir(parents=True, exist_ok=True)
    ext = _extension(kind, fmt)
    name = output_name(source.name, job.regions, job.header_only, job.bed, ext)
    if name in job.written:  # a.bam and a.cram would both give a.<region>.sam
        name = output_name(source.name + ".x", job.regions, job.header_only, job.bed, ext)
    job.written.add(name)
    path = job.output_dir / name
    fd, tmp = tempfile.mkstemp(dir=job.output_dir, prefix=".score-view-", suffix=f"-{name}")
    os.close(fd)
    try:
        _slice_to(job, source, kind, fmt, tmp)
        os.chmod(tmp, data_mode())
        for suffix in INDEX_SUFFIXES:  # an index first: never a data file without its index
            if os.path.exists(tmp + suffix):
                os.replace(tmp + suffix, str(path) + suffix)
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, *(tmp + suffix for suffix in INDEX_SUFFIXES)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
    return path


def _slice_to(job: Job, source: Source, kind: str, fmt: str, out: str) -> None:
    """Slice into `out` ("-": stdout), indexing a written file if asked."""
    if kind == "variants":
        slice_variants(source, job.regions, out, fmt, job.header_only)
    else:
        slice_reads(source, job.regions, out, fmt, job.header_only, job.contained, job.reference)
    if out == "-" or not job.output_index or job.header_only or fmt in ("SAM", "VCF"):
        return  # SAM and plain-text VCF cannot be indexed
    if kind == "reads":
        pysam.index(out)
    else:
        pysam.tabix_index(out, preset="vcf", force=True, csi=fmt == "BCF")


def run_local(job: Job, data: Path, index: Path | None) -> int:
    if not data.is_file():
        raise UsageError(f"--input-file {data} does not exist")
    if index is not None and not index.is_file():
        raise UsageError(f"--input-file-index {index} does not exist")
    data = data.resolve()  # before the chdir below
    index = index.resolve() if index else None
    job.absolute()
    with private_workdir() as tmp, run_in(tmp):
        slice_one(job, Source(str(data), str(index) if index else None, data.name))
    return 0


def _direct_source(api, entity, job: Job, folder: Path) -> Source:
    """The original's way: htslib on a signed whole-object URL, the index fetched first."""
    data_url = api.download_spec(entity.id, external=True).parts[0].url or ""
    index = api.index_entity(entity)
    if index is None:
        if job.regions and not job.header_only:
            raise ScoreError(
                f"{entity.fileName}: no index file (.bai/.crai/.tbi/.csi) is "
                "registered beside it, so regions cannot be sliced"
            )
        return Source(data_url, None, entity.fileName)
    index_path = folder / f"index-{index.fileName}"
    with open(index_path, "wb") as out:
        _fetch_into(
            api,
            api.download_spec(index.id, external=True).parts[0].url or "",
            out,
            f"the index {index.fileName}",
            limit=INDEX_LIMIT,
        )
    return Source(data_url, str(index_path), entity.fileName)


def _speaks_htsget(api) -> bool:
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


def _fetch_into(
    api, url: str, out, what: str, headers: dict | None = None, limit: int | None = None
) -> None:
    """A signed object-store URL's bytes appended to `out` (refused beyond `limit` bytes)."""
    import httpx

    got = 0
    try:
        with api.store.stream("GET", url, headers=headers) as r:
            if r.status_code >= 400:
                raise ScoreError(f"object store answered {r.status_code} for {what}")
            for chunk in r.iter_bytes(1024 * 1024):
                got += len(chunk)
                if limit is not None and got > limit:
                    raise ScoreError(f"{what} is larger than {limit:,} bytes; stopped reading")
                out.write(chunk)
    except httpx.HTTPError as exc:
        raise ScoreError(f"downloading {what} failed: {exc}") from None


def run_remote(
    job: Job, settings, object_ids: list[str], verify: bool = True, from_manifest: bool = False
) -> int:
    from pyscore.client.api import Api

    api = Api(settings)
    failures = 0
    htsget: bool | None = None  # does this server speak GA4GH htsget? (asked once)
    job.absolute()
    try:
        if verify:
            api.ping()
        for object_id in object_ids:
            entity = api.entity(object_id)
            try:
                kind = kind_of(entity.fileName)
            except UsageError:
                if from_manifest:
                    continue  # the original skips non-alignment rows of a manifest
                raise
            fmt = htsget_format(entity.fileName)
            if fmt and htsget is None:
                htsget = settings.get("view.htsget") != "false" and _speaks_htsget(api)
            with private_workdir() as tmp, run_in(tmp):
                try:
                    if fmt and htsget:
                        tickets = Tickets(api, object_id, kind, fmt, Path(tmp))
                        source = Source(str(tickets.header()), None, entity.fileName, tickets)
                    else:
                        source = _direct_source(api, entity, job, Path(tmp))
                    written = slice_one(job, source)
                except ScoreError:
                    if not from_manifest:
                        raise
                    failures += 1
                    continue
            if written is not None:
                print(f"Wrote {written}", file=sys.stderr)
    finally:
        api.close()
    return 1 if failures else 0
