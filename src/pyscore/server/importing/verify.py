"""`score-server import verify`: everything SONG has, read again and compared with what pyscore
has (an import's dry run that trusts no token: a record that would be new, changed or left out
is a difference), and every object pyscore serves against SONG's file record (size; MD5 where
the bucket recorded one) and, on S3, against the bucket itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from pyscore.server.db import Database
from pyscore.server.importing.records import Source
from pyscore.server.importing.score import ScoreAdoption
from pyscore.server.importing.song import SongImport
from pyscore.server.tables import Analysis, File, StoredObject

PAGE = 1000
NAMES = {
    "study": "studies",
    "analysis type": "analysis types",
    "donor": "donors",
    "specimen": "specimens",
    "sample": "samples",
}


@dataclass
class Verdict:
    """Per kind of record: [compared, equal, different, missing], and each difference."""

    rows: dict[str, list[int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def count(self, kind: str, outcome: int) -> None:
        row = self.rows.setdefault(kind, [0, 0, 0, 0])
        row[0] += 1
        row[outcome] += 1

    @property
    def equal(self) -> bool:
        return not any(row[2] or row[3] for row in self.rows.values())


EQUAL, DIFFERENT, MISSING = 1, 2, 3


def verify_song(
    db: Database, source: Source, verdict: Verdict, progress: Callable[[str, int, int], None]
) -> None:
    summary = SongImport(db, source, dry_run=True, trust_marks=False, progress=progress).run()
    for (_, what), counts in summary.counts.items():
        kind = NAMES.get(what, "analyses")
        for outcome, n in counts.items():
            code = {"unchanged": EQUAL, "changed": DIFFERENT}.get(outcome, MISSING)
            for _ in range(n):
                verdict.count(kind, code)
    for study, what, key, outcome in summary.changes:
        said = "differs from SONG" if outcome == "changed" else "is not in pyscore"
        verdict.problems.append(f"{what} {key} (study {study}) {said}")
    for study, what, key, why in summary.skipped:
        verdict.problems.append(f"{what} {key} (study {study}) is not in pyscore: {why}")


def verify_objects(db: Database, store: Any, verdict: Verdict) -> None:
    """Each file's object: present if its analysis is published, of SONG's size and MD5; on
    S3, in the bucket Score's layout puts it, of that size."""
    listed: dict[str, Any] = {}
    base: dict[str, Any] = {}
    if getattr(store, "kind", "") == "s3":
        listed, base, _ = ScoreAdoption(db, store).listing()
    after = ""
    with db.session() as s:
        while True:
            rows = s.execute(
                select(File, Analysis.state, StoredObject)
                .join(Analysis, Analysis.analysis_id == File.analysis_id)
                .outerjoin(StoredObject, StoredObject.object_id == File.object_id)
                .where(File.object_id > after)
                .order_by(File.object_id)
                .limit(PAGE)
            ).all()
            if not rows:
                return
            after = rows[-1][0].object_id
            for f, state, obj in rows:
                _one(f, state, obj, store, listed, base, verdict)


def _one(f: File, state: str, obj: Any, store: Any, listed: dict, base: dict, v: Verdict) -> None:
    name = f"object {f.object_id} ({f.file_name})"
    if obj is None:
        if state == "PUBLISHED":
            v.count("objects (size)", MISSING)
            v.problems.append(f"{name} of a published analysis is not in storage")
        return
    sizes = [obj.size]
    if getattr(store, "kind", "") == "s3":
        home = obj.bucket or store.partition(store.bucket, f.object_id)
        found = listed.get(f.object_id) or base.get(f.object_id)
        if found is None or found.bucket != home:
            v.count("objects (size)", MISSING)
            v.problems.append(f"{name} is not in s3://{home}")
            return
        sizes.append(found.size)
    if any(size != f.file_size for size in sizes):
        v.count("objects (size)", DIFFERENT)
        v.problems.append(f"{name} holds {max(sizes)} bytes, SONG says {f.file_size}")
    else:
        v.count("objects (size)", EQUAL)
    if obj.md5:
        same = obj.md5.lower() == (f.file_md5sum or "").lower()
        v.count("objects (MD5)", EQUAL if same else DIFFERENT)
        if not same:
            v.problems.append(f"{name} has MD5 {obj.md5}, SONG says {f.file_md5sum}")
