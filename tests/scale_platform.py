"""A generated platform of any size, for the scale bench (bench/scale_million.py) and its
CI-sized test: studies, donors, analyses, files, stored objects and audit records, written in
bulk through the converters an import uses (importing/song.py's rows from SONG's JSON,
importing/score.py's rows from Score's `.meta`), `db.insert_rows` (COPY on PostgreSQL) and the
publish path's `repository.refresh_analyses`; audit records as the trail's writer makes them.

Every record is a function of its index, so nothing is kept in memory between chunks. The
first study is big (BIG_SHARE of the analyses, so SONG's paging reaches deep offsets); the
rest share what is left. Per sample (and donor) ANALYSES_PER_SAMPLE analyses, cycling through
KINDS: two data files each (a tumour and a normal BAM with the tumour's BAI beside them,
VCFs, TSVs, a CRAM and its QC table), so the File Repository shows two files per analysis;
97% of the analyses PUBLISHED.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy.orm import Session

from pyscore.server import repository
from pyscore.server.audit import TABLE as AUDIT
from pyscore.server.audit import Record
from pyscore.server.db import Database, insert_rows
from pyscore.server.importing.records import SongAnalysis
from pyscore.server.importing.score import Listed, row_from_meta
from pyscore.server.importing.song import (
    analysis_rows,
    donor_row,
    sample_row,
    specimen_row,
    study_row,
)
from pyscore.server.tables import (
    Analysis,
    AnalysisSample,
    Donor,
    File,
    Sample,
    Specimen,
    StoredObject,
    Study,
)

NS = uuid.UUID("5c0a1e00-0000-4000-8000-000000000026")
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
BIG = "BIG"
BIG_SHARE = 0.9
OTHER_STUDIES = 5
ANALYSES_PER_SAMPLE = 10
CHUNK = 5000  # analyses per transaction
# (analysis type, [(file name suffix, file type, data type)]); a .bai rides along its .bam
KINDS = [
    (
        "sequencingRead",
        [
            ("tumour.bam", "BAM", "Aligned Reads"),
            ("normal.bam", "BAM", "Aligned Reads"),
            ("tumour.bam.bai", "BAI", "Aligned Reads"),
        ],
    ),
    (
        "variantCall",
        [
            ("snv.vcf.gz", "VCF", "Simple Nucleotide Variation"),
            ("indel.vcf.gz", "VCF", "Simple Nucleotide Variation"),
        ],
    ),
    (
        "variant_calling",
        [("clinical.tsv", "TSV", "Clinical Data"), ("exposure.tsv", "TSV", "Clinical Data")],
    ),
    (
        "sequencing_alignment",
        [("cram", "CRAM", "Aligned Reads"), ("qc.tsv", "TSV", "Quality Control Metrics")],
    ),
]
MOST_FILES = max(len(files) for _, files in KINDS)


def ident(kind: str, i: int) -> str:
    """A stable UUID for the i-th record of a kind (as random-looking as SONG's)."""
    return str(uuid.uuid5(NS, f"{kind}{i}"))


@dataclass(frozen=True)
class Shape:
    """How big the platform is; everything else follows from an index."""

    analyses: int
    audit_records: int = 0
    audit_days: int = 730

    @property
    def data_files(self) -> int:
        return 2 * self.analyses

    @property
    def files(self) -> int:
        """Data and index files."""
        whole, rest = divmod(self.analyses, len(KINDS))
        per_cycle = [len(files) for _, files in KINDS]
        return whole * sum(per_cycle) + sum(per_cycle[:rest])

    @property
    def samples(self) -> int:
        return -(-self.analyses // ANALYSES_PER_SAMPLE)

    @property
    def big_samples(self) -> int:
        return int(self.samples * BIG_SHARE)

    def studies(self) -> list[str]:
        return [BIG, *(f"ST{k}" for k in range(OTHER_STUDIES))]

    def study_of_sample(self, j: int) -> str:
        return BIG if j < self.big_samples else f"ST{(j - self.big_samples) % OTHER_STUDIES}"

    def study_of(self, i: int) -> str:
        return self.study_of_sample(i // ANALYSES_PER_SAMPLE)

    def state_of(self, i: int) -> str:
        k = (i * 7919) % 100  # spread over the studies and over time
        return "SUPPRESSED" if k < 1 else "UNPUBLISHED" if k < 3 else "PUBLISHED"

    def access_of(self, i: int) -> str:
        return "open" if i % 5 == 0 else "controlled"

    def big_analyses(self) -> int:
        return min(self.analyses, self.big_samples * ANALYSES_PER_SAMPLE)


def donor_json(j: int, study: str) -> dict:
    return {
        "donorId": ident("donor", j),
        "studyId": study,
        "submitterDonorId": f"DO{j:07d}",
        "gender": ("Male", "Female", "Other")[j % 3],
    }


def specimen_json(j: int) -> dict:
    return {
        "specimenId": ident("specimen", j),
        "donorId": ident("donor", j),
        "submitterSpecimenId": f"SP{j:07d}",
        "tumourNormalDesignation": "Tumour" if j % 2 else "Normal",
        "specimenTissueSource": "Solid tissue",
        "specimenType": "Primary tumour" if j % 2 else "Normal",
    }


def sample_json(j: int) -> dict:
    return {
        "sampleId": ident("sample", j),
        "specimenId": ident("specimen", j),
        "submitterSampleId": f"SA{j:07d}",
        "matchedNormalSubmitterSampleId": None,
        "sampleType": "Total DNA",
    }


def file_size(i: int, k: int) -> int:
    return 10**6 + (int.from_bytes(hashlib.md5(f"{i}.{k}".encode()).digest()[:5], "big") % 10**11)


def analysis(shape: Shape, i: int) -> SongAnalysis:
    """The i-th analysis as SONG's JSON would give it to an import."""
    study, state = shape.study_of(i), shape.state_of(i)
    analysis_id = ident("analysis", i)
    type_name, files = KINDS[i % len(KINDS)]
    created = T0 + timedelta(seconds=i)
    history: list[tuple[str, str, datetime | None]] = []
    if state != "UNPUBLISHED" or i % 2:
        history.append(("UNPUBLISHED", "PUBLISHED", created + timedelta(minutes=5)))
        if state != "PUBLISHED":
            history.append(("PUBLISHED", state, created + timedelta(days=1)))
    donor = f"DO{i // ANALYSES_PER_SAMPLE:07d}"
    bodies = [
        {
            "objectId": ident("object", MOST_FILES * i + k),
            "studyId": study,
            "analysisId": analysis_id,
            "fileName": f"{donor}.A{i:07d}.{suffix}",
            "fileSize": file_size(i, k),
            "fileMd5sum": hashlib.md5(f"{i}.{k}".encode()).hexdigest(),
            "fileType": file_type,
            "fileAccess": shape.access_of(i),
            "dataType": data_type,
        }
        for k, (suffix, file_type, data_type) in enumerate(files)
    ]
    return SongAnalysis(
        analysis_id=analysis_id,
        study_id=study,
        state=state,
        type_name=type_name,
        type_version=1,
        data={"experiment": {"platform": "ILLUMINA"}, "workflow": {"run": i % 97}},
        created_at=created,
        updated_at=history[-1][2] if history else created,
        history=history,
        sample_ids=[ident("sample", i // ANALYSES_PER_SAMPLE)],
        files=bodies,
    )


def object_row(f: dict, modified: datetime) -> dict:
    """The `objects` row the adoption of Score's `.meta` for this file makes."""
    size = f["file_size"]
    meta = {
        "objectId": f["object_id"],
        "objectSize": size,
        "objectMd5": f["file_md5sum"],
        "uploadId": f["object_id"],
        "parts": [{"partNumber": 1, "offset": 0, "partSize": size, "sourceMd5": None}],
    }
    return {
        "object_id": f["object_id"],
        "bucket": None,
        **row_from_meta(meta, Listed("", size, "", modified)),
    }


def _write_entities(s: Session, shape: Shape) -> None:
    insert_rows(s, Study, [study_row({"studyId": st, "name": st}) for st in shape.studies()])
    for start in range(0, shape.samples, CHUNK * 4):
        js = range(start, min(shape.samples, start + CHUNK * 4))
        insert_rows(
            s,
            Donor,
            [
                donor_row(donor_json(j, shape.study_of_sample(j)), shape.study_of_sample(j))
                for j in js
            ],
        )
        insert_rows(
            s, Specimen, [specimen_row(specimen_json(j), shape.study_of_sample(j)) for j in js]
        )
        insert_rows(s, Sample, [sample_row(sample_json(j), shape.study_of_sample(j)) for j in js])


def _write_analyses(s: Session, shape: Shape, start: int, stop: int) -> None:
    rows, files, links = [], [], []
    for i in range(start, stop):
        record = analysis(shape, i)
        row, file_rows = analysis_rows(record)
        rows.append(row)
        files += file_rows
        links += [{"analysis_id": record.analysis_id, "sample_id": x} for x in record.sample_ids]
    insert_rows(s, Analysis, rows)
    insert_rows(s, File, files)
    insert_rows(s, AnalysisSample, links)
    insert_rows(s, StoredObject, [object_row(f, T0) for f in files])
    repository.refresh_analyses(s, [r["analysis_id"] for r in rows])


def audit_records(shape: Shape, start: int, stop: int) -> Iterator[dict]:
    """Grants and refusals spread evenly over the last `audit_days` days, newest last."""
    now = datetime.now(timezone.utc)
    span = timedelta(days=shape.audit_days).total_seconds()
    studies = shape.studies()
    for n in range(start, stop):
        i = (n * 7919) % max(1, shape.analyses)
        refused = n % 20 == 0
        yield Record(
            at=now - timedelta(seconds=span * (1 - n / shape.audit_records)),
            action="download",
            outcome="refused" if refused else "granted",
            status=403 if refused else 200,
            principal=f"tok{n % 5000:05d}",
            principal_name=f"user{n % 5000}@example.org",
            issuer="",
            study_id=studies[0] if i < shape.big_analyses() else studies[1 + n % OTHER_STUDIES],
            object_id=ident("object", MOST_FILES * i),
            ranges="" if refused else "0-1048575",
            reason="missing scope" if refused else "",
            client="10.0.0.1",
            user_agent="score-client/6.0",
            request_id=f"req-{n}",
        ).row()


def fill(db: Database, shape: Shape, progress: Any = None) -> None:
    """Write the whole platform into an initialised, empty database, a chunk per transaction."""
    with db.session() as s:
        _write_entities(s, shape)
    for start in range(0, shape.analyses, CHUNK):
        with db.session() as s:
            _write_analyses(s, shape, start, min(shape.analyses, start + CHUNK))
        if progress:
            progress("analyses", min(shape.analyses, start + CHUNK), shape.analyses)
    step = CHUNK * 20
    for start in range(0, shape.audit_records, step):
        with db.session() as s:
            insert_rows(
                s, AUDIT, list(audit_records(shape, start, min(shape.audit_records, start + step)))
            )
        if progress:
            progress("audit records", min(shape.audit_records, start + step), shape.audit_records)
    with db.engine.connect() as conn:  # fresh statistics, as autovacuum would make them
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
        else:
            conn.exec_driver_sql("ANALYZE")
