"""A TEST DOUBLE of a running SONG + Score platform, written for pyscore's import tests from
reading SONG's and Score's sources (overture-stack/SONG 434ddf2e, overture-stack/score
34a53a4b; ../shared/reference/song_score_api.md), not by their authors:

- SongPlatform: studies, analysis types (every version), donors, specimens, samples and
  analyses, kept in SONG's JSON, with ids as LocalIdService mints them (uuid5 of
  "study:submitterId" and "analysisId:fileName", random analysis ids) and state changes as
  AnalysisService records them;
- write_song_database: the platform into a database with SONG's schema (tests/song_schema.sql,
  itself a double, or SONG's own Flyway SQL when PYSCORE_SONG_GIT names SONG's sources), rows
  as SONG's services write them: an info row per study, donor, specimen, sample and file,
  analysis_data, analysis_schema, a state change per transition;
- SongApiDouble: SONG's open HTTP API over the same platform, on 127.0.0.1;
- write_score_bucket: the objects as Score's upload service leaves them: `data/<id>` in the
  object bucket, `data/<id>.meta` (ObjectSpecification JSON, each part's sourceMd5) in the
  state bucket, partitioned as S3BucketNamingService names buckets (`<base>.<n>`, n = the
  first K hex characters of the id mod the pool).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.loopback import Loopback

NAMESPACE = uuid.UUID("6ba7b812-9dad-11d1-80b4-00c04fd430c8")  # SONG's IdConfig
SCHEMA_SQL = Path(__file__).with_name("song_schema.sql")
STATES = ("PUBLISHED", "UNPUBLISHED", "SUPPRESSED")
SCORE_PART_SIZE = 20_000_000  # Score's upload.partsize


def local_id(*keys: str) -> str:
    """LocalIdService.generateId: a name-based SHA-1 UUID of the keys joined by ':'."""
    return str(uuid.uuid5(NAMESPACE, ":".join(keys)))


def local_time(at: datetime | None) -> str | None:
    """A LocalDateTime as SONG's Jackson writes it (ISO, no zone)."""
    return at.isoformat() if at else None


def _with_info(body: dict, info: dict | None) -> dict:
    if info:
        body["info"] = info
    return body


# Stand-ins for the two types V1_2 registers (SONG's legacy schemas, when its sources are not at
# hand): what a test needs of them is that they exist as ids 1 and 2
LEGACY = ("variantCall", "sequencingRead")


def _legacy_schema(name: str) -> dict:
    if os.environ.get("PYSCORE_SONG_GIT"):
        from tests.song_sources import song_json

        return song_json(f"song-server/src/main/resources/schemas/analysis/legacy/{name}.json")
    return {"type": "object", "required": ["experiment"], "properties": {"experiment": {}}}


