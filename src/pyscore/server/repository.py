"""The File Repository's view of the data: published data files (index files ride along as
`index_object_id`), kept denormalised in `repository_entries` so that filtering, counting and
sorting 100,000 files are single indexed queries. Feeds the portal table and the manifest TSV.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Row, delete, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from pyscore.server.db import Database, insert_rows
from pyscore.server.tables import (
    Analysis,
    AnalysisSample,
    Donor,
    File,
    RepositoryCount,
    RepositoryDonor,
    RepositoryDonorCount,
    RepositoryDonorCube,
    RepositoryEntry,
    Sample,
    Specimen,
)
from pyscore.wire.manifest import ARGO_COLUMNS

FACETS = {  # URL parameter → column
    "study": RepositoryEntry.study_id,
    "data_type": RepositoryEntry.data_type,
    "file_type": RepositoryEntry.file_type,
    "access": RepositoryEntry.access,
    "analysis_type": RepositoryEntry.analysis_type,
    "donor": RepositoryDonor.donor_id,
}
# the facets `repository_counts` and `repository_donor_cube` have, and their columns ('' where
# a file has no value)
COUNTED = {
    "study": "study_id",
    "data_type": "data_type",
    "file_type": "file_type",
    "access": "access",
    "analysis_type": "analysis_type",
}
CUBE = ("study_id", "analysis_type", "file_type", "data_type", "access")
DONOR_CUBE = ("donor_id", *CUBE)
SORTS = {
    "file_name": RepositoryEntry.file_name,
    "size": RepositoryEntry.size,
    "study": RepositoryEntry.study_id,
    "file_type": RepositoryEntry.file_type,
    "data_type": RepositoryEntry.data_type,
    "access": RepositoryEntry.access,
    "analysis_type": RepositoryEntry.analysis_type,
    "published": RepositoryEntry.published_at,
    "object_id": RepositoryEntry.object_id,
}


# -- keeping the view in step ----------------------------------------------------------------
CHUNK = 500  # analyses per round of queries


def _people(
    session: Session, analysis_ids: list[str]
) -> dict[str, tuple[list[str], list[str], list[str]]]:
    """Per analysis: donor ids, sample ids, and the submitters' own ids for both (searchable
    too)."""
    found: dict[str, tuple[set[str], set[str], set[str]]] = {}
    rows = session.execute(
        select(
            AnalysisSample.analysis_id,
            Donor.donor_id,
            Sample.sample_id,
            Donor.submitter_donor_id,
            Sample.submitter_sample_id,
        )
        .join(Specimen, Specimen.donor_id == Donor.donor_id)
        .join(Sample, Sample.specimen_id == Specimen.specimen_id)
        .join(AnalysisSample, AnalysisSample.sample_id == Sample.sample_id)
        .where(AnalysisSample.analysis_id.in_(analysis_ids))
    )
    for analysis_id, donor, sample, submitter_donor, submitter_sample in rows:
        donors, samples, submitted = found.setdefault(analysis_id, (set(), set(), set()))
        donors.add(donor)
        samples.add(sample)
        submitted.update((submitter_donor, submitter_sample))
    return {k: (sorted(d), sorted(s), sorted(t)) for k, (d, s, t) in found.items()}


def refresh_analysis(session: Session, analysis_id: str) -> None:
    """Rewrite the rows of one analysis: present iff it is PUBLISHED."""
    refresh_analyses(session, [analysis_id])


def refresh_analyses(session: Session, analysis_ids: Sequence[str]) -> None:
    """Rewrite the rows of these analyses (present iff PUBLISHED), a few queries per CHUNK."""
    for start in range(0, len(analysis_ids), CHUNK):
        _refresh(session, list(analysis_ids[start : start + CHUNK]))


Shown = tuple[Counter, Counter, Counter]


def _shown(session: Session, analysis_ids: list[str]) -> Shown:
    """What these analyses' rows add to `repository_counts` (files, bytes per combination),
    `repository_donor_counts` (files per donor and study) and `repository_donor_cube`
    (files per donor and combination)."""
    e = RepositoryEntry
    combination = (
        e.study_id,
        e.analysis_type,
        func.coalesce(e.file_type, ""),
        func.coalesce(e.data_type, ""),
        e.access,
    )
    cube: Counter = Counter()
    for *key, n, size in session.execute(
        select(*combination, func.count(), func.sum(e.size))
        .where(e.analysis_id.in_(analysis_ids))
        .group_by(*combination)
    ):
        cube[(*key, "files")] += n
        cube[(*key, "bytes")] += int(size or 0)
    donors: Counter = Counter()
    donor_cube: Counter = Counter()
    for donor, *key, n in session.execute(
        select(RepositoryDonor.donor_id, *combination, func.count())
        .join(e, e.object_id == RepositoryDonor.object_id)
        .where(e.analysis_id.in_(analysis_ids))
        .group_by(RepositoryDonor.donor_id, *combination)
    ):
        donors[(donor, key[0])] += n
        donor_cube[(donor, *key)] += n
    return cube, donors, donor_cube


def _upsert(session: Session, table: Any, keys: Sequence[str], rows: list[dict]) -> None:
    """Add each row's counts to its row of `table` (made if missing), in key order (two
    transactions adding to the same rows wait for each other, never deadlock)."""
    if not rows:
        return
    from sqlalchemy.dialects import postgresql, sqlite

    dialect: Any = postgresql if session.connection().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table)
    counters = [c for c in rows[0] if c not in keys]
    statement = statement.on_conflict_do_update(
        index_elements=list(keys),
        set_={c: getattr(table, c) + getattr(statement.excluded, c) for c in counters},
    )
    session.execute(statement, sorted(rows, key=lambda r: [r[k] for k in keys]))


def _count(session: Session, before: Shown, after: Shown) -> None:
    """Move `repository_counts`, `repository_donor_counts` and `repository_donor_cube` from
    what was shown of some analyses to what is shown now."""
    cube, donors, donor_cube = after
    cube.subtract(before[0])
    donors.subtract(before[1])
    donor_cube.subtract(before[2])
    combos: dict[tuple, dict] = {}
    for (*key, what), n in cube.items():
        combos.setdefault(tuple(key), {"files": 0, "bytes": 0})[what] = n
    _upsert(
        session,
        RepositoryCount,
        CUBE,
        [dict(zip(CUBE, key), **n) for key, n in combos.items() if any(n.values())],
    )
    _upsert(
        session,
        RepositoryDonorCount,
        ("donor_id", "study_id"),
        [{"donor_id": d, "study_id": st, "files": n} for (d, st), n in donors.items() if n],
    )
    _upsert(
        session,
        RepositoryDonorCube,
        DONOR_CUBE,
        [dict(zip(DONOR_CUBE, key), files=n) for key, n in donor_cube.items() if n],
    )


def _refresh(session: Session, analysis_ids: list[str]) -> None:
    before = _shown(session, analysis_ids)
    session.execute(delete(RepositoryEntry).where(RepositoryEntry.analysis_id.in_(analysis_ids)))
    published = {
        a.analysis_id: a
        for a in session.execute(
            select(Analysis.analysis_id, Analysis.type_name, Analysis.published_at).where(
                Analysis.analysis_id.in_(analysis_ids), Analysis.state == "PUBLISHED"
            )
        )
    }
    if not published:
        _count(session, before, (Counter(), Counter(), Counter()))
        return
    files: dict[str, list[Any]] = {}
    for f in session.execute(
        select(
            File.object_id,
            File.analysis_id,
            File.study_id,
            File.file_name,
            File.file_type,
            File.data_type,
            File.file_access,
            File.file_size,
            File.file_md5sum,
            File.index_for,
        ).where(File.analysis_id.in_(list(published)))
    ):
        files.setdefault(f.analysis_id, []).append(f)
    people = _people(session, list(published))
    entries: list[dict] = []
    donor_rows: list[dict] = []
    for analysis_id, analysis in published.items():
        indexes: dict[str, str] = {}
        for f in sorted(files.get(analysis_id, []), key=lambda x: x.file_name):
            if f.index_for:
                indexes.setdefault(f.index_for, f.object_id)
        donors, samples, submitted = people.get(analysis_id, ([], [], []))
        for f in files.get(analysis_id, []):
            if f.index_for:
                continue
            entries.append(
                {
                    "object_id": f.object_id,
                    "study_id": f.study_id,
                    "analysis_id": analysis_id,
                    "analysis_type": analysis.type_name,
                    "file_name": f.file_name,
                    "file_type": f.file_type,
                    "data_type": f.data_type,
                    "access": f.file_access,
                    "size": f.file_size,
                    "md5": f.file_md5sum,
                    "index_object_id": indexes.get(f.object_id),
                    "donors": "|".join(donors),
                    "samples": "|".join(samples),
                    "published_at": analysis.published_at,
                    "search_text": " ".join(
                        [f.file_name, f.object_id, analysis_id, *donors, *samples, *submitted]
                    ).lower(),
                }
            )
            donor_rows.extend({"object_id": f.object_id, "donor_id": d} for d in donors)
    insert_rows(session, RepositoryEntry, entries)
    insert_rows(session, RepositoryDonor, donor_rows)
    _count(session, before, _shown(session, list(published)))


def rebuild(session: Session) -> int:
    """Recompute the whole view (after a migration); returns the number of files shown."""
    for table in (
        RepositoryDonor,
        RepositoryEntry,
        RepositoryCount,
        RepositoryDonorCount,
        RepositoryDonorCube,
    ):
        session.execute(delete(table))
    published = session.scalars(select(Analysis.analysis_id).where(Analysis.state == "PUBLISHED"))
    refresh_analyses(session, list(published))
    return session.scalar(select(func.count()).select_from(RepositoryEntry)) or 0


# -- querying --------------------------------------------------------------------------------
@dataclass
class Filters:
    """The File Repository's state, as in its URL."""

    selected: dict[str, list[str]] = field(default_factory=dict)
    q: str = ""
    sort: str = "file_name"
    order: str = "asc"
    hits: list[str] | None = None  # object ids matching q, found once per request

    def resolve(self, session: Session | Connection, most: int = 20_000) -> Filters:
        """Run the free-text search once, so the page's several queries reuse its result
        instead of each scanning every row's text again."""
        if self._text() and self.hits is None:
            ids = list(
                session.scalars(
                    select(RepositoryEntry.object_id).where(*self._text()).limit(most + 1)
                )
            )
            if len(ids) <= most:
                self.hits = ids
        return self

    def _text(self) -> list:
        out = []
        for word in self.q.lower().split()[:5]:
            escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            out.append(RepositoryEntry.search_text.like(f"%{escaped}%", escape="\\"))
        return out

    def counted(self, skip: str | None = None, table: Any = RepositoryCount) -> list | None:
        """The conditions on `table` (`repository_counts` or `repository_donor_cube`) that
        select what `conditions` does, or None when a donor or text filters too (those need
        the rows themselves)."""
        if self.q.split() or (skip != "donor" and self.selected.get("donor")):
            return None
        return [
            getattr(table, COUNTED[facet]).in_(values)
            for facet, values in self.selected.items()
            if facet not in (skip, "donor") and values
        ]

    def conditions(self, skip: str | None = None) -> list:
        out = []
        for facet, values in self.selected.items():
            if facet == skip or not values:
                continue
            if facet == "donor":
                out.append(
                    RepositoryEntry.object_id.in_(
                        select(RepositoryDonor.object_id).where(
                            RepositoryDonor.donor_id.in_(values)
                        )
                    )
                )
            else:
                out.append(FACETS[facet].in_(values))
        if self.hits is not None:
            out.append(RepositoryEntry.object_id.in_(self.hits))
        else:
            out += self._text()
        return out


