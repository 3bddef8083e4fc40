"""SONG's records written into pyscore, verbatim: every id, state, state history, time,
analysis type name and version, file info and dynamic analysis data; the File Repository's
view rebuilt for what changed.

Each record is checked against what pyscore can hold (column lengths, known states and
accesses, a parent imported), converted to pyscore's rows as a submission would make them
(`metadata.submission`'s field rules), and compared with the rows already there: a record
whose rows are equal is left alone, so a second run changes nothing and a run after SONG
took more submissions writes only the delta. A page is written in one transaction with the
tokens of what it read (`import_marks`), so an interrupted run resumes where it stopped and
a record whose token has not changed is not even read in full again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from pyscore.server import repository
from pyscore.server.db import Database, as_utc, insert_rows
from pyscore.server.importing.records import SongAnalysis, Source, digest, song_time
from pyscore.server.metadata.ids import STATES
from pyscore.server.metadata.song_json import iso
from pyscore.server.metadata.submission import (
    DONOR_FIELDS,
    FILE_FIELDS,
    link_indexes,
    sample_fields,
    song_info,
    specimen_fields,
)
from pyscore.server.tables import (
    Analysis,
    AnalysisSample,
    AnalysisType,
    Donor,
    File,
    ImportMark,
    Sample,
    Specimen,
    Study,
)

PAGE = 500  # records per transaction
IN_CHUNK = 500  # ids per IN (...)
ACCESS = ("open", "controlled")


class Skip(Exception):
    """A record pyscore cannot take as it is: why, in a few words."""


@dataclass
class Summary:
    """What a run did: counts per (study, what) and outcome, and every record left out."""

    counts: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    skipped: list[tuple[str, str, str, str]] = field(default_factory=list)  # study, what, id, why
    changes: list[tuple[str, str, str, str]] = field(default_factory=list)  # ..., outcome
    keep_changes: bool = False  # list what differs (verify), not only count it

    def add(self, study: str, what: str, outcome: str, key: str = "", n: int = 1) -> None:
        row = self.counts.setdefault((study, what), {})
        row[outcome] = row.get(outcome, 0) + n
        if self.keep_changes and outcome in ("new", "changed"):
            self.changes.append((study, what, key, outcome))

    def skip(self, study: str, what: str, key: str, why: str) -> None:
        self.add(study, what, "not imported")
        self.skipped.append((study, what, key, why))

    def total(self, outcome: str) -> int:
        return sum(row.get(outcome, 0) for row in self.counts.values())


def _chunks(items: Sequence[Any], size: int = IN_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _pages(items: Iterable[Any], size: int = PAGE) -> Iterator[list[Any]]:
    page: list[Any] = []
    for item in items:
        page.append(item)
        if len(page) == size:
            yield page
            page = []
    if page:
        yield page


def _fits(what: str, value: Any, limit: int, required: bool = True) -> None:
    if value is None:
        if required:
            raise Skip(f"no {what}")
        return
    if not isinstance(value, str):
        raise Skip(f"{what} {value!r} is not text")
    if len(value) > limit:
        raise Skip(f"{what} {value[:40]!r}... is longer than pyscore's {limit} characters")


def _row(obj: Any, columns: Sequence[str]) -> dict:
    """A row's columns as a dict, times in UTC (SQLite gives them back without a zone)."""
    out = {}
    for c in columns:
        value = getattr(obj, c)
        out[c] = as_utc(value) if isinstance(value, datetime) else value
    return out


def _history(record: SongAnalysis) -> list[dict]:
    return [
        {"initialState": initial, "updatedState": updated, "updatedAt": iso(at)}
        for initial, updated, at in record.history
    ]