@dataclass
class SongPlatform:
    """A SONG platform's data in SONG's JSON shapes, written as SONG's services write it."""

    now: datetime = field(default_factory=lambda: datetime(2024, 3, 1, 9, 30, 0, 120000))
    studies: dict[str, dict] = field(default_factory=dict)
    types: list[dict] = field(default_factory=list)
    donors: dict[str, dict] = field(default_factory=dict)
    specimens: dict[str, dict] = field(default_factory=dict)
    samples: dict[str, dict] = field(default_factory=dict)
    analyses: dict[str, dict] = field(default_factory=dict)
    content: dict[str, bytes] = field(default_factory=dict)  # object id -> bytes

    def __post_init__(self) -> None:
        migrated = datetime(2019, 6, 1, 12, 0, 0)
        for name in LEGACY:  # V1_2's INSERTs, at its run
            self.types.append(
                {
                    "name": name,
                    "version": 1,
                    "createdAt": migrated,
                    "schema": _legacy_schema(name),
                    "fileTypes": [],
                }
            )

    def tick(self) -> datetime:
        self.now += timedelta(minutes=7, microseconds=1)
        return self.now

    def study(self, study_id: str, **fields: Any) -> None:
        self.studies[study_id] = {"studyId": study_id, **fields}

    def register(self, name: str, schema: dict, file_types: list[str] | None = None) -> int:
        """POST /schemas: a new version of the type."""
        version = 1 + max((t["version"] for t in self.types if t["name"] == name), default=0)
        self.types.append(
            {
                "name": name,
                "version": version,
                "createdAt": self.tick(),
                "schema": schema,
                "fileTypes": list(file_types or []),
            }
        )
        return version

    def sample(
        self,
        study: str,
        donor: str,
        specimen: str,
        sample: str,
        *,
        gender: str = "Female",
        sample_type: str = "Total DNA",
        designation: str = "Normal",
        info: dict | None = None,
    ) -> str:
        """CompositeEntityService.save: each found by (study, submitter id), else created with
        LocalIdService's id."""
        donor_id = local_id(study, donor)
        self.donors.setdefault(
            donor_id,
            _with_info(
                {
                    "donorId": donor_id,
                    "studyId": study,
                    "submitterDonorId": donor,
                    "gender": gender,
                },
                info,
            ),
        )
        specimen_id = local_id(study, specimen)
        self.specimens.setdefault(
            specimen_id,
            _with_info(
                {
                    "specimenId": specimen_id,
                    "donorId": donor_id,
                    "submitterSpecimenId": specimen,
                    "tumourNormalDesignation": designation,
                    "specimenTissueSource": "Solid tissue",
                    "specimenType": "Normal" if designation == "Normal" else "Primary tumour",
                },
                info,
            ),
        )
        sample_id = local_id(study, sample)
        self.samples.setdefault(
            sample_id,
            _with_info(
                {
                    "sampleId": sample_id,
                    "specimenId": specimen_id,
                    "submitterSampleId": sample,
                    "matchedNormalSubmitterSampleId": None,
                    "sampleType": sample_type,
                },
                info,
            ),
        )
        return sample_id

    def submit(
        self,
        study: str,
        kind: tuple[str, int],
        samples: list[str],
        files: dict[str, bytes],
        data: dict,
        *,
        access: str = "open",
        file_info: dict | None = None,
    ) -> str:
        """AnalysisServiceImpl.create: a random analysis id, files' ids from LocalIdService."""
        analysis_id = str(uuid.uuid4())
        at = self.tick()
        entries = []
        for name, body in files.items():
            object_id = local_id(analysis_id, name)
            self.content[object_id] = body
            kind_of = name.rsplit(".", 1)[-1].upper()
            entries.append(
                _with_info(
                    {
                        "objectId": object_id,
                        "studyId": study,
                        "analysisId": analysis_id,
                        "fileName": name,
                        "fileSize": len(body),
                        "fileType": kind_of,
                        "fileMd5sum": hashlib.md5(body).hexdigest(),
                        "fileAccess": access,
                        "dataType": "Aligned Reads",
                    },
                    file_info,
                )
            )
        self.analyses[analysis_id] = {
            "analysisId": analysis_id,
            "studyId": study,
            "analysisState": "UNPUBLISHED",
            "analysisType": {"name": kind[0], "version": kind[1]},
            "createdAt": at,
            "updatedAt": at,
            "history": [],
            "sampleIds": list(samples),
            "files": entries,
            "data": data,
        }
        return analysis_id

    def change(self, analysis_id: str, state: str) -> None:
        """publish/unpublish/suppress: the state, updatedAt, one analysis_state_change row."""
        a = self.analyses[analysis_id]
        at = self.tick()
        a["history"].append((a["analysisState"], state, at))
        a["analysisState"] = state
        a["updatedAt"] = at

    # -- SONG's JSON -----------------------------------------------------------------------
    def analysis_json(self, analysis_id: str) -> dict:
        a = self.analyses[analysis_id]
        published = [at for _, state, at in a["history"] if state == "PUBLISHED"]
        samples = []
        for sample_id in a["sampleIds"]:
            sample = self.samples[sample_id]
            specimen = self.specimens[sample["specimenId"]]
            samples.append(
                {**sample, "specimen": specimen, "donor": self.donors[specimen["donorId"]]}
            )
        return {
            **a["data"],
            "analysisId": analysis_id,
            "studyId": a["studyId"],
            "analysisState": a["analysisState"],
            "analysisType": a["analysisType"],
            "createdAt": local_time(a["createdAt"]),
            "updatedAt": local_time(a["updatedAt"]),
            "firstPublishedAt": local_time(min(published)) if published else None,
            "publishedAt": local_time(max(published)) if published else None,
            "analysisStateHistory": [
                {"initialState": i, "updatedState": u, "updatedAt": local_time(at)}
                for i, u, at in a["history"]
            ],
            "samples": samples,
            "files": a["files"],
        }

    def type_json(self, t: dict) -> dict:
        return {
            "name": t["name"],
            "version": t["version"],
            "createdAt": local_time(t["createdAt"]),
            "schema": t["schema"],
            "options": {"fileTypes": t["fileTypes"], "externalValidations": []},
        }

    def study_all(self, study: str) -> dict:
        """StudyWithDonors: the study's fields flat, its donors nested."""
        out = {**self.studies[study], "donors": []}
        for donor in self.donors.values():
            if donor["studyId"] != study:
                continue
            specimens = []
            for sp in self.specimens.values():
                if sp["donorId"] == donor["donorId"]:
                    samples = [
                        s for s in self.samples.values() if s["specimenId"] == sp["specimenId"]
                    ]
                    specimens.append({**sp, "samples": samples})
            out["donors"].append({**donor, "specimens": specimens})
        return out


