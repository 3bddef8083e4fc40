"""The File Repository's view of the data: published data files with their donors, samples and
index files, as rows for the portal table and the manifest TSV.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from pyscore.server.tables import Analysis, AnalysisSample, Donor, File, Sample, Specimen


def _people(session: Session, analysis_ids: set[str]) -> dict[str, tuple[list[str], list[str]]]:
    """analysisId → (donor ids, sample ids), each sorted."""
    found: dict[str, tuple[set[str], set[str]]] = defaultdict(lambda: (set(), set()))
    if not analysis_ids:
        return {}
    rows = session.execute(
        select(AnalysisSample.analysis_id, Donor.donor_id, Sample.sample_id)
        .join(Sample, Sample.sample_id == AnalysisSample.sample_id)
        .join(Specimen, Specimen.specimen_id == Sample.specimen_id)
        .join(Donor, Donor.donor_id == Specimen.donor_id)
        .where(AnalysisSample.analysis_id.in_(analysis_ids)))
    for analysis_id, donor_id, sample_id in rows:
        found[analysis_id][0].add(donor_id)
        found[analysis_id][1].add(sample_id)
    return {a: (sorted(d), sorted(s)) for a, (d, s) in found.items()}


def _indexes(session: Session, object_ids: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    if not object_ids:
        return out
    rows = session.execute(select(File.index_for, File.object_id)
                           .where(File.index_for.in_(object_ids)).order_by(File.file_name))
    for data_id, index_id in rows:
        out.setdefault(data_id, index_id)
    return out


def manifest_rows(session: Session, files: list[File], repository_code: str) -> list[dict]:
    """ARGO manifest rows (column name → value) for data files."""
    people = _people(session, {f.analysis_id for f in files})
    indexes = _indexes(session, [f.object_id for f in files])
    rows = []
    for f in files:
        donors, samples = people.get(f.analysis_id, ([], []))
        rows.append({"repository_code": repository_code, "analysis_id": f.analysis_id,
                     "object_id": f.object_id, "file_type": f.file_type, "file_name": f.file_name,
                     "file_size": f.file_size, "md5sum": f.file_md5sum,
                     "index_object_id": indexes.get(f.object_id, ""),
                     "donor_id": "|".join(donors), "sample_id(s)": "|".join(samples),
                     "program_id": f.study_id})
    return rows


def published_data_files(session: Session, study_id: str | None = None) -> list[File]:
    """Data files (not index files) of published analyses, in a stable order."""
    query = (select(File).join(Analysis, Analysis.analysis_id == File.analysis_id)
             .where(Analysis.state == "PUBLISHED", File.index_for.is_(None)))
    if study_id:
        query = query.where(File.study_id == study_id)
    return list(session.scalars(query.order_by(File.study_id, File.file_name, File.object_id)))
