"""Reading SONG's PostgreSQL (the schema its Flyway migrations V1 ... V1_20 and the Java
migration V1_2 leave), read-only, in one repeatable-read snapshot: the fast way for a large
platform. Each analysis's token is a hash PostgreSQL computes over everything pyscore keeps of
it, so a second run reads whole analyses only where something changed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Optional
from urllib.parse import urlsplit

from pyscore.server.importing.records import Page, SongAnalysis, SourceError, song_time

# What the importer reads: the tables and columns of SONG's schema after V1_20
NEEDED = {
    "study": {"id", "name", "description", "organization"},
    "donor": {"id", "study_id", "submitter_id", "gender"},
    "specimen": {
        "id",
        "donor_id",
        "submitter_id",
        "tumour_normal_designation",
        "tissue_source",
        "type",
    },
    "sample": {"id", "specimen_id", "submitter_id", "matched_normal_submitter_sample_id", "type"},
    "analysis": {
        "id",
        "study_id",
        "state",
        "analysis_schema_id",
        "analysis_data_id",
        "created_at",
        "updated_at",
    },
    "analysis_data": {"id", "data"},
    "analysis_schema": {"id", "name", "version", "schema", "created_at", "file_types"},
    "analysis_state_change": {"id", "analysis_id", "initial_state", "updated_state", "updated_at"},
    "sampleset": {"analysis_id", "sample_id"},
    "file": {"id", "analysis_id", "study_id", "name", "size", "md5", "type", "access", "data_type"},
    "info": {"id", "id_type", "info"},
}

_q = "quote_nullable"  # NULL and '' differ in a token
# Each analysis of a study with its token, a hash over everything pyscore keeps of it, in one
# pass over each table (aggregated per analysis, not looked up per analysis)
TOKENS = f"""
WITH a AS (SELECT * FROM analysis WHERE study_id = %(study)s),
c AS (
  SELECT c.analysis_id, string_agg(concat_ws(',', {_q}(c.initial_state::text),
    {_q}(c.updated_state::text), {_q}(c.updated_at)), ';' ORDER BY c.updated_at, c.id) AS x
  FROM analysis_state_change c JOIN a ON a.id = c.analysis_id GROUP BY c.analysis_id),
f AS (
  SELECT f.analysis_id, string_agg(concat_ws(',', {_q}(f.id), {_q}(f.study_id), {_q}(f.name),
    {_q}(f.size), {_q}(f.md5), {_q}(f.type::text), {_q}(f.access::text), {_q}(f.data_type),
    {_q}(i.info::text)), ';' ORDER BY f.id) AS x
  FROM file f JOIN a ON a.id = f.analysis_id
  LEFT JOIN info i ON i.id = f.id AND i.id_type = 'File' GROUP BY f.analysis_id),
ss AS (
  SELECT ss.analysis_id, string_agg(ss.sample_id, ';' ORDER BY ss.sample_id) AS x
  FROM sampleset ss JOIN a ON a.id = ss.analysis_id GROUP BY ss.analysis_id)
SELECT a.id, md5(concat_ws('|', {_q}(a.study_id), {_q}(a.state::text), {_q}(s.name),
  {_q}(s.version), {_q}(d.data::text), {_q}(a.created_at), {_q}(a.updated_at), c.x, f.x, ss.x))
FROM a
LEFT JOIN analysis_schema s ON s.id = a.analysis_schema_id
LEFT JOIN analysis_data d ON d.id = a.analysis_data_id
LEFT JOIN c ON c.analysis_id = a.id
LEFT JOIN f ON f.analysis_id = a.id
LEFT JOIN ss ON ss.analysis_id = a.id
ORDER BY a.id
"""
# A study's analyses changed or not, told cheaply: every row version PostgreSQL writes has a
# new xmin (the writing transaction), so a sum of hashes of (row, xmin) over the analyses and
# the rows they are made of moves with any insert, update or delete among them.
_hash = "('x' || substr(md5({}), 1, 15))::bit(60)::bigint"
VERSIONS = f"""
WITH a AS (SELECT id, analysis_data_id, xmin FROM analysis WHERE study_id = %(study)s)
SELECT count(*), sum({_hash.format("k")}) FROM (
  SELECT a.id || ':' || a.xmin::text AS k FROM a
  UNION ALL SELECT d.id || ':' || d.xmin::text FROM analysis_data d JOIN a
    ON a.analysis_data_id = d.id
  UNION ALL SELECT f.id || ':' || f.xmin::text FROM file f JOIN a ON a.id = f.analysis_id
  UNION ALL SELECT i.id || ':' || i.xmin::text FROM info i JOIN file f
    ON i.id = f.id AND i.id_type = 'File' JOIN a ON a.id = f.analysis_id
  UNION ALL SELECT c.id || ':' || c.xmin::text FROM analysis_state_change c JOIN a
    ON a.id = c.analysis_id
  UNION ALL SELECT ss.analysis_id || ss.sample_id || ':' || ss.xmin::text FROM sampleset ss
    JOIN a ON a.id = ss.analysis_id
) AS rows
"""
ANALYSES = """
SELECT a.id, a.study_id, a.state::text, s.name, s.version, d.data, a.created_at, a.updated_at
FROM analysis a
LEFT JOIN analysis_schema s ON s.id = a.analysis_schema_id
LEFT JOIN analysis_data d ON d.id = a.analysis_data_id
WHERE a.id = ANY(%s)
"""
HISTORY = """
SELECT analysis_id, initial_state::text, updated_state::text, updated_at
FROM analysis_state_change WHERE analysis_id = ANY(%s) ORDER BY analysis_id, updated_at, id
"""
SAMPLESETS = "SELECT analysis_id, sample_id FROM sampleset WHERE analysis_id = ANY(%s)"
FILES = """
SELECT f.id, f.analysis_id, f.study_id, f.name, f.size, f.md5, f.type::text, f.access::text,
       f.data_type, i.info