# -- SONG's database ------------------------------------------------------------------------
def create_song_database(admin_url: str) -> str:
    """A fresh database on the test PostgreSQL with SONG's schema; returns its URL."""
    import psycopg

    name = f"song_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(url, autocommit=True) as conn:
        if os.environ.get("PYSCORE_SONG_GIT"):
            apply_flyway(conn)
        else:
            conn.execute(SCHEMA_SQL.read_text())
    return url


def apply_flyway(conn: Any) -> None:
    """SONG's own migrations, in Flyway's order; V1_2 (Java) as the statements it runs."""
    from tests.song_sources import MIGRATIONS, song_names, song_text

    versions = []
    for name in song_names(MIGRATIONS):
        m = re.match(r"V(\d+(?:_\d+)?)__.*\.sql$", name)
        if m:
            versions.append((tuple(int(x) for x in m[1].split("_")), name))
    versions.append(((1, 2), "V1_2"))
    for _, name in sorted(versions):
        if name == "V1_2":
            conn.execute(
                "ALTER TABLE Analysis ADD analysis_schema_id INTEGER;"
                "ALTER TABLE Analysis ADD CONSTRAINT analysis_schema_id_fk "
                "FOREIGN KEY (analysis_schema_id) REFERENCES analysis_schema(id);"
                "CREATE TABLE analysis_data (id BIGSERIAL PRIMARY KEY, data jsonb NOT NULL);"
                "ALTER TABLE Analysis ADD analysis_data_id INTEGER;"
                "ALTER TABLE Analysis ADD CONSTRAINT analysis_data_id_fk "
                "FOREIGN KEY (analysis_data_id) REFERENCES analysis_data(id);"
                "DROP VIEW idview; DROP VIEW fullview;"
            )
            for name_of in LEGACY:  # analysis_schema ids 1 and 2
                conn.execute(
                    "INSERT INTO analysis_schema (name, schema, version) VALUES (%s, %s, 1)",
                    (name_of, json.dumps(_legacy_schema(name_of))),
                )
            conn.execute("DROP TABLE variantcall; DROP TABLE sequencingread")
        else:
            conn.execute(song_text(f"{MIGRATIONS}/{name}"))


def insert(conn: Any, table: str, row: dict) -> Any:
    """One row into one of SONG's tables."""
    marks = ", ".join(["%s"] * len(row))
    return conn.execute(
        f"INSERT INTO {table} ({', '.join(row)}) VALUES ({marks})", tuple(row.values())
    )


# SONG's rows of its JSON (the columns its entities map to)
def donor_row(d: dict) -> dict:
    return {
        "id": d["donorId"],
        "study_id": d["studyId"],
        "submitter_id": d["submitterDonorId"],
        "gender": d["gender"],
    }


def specimen_row(sp: dict) -> dict:
    return {
        "id": sp["specimenId"],
        "donor_id": sp["donorId"],
        "submitter_id": sp["submitterSpecimenId"],
        "tumour_normal_designation": sp["tumourNormalDesignation"],
        "tissue_source": sp["specimenTissueSource"],
        "type": sp["specimenType"],
    }


