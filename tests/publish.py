"""Test data for a platform: reproducible files, their MD5s, Song analysis payloads for them,
and publishing them in-process (the server may be running), through the metadata service or,
for scale, as rows straight into the database."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session

from pyscore.server import metadata, objects
from pyscore.server.platform import Platform
from pyscore.server.settings import Settings
from pyscore.server.tables import Analysis, AnalysisSample, Donor, File, Sample, Specimen, Study

MiB = 1024 * 1024
FILE_TYPES = {"bam": "BAM", "bai": "BAI", "cram": "CRAM", "crai": "CRAI"}
# (file type, data type, analysis type): the kinds of file a repository lists
KINDS = [
    ("BAM", "Aligned Reads", "sequencingRead"),
    ("CRAM", "Aligned Reads", "sequencing_alignment"),
    ("VCF", "Simple Nucleotide Variation", "variantCall"),
    ("TSV", "Clinical Data", "clinicalData"),
]


def random_file(path: Path, size: int, seed: int = 1) -> Path:
    """Reproducible, incompressible bytes: a random MiB, each copy stamped with its offset."""
    block = random.Random(seed).randbytes(MiB)
    with open(path, "wb") as f:
        for offset in range(0, size, MiB):
            f.write((offset.to_bytes(8, "little") + block[8:])[: min(MiB, size - offset)])
    return path


def md5(data: bytes) -> str:
    """The hex MD5 of some bytes."""
    return hashlib.md5(data).hexdigest()


def file_md5(path: Path) -> str:
    """The hex MD5 of a file, read in pieces."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(8 * MiB):
            h.update(chunk)
    return h.hexdigest()


def song_payload(
    study: str,
    files: Mapping[str, bytes] | Iterable[Path],
    *,
    donor: str = "D1",
    access: str = "controlled",
    file_type: str | None = None,
    experiment: dict | None = None,
    **extra,
) -> dict:
    """A sequencingRead analysis for Song's POST /submit/{study}: one sample (`{donor}-S`, of
    specimen `{donor}-SP`) of one donor, and these files, given as name -> bytes or as paths
    of files on disk. Every file is of `file_type`, or else of the type its extension names
    (FILE_TYPES). `experiment` replaces the plain WGS one; `extra` adds top-level fields
    (info, ...)."""
    if isinstance(files, Mapping):
        entries = [(name, len(data), md5(data)) for name, data in files.items()]
    else:
        entries = [(f.name, f.stat().st_size, file_md5(f)) for f in files]
    return {
        "studyId": study,
        "analysisType": {"name": "sequencingRead"},
        "experiment": experiment or {"libraryStrategy": "WGS"},
        "samples": [
            {
                "submitterSampleId": f"{donor}-S",
                "sampleType": "Total DNA",
                "matchedNormalSubmitterSampleId": None,
                "specimen": {
                    "submitterSpecimenId": f"{donor}-SP",
                    "specimenTissueSource": "Blood derived",
                    "tumourNormalDesignation": "Normal",
                    "specimenType": "Normal",
                },
                "donor": {"submitterDonorId": donor, "gender": "Other"},
            }
        ],
        "files": [
            {
                "fileName": name,
                "fileSize": size,
                "fileMd5sum": checksum,
                "fileType": file_type or FILE_TYPES[name.rsplit(".", 1)[-1]],
                "fileAccess": access,
                "dataType": "Aligned Reads",
            }
            for name, size, checksum in entries
        ],
        **extra,
    }


def publish(
    data_dir: Path,
    files: list[Path],
    study: str = "BIG",
    access: str = "controlled",
    file_type: str = "BAM",
) -> list[str]:
    """Submit one analysis with these files, store them, publish; return their object ids."""
    return publish_many(data_dir, [(study, files)], access, file_type)[0][1]


# -- rows straight into the database (no API, no validation, no stored bytes), for scale ----
def add_donors(
    session: Session, studies: list[str], donors: list[tuple[str, str, str, str]]
) -> None:
    """These studies, then one donor -> specimen -> sample chain per (study, donor, specimen,
    sample) of ids, each id also its submitter id."""
    session.add_all(Study(study_id=st, name=st) for st in studies)
    session.flush()
    # one table at a time: the tables have foreign keys but no ORM relationships
    session.add_all(
        Donor(donor_id=donor, study_id=st, submitter_donor_id=donor, gender="Other")
        for st, donor, _, _ in donors
    )
    session.flush()
    session.add_all(
        Specimen(
            specimen_id=specimen,
            donor_id=donor,
            study_id=st,
            submitter_specimen_id=specimen,
            fields={},
        )
        for st, donor, specimen, _ in donors
    )
    session.flush()
    session.add_all(
        Sample(
            sample_id=sample,
            specimen_id=specimen,
            study_id=st,
            submitter_sample_id=sample,
            fields={},
        )
        for st, _, specimen, sample in donors
    )
    session.flush()


def add_published_analysis(
    session: Session,
    analysis_id: str,
    study: str,
    sample: str,
    analysis_type: str,
    at: datetime,
    files: list[dict],
) -> None:
    """A PUBLISHED analysis (created, updated and published `at`) of one sample, and its
    files: File columns each (object_id, file_name, file_size, file_type, file_access,
    data_type), with an all-zero MD5."""
    session.add(
        Analysis(
            analysis_id=analysis_id,
            study_id=study,
            type_name=analysis_type,
            type_version=1,
            state="PUBLISHED",
            payload={},
            state_history=[],
            created_at=at,
            updated_at=at,
            published_at=at,
        )
    )
    session.flush()
    session.add(AnalysisSample(analysis_id=analysis_id, sample_id=sample))
    session.add_all(
        File(analysis_id=analysis_id, study_id=study, file_md5sum="0" * 32, info={}, **f)
        for f in files
    )


def publish_many(
    data_dir: Path,
    analyses: list[tuple[str, list[Path]]],
    access: str = "controlled",
    file_type: str | None = None,
) -> list[tuple[str, list[str]]]:
    """Publish each (study, files) as one analysis, all in one opening of the platform; each
    analysis's id and object ids (in the order of its files)."""
    platform = Platform.open(Settings.load(data_dir))
    out = []
    with platform.db.session() as s:
        for study in sorted({st for st, _ in analyses}):
            if s.get(Study, study) is None:
                metadata.create_study(s, study, {"name": study})
        for study, files in analyses:
            payload = song_payload(
                study, files, donor=f"{study}-D1", access=access, file_type=file_type
            )
            analysis_id = metadata.submit(s, study, payload, allow_duplicates=True)
            rows = {r.file_name: r for r in metadata.analysis_files(s, analysis_id)}
            for f in files:
                objects.ingest(
                    s, platform.store, rows[f.name].object_id, f, platform.settings.part_size
                )
            s.flush()
            metadata.change_state(s, study, analysis_id, "publish")
            out.append((analysis_id, [rows[f.name].object_id for f in files]))
    return out
