"""The `view` command over local files or remote objects: where each object's bytes come from
(htsget tickets, or a signed URL and its index), what its output is called, and many objects
sliced side by side (SLICES_AT_ONCE), their outputs and messages in input order.

htslib reads remote files over HTTP Range and caches remote indexes in the current directory,
so the whole run works in a private temporary directory (one chdir for the process, one
subdirectory per object).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from pyscore.client.errors import (
    EXIT_AUTH,
    EXIT_FAILED,
    EXIT_OK,
    AuthError,
    ScoreError,
    SettingError,
    UsageError,
)
from pyscore.client.layout import unique_name
from pyscore.client.safefiles import data_mode
from pyscore.client.view.htsget import INDEX_LIMIT, Tickets, fetch_into, speaks_htsget
from pyscore.client.view.naming import extension, kind_of, output_name
from pyscore.client.view.regions import Region
from pyscore.client.view.slicing import Source, slice_reads, slice_variants
from pyscore.wire.files import INDEX_SUFFIXES, htsget_format
from pyscore.wire.manifest import ManifestRow
from pyscore.wire.song import Entity

SLICES_AT_ONCE = 8


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def private_workdir() -> tempfile.TemporaryDirectory[str]:
    """A directory for htslib's side files (downloaded indexes) that nobody else shares."""
    return tempfile.TemporaryDirectory(prefix="score-view-")


@contextlib.contextmanager
def run_in(directory: str) -> Iterator[None]:
    """chdir for the duration (htslib writes index caches to the cwd)."""
    previous = os.getcwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(previous)


@dataclass
class Job:
    regions: list[Region]
    output_format: str = "SAM"
    header_only: bool = False
    contained: bool = False
    output_dir: Optional[Path] = None
    output_index: bool = False
    reference: Optional[str] = None
    bed: Optional[Path] = None
    written: dict[str, str] = field(default_factory=dict)  # output name → object id
    named: dict[str, str] = field(default_factory=dict)  # output name → its input's name

    def absolute(self) -> None:
        """Pin relative paths before slicing chdirs into a private directory."""
        if self.output_dir is not None:
            self.output_dir = self.output_dir.resolve()
        if self.reference:
            self.reference = str(Path(self.reference).resolve())

    def format_of(self, kind: str) -> str:
        fmt = self.output_format.upper()
        return "VCF" if kind == "variants" and fmt == "SAM" else fmt

    def name_for(self, file_name: str, object_id: str = "") -> tuple[str, Optional[str]]:
        """The output name of a file (decided in input order), and a line to say when it is
        made unique by object id. When an earlier input has its name, a.bam and a.cram both
        giving a.<region>.sam, the second keeps its own extension (a.cram.<region>.sam),
        which says where it came from; two BAMs of one name (in different studies), the
        second is made unique by object id."""
        kind = kind_of(file_name)
        ext = extension(kind, self.format_of(kind))
        parts = (self.regions, self.header_only, self.bed, ext)
        name = output_name(file_name, *parts)
        first = self.written.get(name)
        said = None
        if first is not None:
            own = output_name(file_name, *parts, own_suffix=True)
            if own in self.written or self.named[name] == file_name:
                own = unique_name(name, object_id or str(len(self.written)))
                said = (
                    f"{file_name} (object id '{object_id}') would be written as '{name}' "
                    f"like object id '{first}'; writing it as '{own}'"
                )
            name = own
        self.written[name] = object_id
        self.named[name] = file_name
        return name, said


def slice_one(job: Job, source: Source, name: Optional[str] = None) -> Optional[Path]:
    """Slice one file to stdout (no output directory) or into job.output_dir as `name`;
    return the written path, if any. A file is written (and indexed) under a temporary
    name, then renamed: no partial output under the final name, and no link planted at
    that name is written through."""
    import pysam

    kind = kind_of(source.name)
    fmt = job.format_of(kind)
    pysam.set_verbosity(0)  # our one-line errors say what failed; htslib's lines would repeat it
    if job.output_dir is None:
        _slice_to(job, source, kind, fmt, "-")
        return None
    job.output_dir.mkdir(parents=True, exist_ok=True)
    if name is None:
        name = job.name_for(source.name)[0]
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
    import pysam

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