def totals(session: Session, filters: Filters) -> tuple[int, int]:
    """(files, bytes) of the selection, in one pass (over `repository_counts` when only
    its facets filter)."""
    counted = filters.counted()
    if counted is not None:
        query = select(
            func.coalesce(func.sum(RepositoryCount.files), 0),
            func.coalesce(func.sum(RepositoryCount.bytes), 0),
        ).where(*counted)
    else:
        query = select(func.count(), func.coalesce(func.sum(RepositoryEntry.size), 0)).where(
            *filters.conditions()
        )
    row = session.execute(query).one()
    return int(row[0] or 0), int(row[1] or 0)


def _ordered(filters: Filters, query: Any) -> Any:
    column = SORTS.get(filters.sort, RepositoryEntry.file_name)
    ordering = column.desc() if filters.order == "desc" else column.asc()
    return query.where(*filters.conditions()).order_by(ordering, RepositoryEntry.object_id)


def search(
    session: Session,
    filters: Filters,
    offset: int = 0,
    limit: int | None = 50,
    total: int | None = None,
) -> tuple[list[RepositoryEntry], int]:
    where = filters.conditions()
    if total is None:
        total = session.scalar(select(func.count()).select_from(RepositoryEntry).where(*where)) or 0
    query = _ordered(filters, select(RepositoryEntry)).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query)), total