STUDY_COLUMNS = ("study_id", "name", "organization", "description", "info")
TYPE_COLUMNS = ("name", "version", "schema", "options", "created_at")
DONOR_COLUMNS = ("donor_id", "study_id", "submitter_donor_id", "gender", "info")
SPECIMEN_COLUMNS = ("specimen_id", "donor_id", "study_id", "submitter_specimen_id", "fields")
SAMPLE_COLUMNS = ("sample_id", "specimen_id", "study_id", "submitter_sample_id", "fields")
ANALYSIS_COLUMNS = (
    "analysis_id",
    "study_id",
    "type_name",
    "type_version",
    "state",
    "payload",
    "state_history",
    "created_at",
    "updated_at",
    "first_published_at",
    "published_at",
)
FILE_COLUMNS = (
    "object_id",
    "analysis_id",
    "study_id",
    "file_name",
    "file_size",
    "file_md5sum",
    "file_type",
    "file_access",
    "data_type",
    "info",
    "index_for",
)


# -- SONG's records as pyscore's rows (also what `verify` compares) ------------------------------
def study_row(body: dict) -> dict:
    _fits("studyId", body.get("studyId"), 64)
    for key in ("name", "organization"):
        _fits(key, body.get(key), 255, required=False)
    info = body.get("info")
    return {
        "study_id": body["studyId"],
        "name": body.get("name"),
        "organization": body.get("organization"),
        "description": body.get("description"),
        "info": info if isinstance(info, dict) else {},
    }


def type_row(body: dict) -> dict:
    _fits("analysis type name", body.get("name"), 128)
    version = body.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise Skip(f"version {version!r} is not a number")
    if not isinstance(body.get("schema"), dict):
        raise Skip("its schema is not a JSON object")
    file_types = (body.get("options") or {}).get("fileTypes") or []
    return {
        "name": body["name"],
        "version": version,
        "schema": body["schema"],
        "options": {"fileTypes": list(file_types)} if file_types else {},
        "created_at": song_time(body.get("createdAt")),
    }


def donor_row(body: dict, study_id: str) -> dict:
    _fits("donorId", body.get("donorId"), 64)
    _fits("submitterDonorId", body.get("submitterDonorId"), 255)
    _fits("gender", body.get("gender"), 32, required=False)
    return {
        "donor_id": body["donorId"],
        "study_id": study_id,
        "submitter_donor_id": body["submitterDonorId"],
        "gender": body.get("gender"),
        "info": song_info(body, DONOR_FIELDS, ("specimens",)),
    }


def _child_row(body: dict, study_id: str, kind: str, parent: str, fields: dict) -> dict:
    """A specimen's or sample's row: its id, its parent's id, its submitter id, its fields."""
    submitter = f"submitter{kind[0].upper()}{kind[1:]}Id"
    for name, limit in ((f"{kind}Id", 64), (submitter, 255), (f"{parent}Id", 64)):
        _fits(name, body.get(name), limit)
    return {
        f"{kind}_id": body[f"{kind}Id"],
        f"{parent}_id": body[f"{parent}Id"],
        "study_id": study_id,
        f"submitter_{kind}_id": body[submitter],
        "fields": fields,
    }


def specimen_row(body: dict, study_id: str) -> dict:
    return _child_row(body, study_id, "specimen", "donor", specimen_fields(body))


def sample_row(body: dict, study_id: str) -> dict:
    return _child_row(body, study_id, "sample", "specimen", sample_fields(body))


def file_row(body: dict, analysis: SongAnalysis) -> dict:
    name = body.get("fileName")
    where = f"file {name!r}"
    _fits(f"{where}: objectId", body.get("objectId"), 64)
    _fits(f"{where}: fileName", name, 512)
    _fits(f"{where}: fileType", body.get("fileType"), 64, required=False)
    _fits(f"{where}: dataType", body.get("dataType"), 128, required=False)
    md5 = body.get("fileMd5sum")
    _fits(f"{where}: fileMd5sum", md5, 32)
    size = body.get("fileSize")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise Skip(f"{where}: fileSize {size!r} is not a size")
    if body.get("fileAccess") not in ACCESS:
        raise Skip(f"{where}: unknown fileAccess {body.get('fileAccess')!r}")
    if body.get("studyId") not in (None, analysis.study_id):
        raise Skip(f"{where}: of study {body.get('studyId')!r}")
    return {
        "object_id": body["objectId"],
        "analysis_id": analysis.analysis_id,
        "study_id": analysis.study_id,
        "file_name": name,
        "file_size": size,
        "file_md5sum": md5,
        "file_type": body.get("fileType"),
        "file_access": body["fileAccess"],
        "data_type": body.get("dataType"),
        "info": song_info(body, FILE_FIELDS),
        "index_for": None,
    }