def run_local(job: Job, data: Path, index: Optional[Path]) -> int:
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


def remote_source(
    api: Any,
    entity: Entity,
    folder: Path,
    htsget: bool,
    needs_index: bool,
    index_id: Optional[str] = None,
    index_known: bool = False,
    early: Optional[Tickets] = None,
) -> Source:
    """Where htslib reads a remote object: the server's htsget tickets (`htsget`: it speaks
    htsget, and the format is one it serves), else a signed URL with its index fetched into
    `folder` (`needs_index`: regions are asked, so no index is an error). `early`: tickets
    asked before the file's name was known, used if their kind and format are the file's."""
    fmt = htsget_format(entity.fileName)
    if fmt and htsget:
        kind = kind_of(entity.fileName)
        tickets = early
        if tickets is None or (tickets.kind, tickets.fmt) != (kind, fmt):
            tickets = Tickets(api, entity.id, kind, fmt, folder)
        return Source("", None, entity.fileName, tickets)  # the header's ticket: when needed
    return _direct_source(api, entity, folder, needs_index, index_id, index_known)


def _direct_source(
    api: Any,
    entity: Entity,
    folder: Path,
    needs_index: bool,
    index_id: Optional[str],
    known: bool,
) -> Source:
    """The original's way: htslib on a signed whole-object URL, the index fetched first. The
    index is the manifest's index object id when it names one, else found by listing the
    analysis. The data's URL and the index's lookups go at once."""
    with ThreadPoolExecutor(2) as pool:
        data_url = pool.submit(api.signed_url, entity.id)
        index: Optional[Entity] = api.index_entity(entity) if not known else None
        if known and index_id:
            index = api.entity(index_id)
        url = data_url.result()
    if index is None:
        if needs_index:
            raise ScoreError(
                f"{entity.fileName}: no index file (.bai/.crai/.tbi/.csi) is "
                "registered beside it, so regions cannot be sliced"
            )
        return Source(url, None, entity.fileName)
    index_path = folder / f"index-{index.fileName}"
    with open(index_path, "wb") as out:
        fetch_into(
            api, api.signed_url(index.id), out, f"the index {index.fileName}", limit=INDEX_LIMIT
        )
    return Source(url, str(index_path), entity.fileName)


@dataclass
class Item:
    """One remote object to slice, with what its manifest row already says."""

    object_id: str
    entity: Optional[Entity] = None
    index_id: Optional[str] = None
    index_known: bool = False


def items_of(object_ids: list[str], rows: Optional[list[ManifestRow]] = None) -> list[Item]:
    if not rows:
        return [Item(i) for i in dict.fromkeys(object_ids)]
    out = []
    for r in rows:
        entity = None
        if r.fileName and r.analysisId:
            entity = Entity(r.objectId, r.analysisId, r.fileName, r.studyId or "", "")
        out.append(Item(r.objectId, entity, r.indexObjectId, bool(r.indexObjectId)))
    return out