FROM file f LEFT JOIN info i ON i.id = f.id AND i.id_type = 'File'
WHERE f.analysis_id = ANY(%s) ORDER BY f.id
"""
STUDIES = """
SELECT s.id, s.name, s.organization, s.description, i.info
FROM study s LEFT JOIN info i ON i.id = s.id AND i.id_type = 'Study' ORDER BY s.id
"""
TYPES = """
SELECT name, version, created_at, schema, file_types FROM analysis_schema ORDER BY name, version
"""
DONORS = """
SELECT d.id, d.submitter_id, d.gender::text, i.info
FROM donor d LEFT JOIN info i ON i.id = d.id AND i.id_type = 'Donor'
WHERE d.study_id = %s ORDER BY d.id
"""
SPECIMENS = """
SELECT sp.id, sp.donor_id, sp.submitter_id, sp.tumour_normal_designation::text,
       sp.tissue_source::text, sp.type::text, i.info
FROM specimen sp JOIN donor d ON d.id = sp.donor_id
LEFT JOIN info i ON i.id = sp.id AND i.id_type = 'Specimen'
WHERE d.study_id = %s ORDER BY sp.id
"""
SAMPLES = """
SELECT sa.id, sa.specimen_id, sa.submitter_id, sa.matched_normal_submitter_sample_id,
       sa.type::text, i.info
FROM sample sa JOIN specimen sp ON sp.id = sa.specimen_id JOIN donor d ON d.id = sp.donor_id
LEFT JOIN info i ON i.id = sa.id AND i.id_type = 'Sample'
WHERE d.study_id = %s ORDER BY sa.id
"""


def _with_info(body: dict, info: Any) -> dict:
    """SONG's JSON writes `info` only when it holds something."""
    if isinstance(info, dict) and info:
        body["info"] = info
    return body