def analysis_rows(record: SongAnalysis) -> tuple[dict, list[dict]]:
    """The analysis's row and its files' rows (index files linked to their data files)."""
    _fits("analysisId", record.analysis_id, 64)
    if record.state not in STATES:
        raise Skip(f"unknown analysisState {record.state!r}")
    for initial, updated, _ in record.history:
        if initial not in STATES or updated not in STATES:
            raise Skip(f"unknown state in its history: {initial!r} -> {updated!r}")
    if not record.type_name or record.type_version is None:
        raise Skip("no analysis type")
    if record.created_at is None or record.updated_at is None:
        raise Skip("no createdAt or updatedAt")
    files = [file_row(f, record) for f in record.files]
    names = [f["file_name"] for f in files]
    if len(set(names)) != len(names):
        raise Skip("two files of the same name")
    link_indexes(files)
    published = [at for _, updated, at in record.history if updated == "PUBLISHED" and at]
    row = {
        "analysis_id": record.analysis_id,
        "study_id": record.study_id,
        "type_name": record.type_name,
        "type_version": record.type_version,
        "state": record.state,
        "payload": record.data,
        "state_history": _history(record),
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        # as SONG computes them: the first and the last time it was published
        "first_published_at": min(published) if published else None,
        "published_at": max(published) if published else None,
    }
    return row, files


# -- the run ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Kind:
    """One table the importer fills from a stream of SONG's JSON."""

    name: str  # also the import_marks kind
    table: Any
    key: str  # the id column
    columns: tuple[str, ...]
    submitter: Optional[str]  # the (study, submitter id) unique column
    parent: Optional[tuple[Any, str, str]]  # (table, its id column, this row's column)


DONORS = Kind("donor", Donor, "donor_id", DONOR_COLUMNS, "submitter_donor_id", None)
SPECIMENS = Kind(
    "specimen",
    Specimen,
    "specimen_id",
    SPECIMEN_COLUMNS,
    "submitter_specimen_id",
    (Donor, "donor_id", "donor_id"),
)
SAMPLES = Kind(
    "sample",
    Sample,
    "sample_id",
    SAMPLE_COLUMNS,
    "submitter_sample_id",
    (Specimen, "specimen_id", "specimen_id"),
)