def run_remote(
    job: Job,
    api: Any,
    object_ids: list[str],
    pinged: Optional[Callable[[], None]] = None,
    from_manifest: bool = False,
    rows: Optional[list[ManifestRow]] = None,
) -> int:
    """Slice every object, SLICES_AT_ONCE at a time. One object: its errors are the run's.
    Several (a manifest, several --object-id): each failure is one line on stderr, the
    others go on, and the exit code is 1; non-alignment rows of a manifest are skipped, as
    the original does. Outputs (files, or stdout in input order) and messages come in
    input order. `pinged`: waits for the connection check begun by the caller, if any."""
    from pyscore.client.api import refusal_summary
    from pyscore.client.lookup import Lookups, ordered

    lookups = Lookups(api)
    items = items_of(object_ids, rows)
    single = len(items) == 1 and not from_manifest
    job.absolute()
    checks = ThreadPoolExecutor(2, thread_name_prefix="view-check")
    htsget_on = api.settings.get("view.htsget") != "false"
    speaks = checks.submit(speaks_htsget, api) if htsget_on else None
    checks.submit(importlib.import_module, "pysam")  # htslib loads while lookups are out
    slicers = ThreadPoolExecutor(SLICES_AT_ONCE, thread_name_prefix="slice")
    failures = 0
    refused: list[tuple[AuthError, str]] = []  # files the token may not read, with their study
    interrupted = False

    def connection_checked() -> None:
        if pinged is not None:
            pinged()

    def prepare(item: Item) -> Entity:
        return item.entity or lookups.entity(item.object_id).result()

    def work(item: Item, entity: Entity, kind: str, name: Optional[str], folder: Path) -> Any:
        htsget = speaks is not None and speaks.result()
        needs_index = bool(job.regions) and not job.header_only
        source = remote_source(
            api, entity, folder, htsget, needs_index, item.index_id, item.index_known
        )
        if job.output_dir is None and not single:
            out = folder / f"out.{extension(kind, job.format_of(kind))}"
            stdout_job = Job(**{**job.__dict__, "output_dir": folder, "written": {}})
            slice_one(stdout_job, source, out.name)
            return out
        return slice_one(job, source, name)

    try:
        with private_workdir() as tmp, run_in(tmp):
            queued: list[tuple[Entity, Future[Any]]] = []
            for number, (item, entity) in enumerate(ordered(prepare, items)):
                if isinstance(entity, ScoreError):
                    connection_checked()
                    if single or isinstance(entity, SettingError):
                        raise entity
                    failures += 1
                    say(f"ERROR: {entity}")
                    continue
                try:
                    kind = kind_of(entity.fileName)
                except UsageError:
                    if from_manifest:
                        continue  # the original skips non-alignment rows of a manifest
                    if single:
                        raise
                    failures += 1
                    print(
                        f"ERROR: {entity.fileName}: not an alignment or variant file",
                        file=sys.stderr,
                    )
                    continue
                name = None
                if job.output_dir is not None:
                    name, said = job.name_for(entity.fileName, entity.id)
                    if said:
                        say(f"WARNING: {said}")
                folder = Path(tmp) / str(number)
                folder.mkdir()
                if single:
                    connection_checked()
                    written = work(item, entity, kind, name, folder)
                    if written is not None:
                        say(f"Wrote {written}")
                    return 0
                queued.append((entity, slicers.submit(work, item, entity, kind, name, folder)))
            for entity, future in queued:
                try:
                    written = future.result()
                except SettingError:
                    raise
                except ScoreError as exc:
                    connection_checked()
                    if isinstance(exc, AuthError) and exc.status == 403:
                        refused.append((exc, entity.projectCode))  # told together, below
                        continue
                    failures += 1
                    say(f"ERROR: {exc}")
                    continue
                if job.output_dir is None:
                    with open(written, "rb") as f:
                        shutil.copyfileobj(f, sys.stdout.buffer)
                    sys.stdout.buffer.flush()
                elif written is not None:
                    say(f"Wrote {written}")
            connection_checked()
            for line in refusal_summary(refused, api.settings.token):
                say(f"ERROR: {line}")
    except KeyboardInterrupt:
        interrupted = True  # slices blocked in a read are not waited for
        raise
    finally:
        slicers.shutdown(wait=not interrupted, cancel_futures=True)
        checks.shutdown(wait=False)
        lookups.close()
        api.close()
    if failures:
        return EXIT_FAILED
    return EXIT_AUTH if refused else EXIT_OK
