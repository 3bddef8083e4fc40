"""`download` as one streaming pipeline: each object's lookups (entity, index, download
specification) run many at once (lookup.py), each object is placed (layout, unique names,
existing files, disk space) in input order as soon as its lookups are done, and handed to the
engine (transfer.py), which fetches it while later objects are still being looked up. What a
manifest already says (file name, analysis, study, index object id) is not asked again. A
file that fails verification is fetched again once from scratch; the exit code is decided
at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, TypeVar, Union

from pyscore.client.api import Api, refusal_summary
from pyscore.client.errors import (
    EXIT_AUTH,
    EXIT_FAILED,
    EXIT_OK,
    AuthError,
    DiskFullError,
    ScoreError,
    SettingError,
    UsageError,
)
from pyscore.client.layout import Names
from pyscore.client.lookup import Lookups, ordered
from pyscore.client.progress import Reporter
from pyscore.client.transfer import STATE_DIR, Downloader, Target
from pyscore.wire.files import human_size as human
from pyscore.wire.files import is_index
from pyscore.wire.manifest import ManifestRow
from pyscore.wire.score import ObjectSpecification
from pyscore.wire.song import Entity

T = TypeVar("T")
R = TypeVar("R")
LOOKUP_THREADS = 8  # for parallel_map (mount's few lookups)


@dataclass
class Wanted:
    """One object asked for, with what its manifest row already says."""

    object_id: str
    entity: Optional[Entity] = None  # named by the manifest: no lookup
    index_id: Optional[str] = None  # the manifest's index_object_id
    index_known: bool = False  # the manifest says which index (or that there is none)
    size: Optional[int] = None


def wanted_from_rows(rows: Iterable[ManifestRow]) -> list[Wanted]:
    """Manifest rows as what to fetch: a row naming its file and analysis needs no entity
    lookup, and its index_object_id (ARGO's column) needs no listing of the analysis."""
    out = []
    for r in rows:
        entity = None
        if r.fileName and r.analysisId:
            entity = Entity(r.objectId, r.analysisId, r.fileName, r.studyId or "", "")
        out.append(Wanted(r.objectId, entity, r.indexObjectId, bool(r.indexObjectId), r.fileSize))
    return out


def wanted_ids(
    api: Api,
    object_ids: Optional[Sequence[str]],
    rows: Optional[list[ManifestRow]],
    analysis_id: Optional[str],
    study_id: Optional[str],
) -> tuple[list[str], Optional[list[ManifestRow]]]:
    """The object ids to download (and the manifest's rows, when a manifest names them):
    given, from a manifest, or every file of an analysis."""
    if rows is not None:
        return [r.objectId for r in rows], rows
    if analysis_id:
        ids = [e.id for e in api.entities(gnosId=analysis_id, projectCode=study_id or "")]
        if not ids:
            raise UsageError(
                f"Analysis {analysis_id} of study {study_id} has no files (or does not exist)"
            )
        return ids, None
    return list(object_ids or []), None


@dataclass
class Request:
    object_ids: list[str]
    output_dir: Path
    layout: str = "filename"
    index: bool = True
    validate: bool = True
    offset: int = 0
    length: int = -1
    force: bool = False
    rows: Optional[list[ManifestRow]] = None  # the manifest's rows, when there is one

    def wanted(self) -> list[Wanted]:
        items = wanted_from_rows(self.rows) if self.rows else [Wanted(i) for i in self.object_ids]
        unique: dict[str, Wanted] = {}
        for w in items:
            unique.setdefault(w.object_id, w)
        return list(unique.values())


@dataclass
class Outcome:
    failures: dict[str, ScoreError]
    downloaded: int
    paths: dict[str, Path] = field(default_factory=dict)  # object id → its file, when there

    @property
    def exit_code(self) -> int:
        """One kind of failure is that kind's code; refusals alone say so even when other
        files arrived (what to do about them is to ask for access, not to re-run)."""
        if not self.failures:
            return EXIT_OK
        codes = {e.exit_code for e in self.failures.values()}
        if codes == {EXIT_AUTH}:
            return EXIT_AUTH
        if self.downloaded or len(codes) > 1:
            return EXIT_FAILED
        return codes.pop()


def parallel_map(
    fn: Callable[[T], R], items: list[T], threads: int = LOOKUP_THREADS
) -> list[Union[R, ScoreError]]:
    """Map fn over items concurrently; each result is the value or the ScoreError raised."""

    def safe(item: T) -> Union[R, ScoreError]:
        try:
            return fn(item)
        except ScoreError as exc:
            return exc

    if len(items) <= 1:
        return [safe(i) for i in items]
    with ThreadPoolExecutor(min(threads, len(items))) as pool:
        return list(pool.map(safe, items))


@dataclass
class Found:
    """An object resolved: its entity and specification, or why not."""

    object_id: str
    entity: Optional[Entity] = None
    spec: Optional[ObjectSpecification] = None
    error: Optional[ScoreError] = None
    data_id: Optional[str] = None  # for an index file: the data file it belongs with
    warning: Optional[str] = None


def resolve(lookups: Lookups, w: Wanted, req: Request) -> list[Found]:
    """Everything one wanted object needs before its bytes can move: its entity (unless the
    manifest named it), its specification, and its index's (found by the manifest's index id,
    else by listing its analysis). Runs in a resolver thread; the requests go at once."""
    spec = lookups.spec(w.object_id, req.offset, req.length)
    found = Found(w.object_id)
    try:
        found.entity = w.entity or lookups.entity(w.object_id).result()
        found.spec = spec.result()
    except SettingError:
        raise  # not this file's failure: the run's
    except ScoreError as exc:
        found.error = exc
    out = [found]
    if not req.index or found.entity is None or is_index(found.entity.fileName):
        return out
    index: Optional[Future[Entity]] = None
    index_id = w.index_id
    if w.index_known:
        if index_id:
            index = lookups.entity(index_id)
            lookups.spec(index_id, req.offset, req.length)  # under way beside the entity
    else:
        try:
            entity = lookups.index_of(found.entity)
        except SettingError:
            raise
        except ScoreError as exc:
            out.append(Found("", warning=f"could not look up an index file: {exc}"))
            return out
        if entity is not None:
            index, index_id = Future(), entity.id
            index.set_result(entity)
    if index is None or index_id is None:
        return out
    item = Found(index_id, data_id=w.object_id)
    try:
        item.entity = index.result()
    except SettingError:
        raise
    except ScoreError as exc:
        out.append(Found("", warning=f"could not look up an index file: {exc}"))
        return out
    try:
        item.spec = lookups.spec(index_id, req.offset, req.length).result()
    except SettingError:
        raise
    except ScoreError as exc:
        item.error = exc
    out.append(item)
    return out


def needs(w: Wanted, req: Request) -> tuple[list[tuple[str, int, int]], list[str]]:
    """The specifications and entities `resolve` will wait for on one wanted object, as far
    as the manifest tells (what `Lookups.prefetch` queues into batches)."""
    specs = [(w.object_id, req.offset, req.length)]
    entities = [] if w.entity else [w.object_id]
    if req.index and w.index_known and w.index_id:
        specs.append((w.index_id, req.offset, req.length))
        entities.append(w.index_id)
    return specs, entities


@dataclass
class Space:
    """What the run may still write: the free space when it began, less what the files
    planned so far need (beyond what their .part files already hold)."""

    output_dir: Path
    free: int = 0
    needed: int = 0
    leftovers: bool = field(default=False, init=False)  # could a .part be there at all

    def __post_init__(self) -> None:
        self.free = shutil.disk_usage(self.output_dir).free
        # no state directory: no .part left by an earlier run to look for, file by file
        self.leftovers = (self.output_dir / STATE_DIR).is_dir()

    def have(self, object_id: str) -> int:
        if not self.leftovers:
            return 0
        part = self.output_dir / STATE_DIR / f"{object_id}.part"
        try:
            return part.lstat().st_blocks * 512
        except OSError:
            return 0

    def reserve(self, object_id: str, size: int) -> None:
        self.needed += max(size - self.have(object_id), 0)
        if self.needed > self.free:
            raise DiskFullError(
                f"Not enough disk space in {self.output_dir}: the download needs "
                f"{human(self.needed)} more, {human(self.free)} is available"
            )


@dataclass
class Planner:
    """Places resolved objects in input order: layout path (unique when the name is taken),
    files already there, --force, disk space."""

    req: Request
    reporter: Reporter
    failures: dict[str, ScoreError]
    names: Names = field(init=False)
    space: Space = field(init=False)
    seen: set[str] = field(default_factory=set)
    placed: dict[str, Path] = field(default_factory=dict)  # object id → its final path
    refused: list[tuple[AuthError, str]] = field(default_factory=list)  # (403, its study)

    def __post_init__(self) -> None:
        self.names = Names(self.req.output_dir, self.req.layout)
        self.space = Space(self.req.output_dir)

    def fail(self, object_id: str, error: ScoreError) -> None:
        self.failures[object_id] = error
        self.reporter.error(str(error))

    def refuse(self, f: Found, error: AuthError) -> None:
        """A file the token may not read: told with the others like it at the end (a
        manifest of a study the token cannot read is one line, not one per file)."""
        self.failures[f.object_id] = error
        self.refused.append((error, f.entity.projectCode if f.entity else ""))

    def tell_refused(self, token: str) -> None:
        for line in refusal_summary(self.refused, token):
            self.reporter.error(line)

    def place(self, f: Found) -> Optional[Target]:
        req = self.req
        e, spec = f.entity, f.spec
        if isinstance(f.error, AuthError) and f.error.status == 403:
            self.refuse(f, f.error)
            return None
        if f.error is not None or e is None or spec is None:
            self.fail(f.object_id, f.error or ScoreError(f"object {f.object_id}: not found"))
            return None
        try:
            final, said = self.names.claim(e.id, e.fileName, e.gnosId, f.data_id)
        except ScoreError as exc:
            self.fail(e.id, exc)
            return None
        if said:
            self.reporter.warn(said)
        try:
            there = os.lstat(final)  # one call a file: the main thread feeds every worker
        except OSError:
            there = None
        if there is not None and stat.S_ISLNK(there.st_mode):
            self.fail(
                e.id,
                ScoreError(f"{final} is a symbolic link; refusing to write through it (remove it)"),
            )
            return None
        if there is not None and not req.force:
            if there.st_size == spec.objectSize:
                self.placed[e.id] = final
                self.reporter.skipped(
                    e.fileName, f"is already complete: {final} (--force fetches it again)"
                )
                return None
            self.fail(
                e.id,
                ScoreError(f"{final} exists with a different size; move it away or use --force"),
            )
            return None
        if req.force:
            forget(req.output_dir, e.id)
        self.space.reserve(e.id, spec.objectSize)
        self.placed[e.id] = final
        partial = req.offset != 0 or req.length != -1
        return Target(
            e.id, e.fileName, final, spec, validate=req.validate, offset=req.offset, partial=partial
        )


def forget(output_dir: Path, object_id: str) -> None:
    state = output_dir / STATE_DIR
    for suffix in (".part", ".journal"):
        (state / f"{object_id}{suffix}").unlink(missing_ok=True)


def download(
    api: Api,
    req: Request,
    reporter: Reporter,
    parallel: int,
    ping: Optional[Callable[[], None]] = None,
) -> Outcome:
    """Run the pipeline. `ping` (--verify-connection) runs beside the first lookups; its
    failure is the run's, before any lookup's failure is reported."""
    req.output_dir.mkdir(parents=True, exist_ok=True)
    failures: dict[str, ScoreError] = {}
    wanted = req.wanted()
    planner = Planner(req, reporter, failures)
    known = [w.size for w in wanted]
    if all(s is not None for s in known):  # the manifest says: check the space before anything
        for w in wanted:
            planner.space.reserve(w.object_id, w.size or 0)
        planner.space.needed = 0
    files = len(wanted) + sum(1 for w in wanted if w.index_id)
    reporter.plan(files, sum(s or 0 for s in known))
    lookups = Lookups(api)
    lookups.prefetch([needs(w, req) for w in wanted])
    checker = ThreadPoolExecutor(1, thread_name_prefix="ping")
    pinged: Optional[Future[None]] = checker.submit(ping) if ping else None

    def connection_checked() -> None:
        nonlocal pinged
        if pinged is not None:
            done, pinged = pinged, None
            done.result()  # its error is the run's

    settings = api.settings
    planned, planned_bytes = 0, 0
    try:
        with Downloader(
            parallel,
            settings.int("storage.retryNumber"),
            float(settings.int("client.readTimeoutSeconds")),
            float(settings.int("client.connectTimeoutSeconds")),
            reporter,
            req.output_dir,
            lambda t: api.download_spec(t.object_id, req.offset, req.length),
            lambda t: forget(req.output_dir, t.object_id),
        ) as engine:
            for number, (_, result) in enumerate(
                ordered(lambda w: resolve(lookups, w, req), wanted), 1
            ):
                lookups.reached(number)
                if isinstance(result, ScoreError):  # a setting's: the run's failure
                    connection_checked()
                    raise result
                for found in result:
                    if found.warning:
                        reporter.warn(found.warning)
                        continue
                    if found.object_id in planner.seen:
                        continue
                    planner.seen.add(found.object_id)
                    if found.error is not None:
                        connection_checked()
                    target = planner.place(found)
                    if target is not None:
                        planned += 1
                        planned_bytes += target.size
                        engine.submit(target)
            connection_checked()
            if (planned, planned_bytes) != (files, sum(s or 0 for s in known)):
                reporter.plan(planned, planned_bytes)
            results = engine.finish()
    finally:
        lookups.close()
        checker.shutdown(wait=False)
    planner.tell_refused(settings.token)
    for object_id, error in results.items():
        if error is not None:
            failures[object_id] = error
    downloaded = sum(1 for e in results.values() if e is None)
    with contextlib.suppress(OSError):
        (req.output_dir / STATE_DIR).rmdir()  # only succeeds when nothing is left to resume
    paths = {i: p for i, p in planner.placed.items() if i not in failures}
    return Outcome(failures, downloaded, paths)
