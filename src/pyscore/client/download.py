"""`download` as a plain function: resolve what to fetch, plan where it goes, run the engine,
retry integrity failures once, and decide the exit code.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pyscore.client.api import Api
from pyscore.client.errors import (
    EXIT_FAILED,
    EXIT_OK,
    DiskFullError,
    IntegrityError,
    ScoreError,
)
from pyscore.client.layout import target_path
from pyscore.client.progress import Reporter, human
from pyscore.client.transfer import STATE_DIR, Downloader, Target
from pyscore.wire.files import is_index
from pyscore.wire.song import Entity

LOOKUP_THREADS = 8


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


@dataclass
class Outcome:
    failures: dict[str, ScoreError]
    downloaded: int

    @property
    def exit_code(self) -> int:
        if not self.failures:
            return EXIT_OK
        codes = {e.exit_code for e in self.failures.values()}
        if self.downloaded or len(codes) > 1:
            return EXIT_FAILED
        return codes.pop()


def parallel_map(fn, items: list, threads: int = LOOKUP_THREADS) -> list:
    """Map fn over items concurrently; each result is the value or the ScoreError raised."""

    def safe(item):
        try:
            return fn(item)
        except ScoreError as exc:
            return exc

    if len(items) <= 1:
        return [safe(i) for i in items]
    with ThreadPoolExecutor(min(threads, len(items))) as pool:
        return list(pool.map(safe, items))


def resolve_entities(
    api: Api,
    ids: Iterable[str],
    with_index: bool,
    failures: dict[str, ScoreError],
    reporter: Reporter,
) -> list[Entity]:
    """Entities for the ids (in order, de-duplicated), plus their index files if asked."""
    unique = list(dict.fromkeys(ids))
    found = parallel_map(api.entity, unique)
    entities = []
    for object_id, result in zip(unique, found):
        if isinstance(result, ScoreError):
            failures[object_id] = result
            reporter.error(str(result))
        else:
            entities.append(result)
    if with_index:
        indexes = parallel_map(
            api.index_entity,
            [e for e in entities if not is_index(e.fileName)],
        )
        seen = {e.id for e in entities}
        for index in indexes:
            if isinstance(index, ScoreError):
                reporter.warn(f"could not look up an index file: {index}")
            elif index is not None and index.id not in seen:
                seen.add(index.id)
                entities.append(index)
    return entities


def plan(
    api: Api,
    req: Request,
    entities: list[Entity],
    failures: dict[str, ScoreError],
    reporter: Reporter,
) -> list[Target]:
    """Targets still to fetch: layout paths, duplicates and existing files handled."""
    chosen: list[tuple[Entity, Path]] = []
    names: dict[Path, str] = {}
    for e in entities:
        try:
            final = target_path(req.output_dir, req.layout, e.id, e.fileName, e.gnosId)
        except ScoreError as exc:
            failures[e.id] = exc
            reporter.error(str(exc))
            continue
        if final in names:
            reporter.warn(
                f"File '{e.fileName}' (object id '{names[final]}') is already "
                f"scheduled; omitting object id '{e.id}' with the same name"
            )
            continue
        names[final] = e.id
        chosen.append((e, final))
    specs = parallel_map(lambda pair: api.download_spec(pair[0].id, req.offset, req.length), chosen)
    targets = []
    partial = req.offset != 0 or req.length != -1
    for (e, final), spec in zip(chosen, specs):
        if isinstance(spec, ScoreError):
            failures[e.id] = spec
            reporter.error(str(spec))
            continue
        if final.is_symlink():
            failures[e.id] = ScoreError(
                f"{final} is a symbolic link; refusing to write through it (remove it)"
            )
            reporter.error(str(failures[e.id]))
            continue
        if final.exists() and not req.force:
            if final.stat().st_size == spec.objectSize:
                reporter.skipped(e.fileName, f"{final} already exists (use --force to fetch again)")
                continue
            failures[e.id] = ScoreError(
                f"{final} exists with a different size; move it away or use --force"
            )
            reporter.error(str(failures[e.id]))
            continue
        if req.force:
            _forget(req.output_dir, e.id)
        targets.append(
            Target(
                e.id,
                e.fileName,
                final,
                spec,
                validate=req.validate,
                offset=req.offset,
                partial=partial,
            )
        )
    return targets


def _forget(output_dir: Path, object_id: str) -> None:
    state = output_dir / STATE_DIR
    for suffix in (".part", ".journal"):
        (state / f"{object_id}{suffix}").unlink(missing_ok=True)


def check_space(output_dir: Path, targets: list[Target]) -> None:
    """Refuse up front when the disk cannot hold what is left to fetch."""
    state = output_dir / STATE_DIR
    needed = 0
    for t in targets:
        part = state / f"{t.object_id}.part"
        have = part.lstat().st_blocks * 512 if part.exists() else 0
        needed += max(t.size - have, 0)
    free = shutil.disk_usage(output_dir).free
    if needed > free:
        raise DiskFullError(
            f"Not enough disk space in {output_dir}: the download needs "
            f"{human(needed)} more, {human(free)} is available"
        )


def download(api: Api, req: Request, reporter: Reporter, parallel: int) -> Outcome:
    req.output_dir.mkdir(parents=True, exist_ok=True)
    failures: dict[str, ScoreError] = {}
    entities = resolve_entities(api, req.object_ids, req.index, failures, reporter)
    targets = plan(api, req, entities, failures, reporter)
    check_space(req.output_dir, targets)
    reporter.plan(len(targets), sum(t.size for t in targets))
    settings = api.settings
    engine = Downloader(
        parallel,
        settings.int("storage.retryNumber"),
        float(settings.int("client.readTimeoutSeconds")),
        float(settings.int("client.connectTimeoutSeconds")),
        reporter,
    )

    def renew(target: Target):
        return api.download_spec(target.object_id, req.offset, req.length)

    results = engine.run(req.output_dir, targets, renew)
    retry = [t for t in targets if isinstance(results.get(t.object_id), IntegrityError)]
    if retry:
        reporter.warn(f"retrying {len(retry)} file(s) that failed verification, from scratch")
        for t in retry:
            _forget(req.output_dir, t.object_id)
            t.spec = renew(t)
        results.update(
            Downloader(
                parallel, engine.attempts, engine.timeout, engine.connect_timeout, reporter
            ).run(req.output_dir, retry, renew)
        )
    for object_id, error in results.items():
        if error is not None:
            failures[object_id] = error
    downloaded = sum(1 for e in results.values() if e is None)
    with contextlib.suppress(OSError):
        (req.output_dir / STATE_DIR).rmdir()  # only succeeds when nothing is left to resume
    return Outcome(failures, downloaded)