def sample_row(sa: dict) -> dict:
    return {
        "id": sa["sampleId"],
        "specimen_id": sa["specimenId"],
        "submitter_id": sa["submitterSampleId"],
        "type": sa["sampleType"],
        "matched_normal_submitter_sample_id": sa["matchedNormalSubmitterSampleId"],
    }


def file_row(f: dict) -> dict:
    return {
        "id": f["objectId"],
        "analysis_id": f["analysisId"],
        "study_id": f["studyId"],
        "name": f["fileName"],
        "size": f["fileSize"],
        "md5": f["fileMd5sum"],
        "type": f["fileType"],
        "access": f["fileAccess"],
        "data_type": f["dataType"],
    }


def write_song_database(platform: SongPlatform, url: str) -> None:
    """The platform into SONG's tables, as SONG's services write rows: each entity and file
    with its info row."""
    import psycopg

    with psycopg.connect(url) as conn:
        have = {
            (n, v): i for i, n, v in conn.execute("SELECT id, name, version FROM analysis_schema")
        }
        schema_ids = {}
        for t in platform.types:
            key = (t["name"], t["version"])
            if key in have:  # V1_2 registered it (SONG's Flyway SQL)
                conn.execute(
                    "UPDATE analysis_schema SET created_at = %s WHERE id = %s",
                    (t["createdAt"], have[key]),
                )
                schema_ids[key] = have[key]
                continue
            schema_ids[key] = conn.execute(
                "INSERT INTO analysis_schema (name, version, schema, created_at, file_types) "
                "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                (
                    t["name"],
                    t["version"],
                    json.dumps(t["schema"]),
                    t["createdAt"],
                    t["fileTypes"] or None,
                ),
            ).fetchone()[0]
        entities = [
            (
                "study",
                "Study",
                platform.studies.values(),
                "studyId",
                lambda s: {
                    "id": s["studyId"],
                    "name": s.get("name"),
                    "description": s.get("description"),
                    "organization": s.get("organization"),
                },
            ),
            ("donor", "Donor", platform.donors.values(), "donorId", donor_row),
            ("specimen", "Specimen", platform.specimens.values(), "specimenId", specimen_row),
            ("sample", "Sample", platform.samples.values(), "sampleId", sample_row),
        ]
        for table, kind, bodies, key, row in entities:
            for body in bodies:
                insert(conn, table, row(body))
                info = {
                    "id": body[key],
                    "id_type": kind,
                    "info": json.dumps(body.get("info") or {}),
                }
                insert(conn, "info", info)
        for a in platform.analyses.values():
            (data_id,) = conn.execute(
                "INSERT INTO analysis_data (data) VALUES (%s) RETURNING id",
                (json.dumps(a["data"]),),
            ).fetchone()
            kind = (a["analysisType"]["name"], a["analysisType"]["version"])
            row = {
                "id": a["analysisId"],
                "study_id": a["studyId"],
                "state": a["analysisState"],
                "analysis_schema_id": schema_ids[kind],
                "analysis_data_id": data_id,
                "created_at": a["createdAt"],
                "updated_at": a["updatedAt"],
            }
            insert(conn, "analysis", row)
            for sample_id in a["sampleIds"]:
                insert(conn, "sampleset", {"analysis_id": a["analysisId"], "sample_id": sample_id})
            for f in a["files"]:
                insert(conn, "file", file_row(f))
                info = {
                    "id": f["objectId"],
                    "id_type": "File",
                    "info": json.dumps(f.get("info") or {}),
                }
                insert(conn, "info", info)
            for initial, updated, at in a["history"]:
                change = {
                    "analysis_id": a["analysisId"],
                    "initial_state": initial,
                    "updated_state": updated,
                    "updated_at": at,
                }
                insert(conn, "analysis_state_change", change)