def public(url: str) -> str:
    """A database URL without its password, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    where = f"{parts.username}@{host}" if parts.username else host
    return f"{parts.scheme}://{where}{f':{parts.port}' if parts.port else ''}{parts.path}"


class SongDatabase:
    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise SourceError(
                "reading SONG's database needs psycopg: pip install 'pyscore[postgres]'"
            ) from None
        self.where = public(url)
        try:
            self.conn = psycopg.connect(url, connect_timeout=10)
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()
            raise SourceError(
                f"cannot reach SONG's database {self.where}: {reason[-1] if reason else exc}"
            ) from None
        self._cursors = 0
        self.conn.read_only = True  # never a write, whatever happens here
        self.conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # one snapshot
        self._check()

    def _check(self) -> None:
        rows = self.conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema()"
        ).fetchall()
        have: dict[str, set[str]] = {}
        for table, column in rows:
            have.setdefault(table, set()).add(column)
        for table, columns in NEEDED.items():
            missing = sorted(columns - have.get(table, set()))
            if missing:
                what = f"no table {table}" if table not in have else f"no {table}.{missing[0]}"
                raise SourceError(
                    f"{self.where} is not SONG's database ({what}; SONG's Flyway migrations "
                    "V1 ... V1_20 make one)"
                )

    def _stream(self, sql: str, args: Any) -> Iterator[tuple]:
        """Rows as they come (a server-side cursor), other queries free to run meanwhile."""
        self._cursors += 1
        with self.conn.cursor(name=f"song_import_{self._cursors}") as cur:
            cur.itersize = 2000
            cur.execute(sql, args)
            yield from cur

    def studies(self) -> list[dict]:
        return [
            _with_info(
                {"studyId": i, "name": name, "organization": org, "description": text},
                info,
            )
            for i, name, org, text, info in self.conn.execute(STUDIES)
        ]

    def analysis_types(self) -> Iterator[dict]:
        for name, version, created, schema, file_types in self.conn.execute(TYPES):
            yield {
                "name": name,
                "version": version,
                "createdAt": song_time(created),
                "schema": schema,
                "options": {"fileTypes": list(file_types or [])},
            }

    def donors(self, study_id: str) -> Iterator[dict]:
        for i, submitter, gender, info in self._stream(DONORS, (study_id,)):
            yield _with_info(
                {
                    "donorId": i,
                    "studyId": study_id,
                    "submitterDonorId": submitter,
                    "gender": gender,
                },
                info,
            )

    def specimens(self, study_id: str) -> Iterator[dict]:
        rows = self._stream(SPECIMENS, (study_id,))
        for i, donor, submitter, designation, source, kind, info in rows:
            body = {"specimenId": i, "donorId": donor, "submitterSpecimenId": submitter}
            for key, value in (
                ("tumourNormalDesignation", designation),
                ("specimenTissueSource", source),
                ("specimenType", kind),
            ):
                if value is not None:  # SONG's Specimen JSON is NON_ABSENT
                    body[key] = value
            yield _with_info(body, info)

    def samples(self, study_id: str) -> Iterator[dict]:
        for i, specimen, submitter, matched, kind, info in self._stream(SAMPLES, (study_id,)):
            yield _with_info(
                {
                    "sampleId": i,
                    "specimenId": specimen,
                    "submitterSampleId": submitter,
                    "matchedNormalSubmitterSampleId": matched,
                    "sampleType": kind,
                },
                info,
            )

    def count(self, study_id: str) -> int:
        row = self.conn.execute(
            "SELECT count(*) FROM analysis WHERE study_id = %s", (study_id,)
        ).fetchone()
        return int(row[0]) if row else 0

    def pages(self, study_id: str, size: int) -> Iterator[Page]:
        page: dict[str, str] = {}
        for i, token in self._stream(TOKENS, {"study": study_id}):
            page[i] = f"db:{token}"
            if len(page) == size:
                yield Page(page, self._analyses)
                page = {}
        if page:
            yield Page(page, self._analyses)

    def fingerprint(self, study_id: str, kind: str) -> Optional[str]:
        """One token for all of a study's donors, specimens, samples (a hash PostgreSQL
        computes over their rows) or analyses (over their rows' versions, VERSIONS); Python
        gets one row."""
        if kind == "analysis":
            row = self.conn.execute(VERSIONS, {"study": study_id}).fetchone()
            return f"db:{row[0]}:{row[1]}" if row else None
        sql = {"donor": DONORS, "specimen": SPECIMENS, "sample": SAMPLES}[kind]
        each = "md5(r::text)"
        query = f"SELECT md5(string_agg({each}, ',' ORDER BY {each})) FROM ({sql}) r"
        row = self.conn.execute(query, (study_id,)).fetchone()
        return f"db:{row[0]}" if row and row[0] else None

    def _analyses(self, ids: list[str]) -> list[SongAnalysis]:
        out: dict[str, SongAnalysis] = {}
        for i, study, state, name, version, data, created, updated in self.conn.execute(
            ANALYSES, (ids,)
        ):
            out[i] = SongAnalysis(
                analysis_id=i,
                study_id=study,
                state=state,
                type_name=name,
                type_version=version,
                data=data if isinstance(data, dict) else {},
                created_at=song_time(created),
                updated_at=song_time(updated),
            )
        for i, initial, updated, at in self.conn.execute(HISTORY, (ids,)):
            out[i].history.append((initial, updated, song_time(at)))
        for i, sample in self.conn.execute(SAMPLESETS, (ids,)):
            out[i].sample_ids.append(sample)
        for row in self.conn.execute(FILES, (ids,)):
            object_id, analysis, study, name, size, md5, kind, access, data_type, info = row
            body = {
                "objectId": object_id,
                "studyId": study,
                "analysisId": analysis,
                "fileName": name,
                "fileSize": size,
                "fileType": kind,
                "fileMd5sum": md5,
                "fileAccess": access,
                "dataType": data_type,
            }
            out[analysis].files.append(_with_info(body, info))
        return [out[i] for i in ids if i in out]

    def close(self) -> None:
        self.conn.close()