def stream(
    db: Database, filters: Filters, columns: Sequence[Any], batch: int = 2000
) -> Iterator[Sequence[Row[Any]]]:
    """Every row of the selection in its order (plain tuples of `columns`), `batch` rows at a
    time, read through a server-side cursor on a connection of its own (PostgreSQL sends rows
    as they are found): an export of a million rows keeps a batch in memory, and its first
    bytes go out before the last row is read."""
    with db.streaming(batch) as conn:
        filters.resolve(conn)
        yield from conn.execute(_ordered(filters, select(*columns))).partitions(batch)


@dataclass
class Facet:
    values: list[tuple[str, int]]  # the most frequent values, with their file counts
    distinct: int  # how many values there are in all


def facet_counts(session: Session, filters: Filters, limit: int = 100) -> dict[str, Facet]:
    """For each facet, its most frequent values with how many files each would show, given
    the other facets' filters (so a facet never counts itself out). Without a donor or text
    filter the counts are sums over `repository_counts` (the donor facet's over
    `repository_donor_counts` when at most studies are chosen, else `repository_donor_cube`),
    else counts of the rows. One query a facet: its values and how many there are."""
    out: dict[str, Facet] = {}
    column: Any
    n: Any
    base: Any
    for facet, column in FACETS.items():
        counted = filters.counted(skip=facet)
        others = {f for f, v in filters.selected.items() if v and f != facet}
        if counted is not None and facet != "donor":
            column = getattr(RepositoryCount, COUNTED[facet])
            n = func.sum(RepositoryCount.files)
            base = select(column).where(*counted).group_by(column).having(n > 0)
        elif counted is not None and others <= {"study"}:
            column, n = RepositoryDonorCount.donor_id, func.sum(RepositoryDonorCount.files)
            studies = filters.selected.get("study")
            base = select(column).group_by(column).having(n > 0)
            if studies:
                base = base.where(RepositoryDonorCount.study_id.in_(studies))
        elif counted is not None:
            column, n = RepositoryDonorCube.donor_id, func.sum(RepositoryDonorCube.files)
            where = filters.counted(skip=facet, table=RepositoryDonorCube) or []
            base = select(column).where(*where).group_by(column).having(n > 0)
        else:
            n = func.count()
            where = filters.conditions(skip=facet)
            if facet == "donor":
                base = select(column).select_from(RepositoryDonor)
                if where:  # a semi-join: far cheaper than joining 100,000 rows
                    base = base.where(
                        RepositoryDonor.object_id.in_(
                            select(RepositoryEntry.object_id).where(*where)
                        )
                    )
            else:
                base = select(column).select_from(RepositoryEntry).where(*where)
            base = base.group_by(column)
        rows = session.execute(
            base.add_columns(n, func.count().over()).order_by(n.desc(), column).limit(limit)
        ).all()
        distinct = int(rows[0][2]) if rows else 0
        out[facet] = Facet(
            [(str(v) if v is not None else "", int(c)) for v, c, _ in rows], distinct
        )
    return out


# an ARGO manifest's columns after `repository_code`, in its order (wire/manifest.py)
MANIFEST = (
    RepositoryEntry.analysis_id,
    RepositoryEntry.object_id,
    RepositoryEntry.file_type,
    RepositoryEntry.file_name,
    RepositoryEntry.size,
    RepositoryEntry.md5,
    RepositoryEntry.index_object_id,
    RepositoryEntry.donors,
    RepositoryEntry.samples,
    RepositoryEntry.study_id,
)


def manifest_rows(session: Session, filters: Filters, repository_code: str) -> list[dict]:
    """The ARGO manifest's rows of the selection (`stream` gives them as tuples of MANIFEST)."""
    rows = session.execute(_ordered(filters.resolve(session), select(*MANIFEST)))
    return [dict(zip(ARGO_COLUMNS, (repository_code, *r))) for r in rows]