# -- SONG's HTTP API ----------------------------------------------------------------------
class SongApiDouble:
    """SONG's open endpoints the importer reads, answered from a SongPlatform."""

    def __init__(self, platform: SongPlatform) -> None:
        self.platform = platform
        self.requests: list[str] = []
        self.loop = Loopback(self._handle)
        self.url = self.loop.url

    def close(self) -> None:
        self.loop.close()

    def __enter__(self) -> SongApiDouble:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _answer(self, path: str, query: dict[str, str]) -> tuple[int, Any]:
        p = self.platform
        parts = [unquote(x) for x in path.strip("/").split("/")]
        if parts == ["isAlive"]:
            return 200, True
        if parts == ["studies", "all"]:
            return 200, sorted(p.studies)
        if parts == ["schemas"]:
            ordered = sorted(p.types, key=lambda t: (t["name"], t["version"]))
            rows = [p.type_json(t) for t in ordered]
            offset, limit = int(query.get("offset", 0)), int(query.get("limit", 20))
            return 200, {
                "limit": limit,
                "offset": offset,
                "count": len(rows),
                "resultSet": rows[offset : offset + limit],
            }
        if len(parts) >= 2 and parts[0] == "studies" and parts[1] in p.studies:
            study = parts[1]
            if len(parts) == 2:
                return 200, p.studies[study]
            if parts[2:] == ["all"]:
                return 200, p.study_all(study)
            if parts[2:] == ["analysis", "paginated"]:
                states = set(query.get("analysisStates", "PUBLISHED").split(","))
                ids = sorted(
                    i
                    for i, a in p.analyses.items()
                    if a["studyId"] == study and a["analysisState"] in states
                )
                offset, limit = int(query.get("offset", 0)), int(query.get("limit", 100))
                page = [p.analysis_json(i) for i in ids[offset : offset + limit]]
                return 200, {
                    "analyses": page,
                    "totalAnalyses": len(ids),
                    "currentTotalAnalyses": len(page),
                }
        return 404, {"errorId": "not.found", "message": f"{path} is not served here"}

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        url = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.requests.append(h.path)
        status, body = self._answer(url.path, query)
        raw = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(raw)))
        h.end_headers()
        h.wfile.write(raw)


# -- Score's bucket ---------------------------------------------------------------------------
def partition(base: str, object_id: str, pool: int, key_length: int) -> str:
    """S3BucketNamingService.getBucketName: `<base>.<n>`, n = the id's first K hex digits
    mod the pool; the base itself when the pool is 0."""
    if pool <= 0:
        return base
    return f"{base}.{int(object_id[:key_length], 16) % pool}"


def score_meta(object_id: str, data: bytes, upload_id: str, with_md5: bool = True) -> dict:
    """`data/<id>.meta` as S3UploadService.finalizeUpload writes it (Jackson, nulls kept)."""
    parts = []
    for number, offset in enumerate(range(0, max(len(data), 1), SCORE_PART_SIZE), 1):
        chunk = data[offset : offset + SCORE_PART_SIZE]
        parts.append(
            {
                "partNumber": number,
                "partSize": len(chunk),
                "offset": offset,
                "url": f"https://s3.example.org/{object_id}?partNumber={number}&uploadId=x",
                "md5": None,
                "sourceMd5": hashlib.md5(chunk).hexdigest(),
            }
        )
    return {
        "objectKey": f"data/{object_id}",
        "objectId": object_id,
        "uploadId": upload_id,
        "parts": parts,
        "objectSize": len(data),
        "objectMd5": hashlib.md5(data).hexdigest() if with_md5 else None,
    }