class SongImport:
    """One run of `score-server import song`: `run()` returns its Summary."""

    def __init__(
        self,
        db: Database,
        source: Source,
        *,
        dry_run: bool = False,
        progress: Callable[[str, int, int], None] = lambda what, done, total: None,
        page_size: int = PAGE,
        trust_marks: bool = True,
    ) -> None:
        self.db, self.source, self.dry_run = db, source, dry_run
        self.trust_marks = trust_marks  # False (verify): every record read and compared
        self.progress, self.page_size = progress, page_size
        self.summary = Summary(keep_changes=not trust_marks)
        # what a dry run would have added, so that their children count as importable
        self.would_add: dict[str, set[str]] = {}
        self.bad_types: dict[tuple[str, int], str] = {}
        self.types: set[tuple[str, int]] = set()  # SONG's types pyscore has (or would have)

    def run(self) -> Summary:
        studies = self.source.studies()
        self._types()
        for body in studies:
            if self._study(body):
                self._entities(body["studyId"])
                self._analyses(body["studyId"])
        return self.summary

    # -- helpers ---------------------------------------------------------------------------
    def _session(self) -> Any:
        return self.db.session()

    def _finish(self, session: Session) -> None:
        """Keep what a page wrote, unless this is a dry run."""
        if self.dry_run:
            session.rollback()

    def _write(self, session: Session, statement: Any) -> None:
        """A write, left out on a dry run (which still counts what it would change)."""
        if not self.dry_run:
            session.execute(statement)

    def _insert(self, session: Session, table: Any, rows: list[dict]) -> None:
        if not self.dry_run:
            insert_rows(session, table, rows)

    def _marks(self, session: Session, kind: str, keys: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        if not self.trust_marks:
            return out
        for chunk in _chunks(keys):
            out.update(
                session.execute(
                    select(ImportMark.key, ImportMark.token).where(
                        ImportMark.kind == kind, ImportMark.key.in_(chunk)
                    )
                ).all()
            )
        return out

    def _mark(self, session: Session, kind: str, tokens: dict[str, str]) -> None:
        if not tokens:
            return
        for chunk in _chunks(list(tokens)):
            self._write(
                session,
                delete(ImportMark).where(ImportMark.kind == kind, ImportMark.key.in_(chunk)),
            )
        self._insert(
            session,
            ImportMark,
            [{"kind": kind, "key": k, "token": t} for k, t in tokens.items()],
        )

    def _existing(self, session: Session, table: Any, key: str, ids: Sequence[str]) -> dict:
        column = getattr(table, key)
        out: dict[str, Any] = {}
        for chunk in _chunks(ids):
            found: Iterable[Any] = session.scalars(select(table).where(column.in_(chunk)))
            out.update((getattr(obj, key), obj) for obj in found)
        return out

    # -- studies and analysis types ----------------------------------------------------------
    def _study(self, body: dict) -> bool:
        study_id = str(body.get("studyId"))
        try:
            row = study_row(body)
        except Skip as why:
            self.summary.skip(study_id, "study", study_id, str(why))
            return False
        with self._session() as s:
            have = s.get(Study, study_id)
            if have is None:
                self._insert(s, Study, [row])
                outcome = "new"
            elif _row(have, STUDY_COLUMNS) != row:
                self._write(s, update(Study).where(Study.study_id == study_id).values(**row))
                outcome = "changed"
            else:
                outcome = "unchanged"
            self.summary.add(study_id, "study", outcome, study_id)
            self._finish(s)
        return True

    def _types(self) -> None:
        imported_types = {}
        for body in self.source.analysis_types():
            label = f"{body.get('name')} version {body.get('version')}"
            try:
                row = type_row(body)
            except Skip as refused:
                self.summary.skip("*", "analysis type", label, str(refused))
                if isinstance(body.get("name"), str) and isinstance(body.get("version"), int):
                    self.bad_types[(body["name"], body["version"])] = str(refused)
                continue
            imported_types[(row["name"], row["version"])] = row
        with self._session() as s:
            for (name, version), row in imported_types.items():
                have = s.get(AnalysisType, (name, version))
                if have is None:
                    self._insert(s, AnalysisType, [row])
                    outcome = "new"
                elif _row(have, TYPE_COLUMNS) == row:
                    outcome = "unchanged"
                elif self._own_analyses(s, name, version):
                    why = "pyscore has analyses of its own of this name and version"
                    self.summary.skip("*", "analysis type", f"{name} version {version}", why)
                    self.bad_types[(name, version)] = why
                    continue
                else:  # a bundled type pyscore seeded, never used: SONG's own replaces it
                    self._write(
                        s,
                        update(AnalysisType)
                        .where(AnalysisType.name == name, AnalysisType.version == version)
                        .values(**row),
                    )
                    outcome = "changed"
                self.summary.add("*", "analysis type", outcome, f"{name} version {version}")
                self.types.add((name, version))
            self._finish(s)

    def _own_analyses(self, session: Session, name: str, version: int) -> bool:
        """Whether analyses not imported from SONG use this analysis type."""
        imported = select(ImportMark.key).where(ImportMark.kind == "analysis")
        return (
            session.scalar(
                select(Analysis.analysis_id)
                .where(
                    Analysis.type_name == name,
                    Analysis.type_version == version,
                    Analysis.analysis_id.not_in(imported),
                )
                .limit(1)
            )
            is not None
        )

    # -- donors, specimens, samples ----------------------------------------------------------
    def _entities(self, study_id: str) -> None:
        streams = (
            (DONORS, self.source.donors(study_id), donor_row),
            (SPECIMENS, self.source.specimens(study_id), specimen_row),
            (SAMPLES, self.source.samples(study_id), sample_row),
        )
        for kind, stream, convert in streams:
            skip, fingerprint = self._fingerprint(study_id, kind.name)
            if skip:
                continue
            left_out = len(self.summary.skipped)
            for page in _pages(stream, self.page_size):
                with self._session() as s:
                    self._entity_page(s, study_id, kind, page, convert)
                    self._finish(s)
            self._keep_fingerprint(study_id, kind.name, fingerprint, left_out)

    # -- whole studies unchanged -------------------------------------------------------------
    def _fingerprint(self, study_id: str, kind: str) -> tuple[bool, Optional[str]]:
        """(skip, fingerprint): skip the study's records of this kind when the source's
        fingerprint of them is the one the last run that took them all kept; each is then
        counted as unchanged."""
        fingerprint = self.source.fingerprint(study_id, kind) if self.trust_marks else None
        if fingerprint is None:
            return False, None
        with self._session() as s:
            if self._marks(s, f"study {kind}", [study_id]).get(study_id) != fingerprint:
                return False, fingerprint
            imported = select(ImportMark.key).where(ImportMark.kind == kind)
            if kind == "analysis":
                for state, n in s.execute(
                    select(Analysis.state, func.count())
                    .where(Analysis.study_id == study_id, Analysis.analysis_id.in_(imported))
                    .group_by(Analysis.state)
                ):
                    self.summary.add(study_id, f"analysis {state}", "unchanged", n=n)
            else:
                table: Any = {"donor": Donor, "specimen": Specimen, "sample": Sample}[kind]
                key = getattr(table, f"{kind}_id")
                n = s.scalar(
                    select(func.count())
                    .select_from(table)
                    .where(table.study_id == study_id, key.in_(imported))
                )
                self.summary.add(study_id, kind, "unchanged", n=n or 0)
        return True, fingerprint

    def _keep_fingerprint(
        self, study_id: str, kind: str, fingerprint: Optional[str], left_out: int
    ) -> None:
        """After a study's records of a kind were all taken (none left out), their
        fingerprint, so the next run may skip them."""
        if fingerprint is None or self.dry_run or len(self.summary.skipped) != left_out:
            return
        with self._session() as s:
            self._mark(s, f"study {kind}", {study_id: fingerprint})

    def _entity_page(
        self,
        s: Session,
        study_id: str,
        kind: Kind,
        page: list[dict],
        convert: Callable[[dict, str], dict],
    ) -> None:
        what = kind.name
        id_field = {"donor": "donorId", "specimen": "specimenId", "sample": "sampleId"}[what]
        tokens = {str(body.get(id_field)): digest(body) for body in page}
        marks = self._marks(s, what, list(tokens))
        rows: dict[str, dict] = {}
        for body in page:
            key = str(body.get(id_field))
            if marks.get(key) == tokens[key]:
                self.summary.add(study_id, what, "unchanged")
                continue
            try:
                rows[key] = convert(body, study_id)
            except Skip as why:
                self.summary.skip(study_id, what, key, str(why))
        if kind.parent is not None:
            self._check_parents(s, study_id, kind, rows)
        have = self._existing(s, kind.table, kind.key, list(rows))
        taken = self._submitters(s, study_id, kind, rows, have)
        new, done = [], {}
        for key, row in rows.items():
            old = have.get(key)
            if old is not None and old.study_id != study_id:
                self.summary.skip(study_id, what, key, f"pyscore has it in study {old.study_id}")
                continue
            if taken.setdefault(row[kind.submitter], key) != key:
                self.summary.skip(
                    study_id,
                    what,
                    key,
                    f"pyscore's {what} {taken[row[kind.submitter]]} has its submitter id",
                )
                continue
            if old is None:
                new.append(row)
                self.summary.add(study_id, what, "new", key)
            elif _row(old, kind.columns) != row:
                self._write(
                    s, update(kind.table).where(getattr(kind.table, kind.key) == key).values(**row)
                )
                self.summary.add(study_id, what, "changed", key)
            else:
                self.summary.add(study_id, what, "unchanged")
            done[key] = tokens[key]
        if new:
            self._insert(s, kind.table, new)
            if self.dry_run:
                self.would_add.setdefault(what, set()).update(r[kind.key] for r in new)
        self._mark(s, what, done)

    def _check_parents(self, s: Session, study_id: str, kind: Kind, rows: dict) -> None:
        assert kind.parent is not None
        table, key, column = kind.parent
        wanted = sorted({row[column] for row in rows.values()})
        present = {k: obj.study_id for k, obj in self._existing(s, table, key, wanted).items()}
        pending = self.would_add.get({Donor: "donor", Specimen: "specimen"}[table], set())
        for row_key, row in list(rows.items()):
            parent = row[column]
            if present.get(parent) == study_id or (parent not in present and parent in pending):
                continue
            del rows[row_key]
            self.summary.skip(
                study_id, kind.name, row_key, f"its {column} {parent} was not imported"
            )

    def _submitters(
        self, s: Session, study_id: str, kind: Kind, rows: dict, have: dict
    ) -> dict[str, str]:
        """Submitter ids of these rows that another row of the study already has."""
        assert kind.submitter is not None
        column = getattr(kind.table, kind.submitter)
        key_column = getattr(kind.table, kind.key)
        wanted = [row[kind.submitter] for row in rows.values()]
        taken: dict[str, str] = {}
        for chunk in _chunks(wanted):
            taken.update(
                s.execute(
                    select(column, key_column).where(
                        kind.table.study_id == study_id, column.in_(chunk)
                    )
                ).all()
            )
        return taken

    # -- analyses ----------------------------------------------------------------------------
    def _analyses(self, study_id: str) -> None:
        skip, fingerprint = self._fingerprint(study_id, "analysis")
        if skip:
            return
        left_out = len(self.summary.skipped)
        total, done = self.source.count(study_id), 0
        self.progress(study_id, 0, total)
        for page in self.source.pages(study_id, self.page_size):
            with self._session() as s:
                self._analysis_page(s, study_id, page.tokens, page.fetch)
                self._finish(s)
            done += len(page.tokens)
            self.progress(study_id, done, total)
        self._keep_fingerprint(study_id, "analysis", fingerprint, left_out)

    def _analysis_page(
        self,
        s: Session,
        study_id: str,
        tokens: dict[str, str],
        fetch: Callable[[list[str]], list[SongAnalysis]],
    ) -> None:
        marks = self._marks(s, "analysis", list(tokens))
        wanted = [i for i, t in tokens.items() if marks.get(i) != t]
        seen = [i for i in tokens if marks.get(i) == tokens[i]]
        for chunk in _chunks(seen):
            for (state,) in s.execute(
                select(Analysis.state).where(Analysis.analysis_id.in_(chunk))
            ):
                self.summary.add(study_id, f"analysis {state}", "unchanged")
        if not wanted:
            return
        records = fetch(wanted)
        built: dict[str, tuple[dict, list[dict], list[str]]] = {}
        for record in records:
            what = f"analysis {record.state}"
            try:
                if record.study_id != study_id:
                    raise Skip(f"of study {record.study_id}")
                bad = self.bad_types.get((record.type_name or "", record.type_version or 0))
                if bad:
                    raise Skip(f"its analysis type was not imported: {bad}")
                row, files = analysis_rows(record)
            except Skip as why:
                self.summary.skip(study_id, what, record.analysis_id, str(why))
                continue
            built[record.analysis_id] = (row, files, sorted(set(record.sample_ids)))
        self._check_references(s, study_id, built)
        have = self._existing(s, Analysis, "analysis_id", list(built))
        have_files: dict[str, list[dict]] = {}
        for chunk in _chunks(list(built)):
            for f in s.scalars(select(File).where(File.analysis_id.in_(chunk))):
                have_files.setdefault(f.analysis_id, []).append(_row(f, FILE_COLUMNS))
        have_samples: dict[str, list[str]] = {}
        for chunk in _chunks(list(built)):
            for a, sample in s.execute(
                select(AnalysisSample.analysis_id, AnalysisSample.sample_id).where(
                    AnalysisSample.analysis_id.in_(chunk)
                )
            ):
                have_samples.setdefault(a, []).append(sample)
        elsewhere = self._files_elsewhere(s, built)
        write: list[str] = []
        done: dict[str, str] = {}
        for analysis_id, (row, files, samples) in built.items():
            what = f"analysis {row['state']}"
            old = have.get(analysis_id)
            if old is not None and old.study_id != study_id:
                self.summary.skip(
                    study_id, what, analysis_id, f"pyscore has it in study {old.study_id}"
                )
                continue
            clash = [f["object_id"] for f in files if f["object_id"] in elsewhere]
            if clash:
                self.summary.skip(
                    study_id,
                    what,
                    analysis_id,
                    f"objectId {clash[0]} is a file of pyscore's analysis {elsewhere[clash[0]]}",
                )
                continue
            if old is None:
                outcome = "new"
            elif (
                _row(old, ANALYSIS_COLUMNS) == row
                and _by_id(have_files.get(analysis_id, [])) == _by_id(files)
                and sorted(have_samples.get(analysis_id, [])) == samples
            ):
                outcome = "unchanged"
            else:
                outcome = "changed"
            if outcome != "unchanged":
                write.append(analysis_id)
            self.summary.add(study_id, what, outcome, analysis_id)
            done[analysis_id] = tokens[analysis_id]
        self._write_analyses(s, write, built)
        self._mark(s, "analysis", done)

    def _check_references(
        self, s: Session, study_id: str, built: dict[str, tuple[dict, list[dict], list[str]]]
    ) -> None:
        """Leave out analyses whose samples or analysis type pyscore does not have."""
        sample_ids = sorted({x for _, _, samples in built.values() for x in samples})
        present = {
            k: o.study_id for k, o in self._existing(s, Sample, "sample_id", sample_ids).items()
        }
        pending = self.would_add.get("sample", set())
        types = {(row["type_name"], row["type_version"]) for row, _, _ in built.values()}
        known = {t for t in types if t in self.types or s.get(AnalysisType, t) is not None}
        for analysis_id, (row, _, samples) in list(built.items()):
            what = f"analysis {row['state']}"
            missing = [
                x
                for x in samples
                if present.get(x) != study_id and not (x not in present and x in pending)
            ]
            if missing:
                why = f"its sample {missing[0]} was not imported"
            elif (row["type_name"], row["type_version"]) not in known:
                why = (
                    f"pyscore has no analysis type {row['type_name']} version {row['type_version']}"
                )
            else:
                continue
            del built[analysis_id]
            self.summary.skip(study_id, what, analysis_id, why)

    def _files_elsewhere(self, s: Session, built: dict) -> dict[str, str]:
        """Object ids of these analyses that pyscore has as files of other analyses."""
        ids = [f["object_id"] for _, files, _ in built.values() for f in files]
        out: dict[str, str] = {}
        for chunk in _chunks(ids):
            for object_id, analysis_id in s.execute(
                select(File.object_id, File.analysis_id).where(File.object_id.in_(chunk))
            ):
                if analysis_id not in built:
                    out[object_id] = analysis_id
        return out

    def _write_analyses(
        self, s: Session, ids: list[str], built: dict[str, tuple[dict, list[dict], list[str]]]
    ) -> None:
        if not ids:
            return
        s.expunge_all()  # the rows read to compare are about to be replaced
        for chunk in _chunks(ids):
            self._write(s, delete(AnalysisSample).where(AnalysisSample.analysis_id.in_(chunk)))
            self._write(s, delete(File).where(File.analysis_id.in_(chunk)))
            self._write(s, delete(Analysis).where(Analysis.analysis_id.in_(chunk)))
        self._insert(s, Analysis, [built[i][0] for i in ids])
        files = [f for i in ids for f in built[i][1]]
        if files:
            self._insert(s, File, files)
        links = [{"analysis_id": i, "sample_id": x} for i in ids for x in built[i][2]]
        if links:
            self._insert(s, AnalysisSample, links)
        if not self.dry_run:
            repository.refresh_analyses(s, ids)


def _by_id(files: list[dict]) -> dict[str, dict]:
    return {f["object_id"]: f for f in files}