def write_score_bucket(
    s3: Any,
    platform: SongPlatform,
    bucket: str,
    *,
    state_bucket: str | None = None,
    pool: int = 0,
    key_length: int = 0,
    without_meta: dict[str, str] | None = None,
    relocated: tuple[str, ...] = (),
    object_ids: list[str] | None = None,
) -> None:
    """The platform's objects as Score left them. `without_meta`: objects whose .meta is
    missing (uploaded around Score), each with how its MD5 is told: 'md5chksum' (user
    metadata, base64) or '' (not at all). `relocated`: objects written before partitioning
    (base buckets)."""
    state_bucket = state_bucket or bucket
    without_meta = without_meta or {}
    names = {bucket, state_bucket}
    for n in range(pool):
        names |= {f"{bucket}.{n}", f"{state_bucket}.{n}"}
    for name in sorted(names):
        s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=bucket, Key="data/heliograph", Body=b"heliograph")
    for object_id in object_ids if object_ids is not None else list(platform.content):
        data = platform.content[object_id]
        moved = object_id in relocated
        home = bucket if moved else partition(bucket, object_id, pool, key_length)
        state = state_bucket if moved else partition(state_bucket, object_id, pool, key_length)
        extra: dict[str, Any] = {}
        if without_meta.get(object_id) == "md5chksum":
            digest = base64.b64encode(hashlib.md5(data).digest()).decode()
            extra["Metadata"] = {"md5chksum": digest}
        s3.put_object(Bucket=home, Key=f"data/{object_id}", Body=data, **extra)
        if object_id not in without_meta:
            meta = score_meta(object_id, data, str(uuid.uuid4()))
            s3.put_object(Bucket=state, Key=f"data/{object_id}.meta", Body=json.dumps(meta))


# -- the platform the import tests move -------------------------------------------------------
QC_V1 = {
    "type": "object",
    "required": ["experiment"],
    "properties": {"experiment": {"type": "object", "properties": {"tool": {"type": "string"}}}},
}
QC_V2 = {
    "type": "object",
    "required": ["experiment", "workflow"],
    "properties": {
        "experiment": {"type": "object", "properties": {"tool": {"type": "string"}}},
        "workflow": {"type": "object", "required": ["name"]},
    },
}


def example_platform() -> SongPlatform:
    """Two studies; qcMetrics in two versions beside V1_2's legacy types; analyses in all
    three states with their histories (one published, unpublished again; one suppressed);
    open and controlled files with index files and info; a donor no analysis uses."""
    p = SongPlatform()
    p.study("ABC", name="A study", organization="OICR", description="moved", info={"pi": "Ada"})
    p.study("XYZ", name="Another")
    qc1 = ("qcMetrics", p.register("qcMetrics", QC_V1))
    qc2 = ("qcMetrics", p.register("qcMetrics", QC_V2, ["BAM", "BAI", "VCF", "TBI"]))
    seq = ("sequencingRead", 1)
    s1 = p.sample("ABC", "D1", "D1-SP", "D1-S", info={"age": 34})
    s2 = p.sample("ABC", "D2", "D2-SP", "D2-S", designation="Tumour", gender="Male")
    p.sample("ABC", "D3", "D3-SP", "D3-S", gender="Other")  # no analysis uses it
    x1 = p.sample("XYZ", "X1", "X1-SP", "X1-S")
    rng = __import__("random").Random(7)

    def blob(n: int) -> bytes:
        return rng.randbytes(n)

    published = p.submit(
        "ABC",
        seq,
        [s1],
        {"D1.bam": blob(70_000), "D1.bam.bai": blob(900)},
        {"experiment": {"libraryStrategy": "WGS"}, "info": {"batch": 7}},
        file_info={"lane": "L1"},
    )
    p.change(published, "PUBLISHED")
    withdrawn = p.submit(
        "ABC",
        qc1,
        [s2],
        {"D2.vcf.gz": blob(30_000), "D2.vcf.gz.tbi": blob(300)},
        {"experiment": {"tool": "gatk"}},
        access="controlled",
    )
    p.change(withdrawn, "PUBLISHED")
    p.change(withdrawn, "UNPUBLISHED")
    suppressed = p.submit(
        "ABC",
        qc2,
        [s1, s2],
        {"pair.vcf.gz": blob(20_000)},
        {"experiment": {"tool": "mutect"}, "workflow": {"name": "somatic"}},
    )
    p.change(suppressed, "PUBLISHED")
    p.change(suppressed, "SUPPRESSED")
    p.submit("ABC", qc1, [s1], {"draft.bam": blob(5_000)}, {"experiment": {}})  # unpublished
    other = p.submit(
        "XYZ",
        qc2,
        [x1],
        {"X1.bam": blob(50_000), "X1.bam.bai": blob(700)},
        {"experiment": {"tool": "bwa"}, "workflow": {"name": "align"}},
        access="controlled",
    )
    p.change(other, "PUBLISHED")
    return p
