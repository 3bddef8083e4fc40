"""The relational schema: Song's entities, Score's objects and uploads, and tokens.

Portable SQL only (SQLite and PostgreSQL); migrations live in `migrations/`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Optional

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Study(Base):
    __tablename__ = "studies"
    study_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[Optional[str]] = mapped_column(String(255))
    organization: Mapped[Optional[str]] = mapped_column(String(255))
    description: Mapped[Optional[str]] = mapped_column(Text)
    info: Mapped[dict] = mapped_column(JSON, default=dict)


class AnalysisType(Base):
    __tablename__ = "analysis_types"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    schema: Mapped[dict] = mapped_column(JSON)
    options: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Donor(Base):
    __tablename__ = "donors"
    __table_args__ = (UniqueConstraint("study_id", "submitter_donor_id"),)
    donor_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.study_id"))
    submitter_donor_id: Mapped[str] = mapped_column(String(255))
    gender: Mapped[Optional[str]] = mapped_column(String(32))
    info: Mapped[dict] = mapped_column(JSON, default=dict)


class Specimen(Base):
    __tablename__ = "specimens"
    __table_args__ = (UniqueConstraint("study_id", "submitter_specimen_id"),)
    specimen_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    donor_id: Mapped[str] = mapped_column(ForeignKey("donors.donor_id"))
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.study_id"))
    submitter_specimen_id: Mapped[str] = mapped_column(String(255))
    fields: Mapped[dict] = mapped_column(JSON, default=dict)


class Sample(Base):
    __tablename__ = "samples"
    __table_args__ = (UniqueConstraint("study_id", "submitter_sample_id"),)
    sample_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    specimen_id: Mapped[str] = mapped_column(ForeignKey("specimens.specimen_id"))
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.study_id"))
    submitter_sample_id: Mapped[str] = mapped_column(String(255))
    fields: Mapped[dict] = mapped_column(JSON, default=dict)


class Analysis(Base):
    __tablename__ = "analyses"
    # SONG's pages of a study's analyses in one state walk it in order, however deep
    __table_args__ = (
        Index("ix_analyses_study_state_created", "study_id", "state", "created_at", "analysis_id"),
    )
    analysis_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.study_id"))
    type_name: Mapped[str] = mapped_column(String(128))
    type_version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict] = mapped_column(JSON)  # the type-specific fields, as submitted
    state_history: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    first_published_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    published_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))


class AnalysisSample(Base):
    __tablename__ = "analysis_samples"
    analysis_id: Mapped[str] = mapped_column(ForeignKey("analyses.analysis_id"), primary_key=True)
    sample_id: Mapped[str] = mapped_column(ForeignKey("samples.sample_id"), primary_key=True)


class File(Base):
    __tablename__ = "files"
    # /entities?projectCode= pages by object id
    __table_args__ = (Index("ix_files_study_object", "study_id", "object_id"),)
    object_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    analysis_id: Mapped[str] = mapped_column(ForeignKey("analyses.analysis_id"), index=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.study_id"))
    file_name: Mapped[str] = mapped_column(String(512), index=True)
    file_size: Mapped[int] = mapped_column(BigInteger)
    file_md5sum: Mapped[str] = mapped_column(String(32))
    file_type: Mapped[Optional[str]] = mapped_column(String(64))
    file_access: Mapped[str] = mapped_column(String(16))
    data_type: Mapped[Optional[str]] = mapped_column(String(128))
    info: Mapped[dict] = mapped_column(JSON, default=dict)
    # For an index file (.bai .crai .tbi .csi): the data file it indexes, in the same analysis.
    index_for: Mapped[Optional[str]] = mapped_column(String(64), index=True)


class StoredObject(Base):
    """A completed object in the store: Score's `data/<id>.meta`."""

    __tablename__ = "objects"
    object_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    md5: Mapped[Optional[str]] = mapped_column(String(32))
    part_size: Mapped[int] = mapped_column(BigInteger)
    part_md5s: Mapped[list] = mapped_column(JSON, default=list)
    upload_id: Mapped[str] = mapped_column(String(128))
    last_modified: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # An object Score left outside the bucket its id maps to (written before partitioning:
    # Score's "relocated"): that bucket's name; None: where the store's layout puts it
    bucket: Mapped[Optional[str]] = mapped_column(String(255))


class Upload(Base):
    """A multipart upload in progress: Score's `upload/<id>_<uploadId>/.meta`."""

    __tablename__ = "uploads"
    upload_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    object_id: Mapped[str] = mapped_column(String(64), unique=True)
    file_size: Mapped[int] = mapped_column(BigInteger)
    part_size: Mapped[int] = mapped_column(BigInteger)
    md5: Mapped[Optional[str]] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class UploadPart(Base):
    __tablename__ = "upload_parts"
    upload_id: Mapped[str] = mapped_column(
        ForeignKey("uploads.upload_id", ondelete="CASCADE"), primary_key=True
    )
    part_number: Mapped[int] = mapped_column(Integer, primary_key=True)
    md5: Mapped[str] = mapped_column(String(32))
    etag: Mapped[str] = mapped_column(String(128))


class Token(Base):
    __tablename__ = "tokens"
    token_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user: Mapped[str] = mapped_column(String(255))
    scopes: Mapped[list] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))


class Setting(Base):
    """Shared secrets and flags every server process must agree on."""

    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class RepositoryEntry(Base):
    """One published data file as the File Repository shows it: a denormalised row kept in
    step with publish/unpublish/suppress, so filtering 100,000 files is one indexed query."""

    __tablename__ = "repository_entries"
    # a study's files in the default order (file name, then id): its first page is the
    # index's first rows
    __table_args__ = (
        Index("ix_repository_entries_study_name", "study_id", "file_name", "object_id"),
    )
    object_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_id: Mapped[str] = mapped_column(String(64))
    analysis_id: Mapped[str] = mapped_column(String(64), index=True)
    analysis_type: Mapped[str] = mapped_column(String(128), index=True)
    file_name: Mapped[str] = mapped_column(String(512), index=True)
    file_type: Mapped[Optional[str]] = mapped_column(String(64), index=True)
    data_type: Mapped[Optional[str]] = mapped_column(String(128), index=True)
    access: Mapped[str] = mapped_column(String(16), index=True)
    size: Mapped[int] = mapped_column(BigInteger, index=True)
    md5: Mapped[str] = mapped_column(String(32))
    index_object_id: Mapped[Optional[str]] = mapped_column(String(64))
    donors: Mapped[str] = mapped_column(String(1024))  # "DO1|DO2", as the manifest shows
    samples: Mapped[str] = mapped_column(String(1024))
    published_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    # lower-cased name, ids, donors and samples: free-text search is one LIKE on one column
    # (on PostgreSQL with pg_trgm, a trigram index: migration 0008)
    search_text: Mapped[str] = mapped_column(Text)


class RepositoryDonor(Base):
    __tablename__ = "repository_donors"
    object_id: Mapped[str] = mapped_column(
        ForeignKey("repository_entries.object_id", ondelete="CASCADE"), primary_key=True
    )
    donor_id: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class FacetCombination:
    """A combination of the File Repository's column facets ('' for none): part of the key of
    the tables counting files per combination."""

    study_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    analysis_type: Mapped[str] = mapped_column(String(128), primary_key=True)
    file_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    data_type: Mapped[str] = mapped_column(String(128), primary_key=True)
    access: Mapped[str] = mapped_column(String(16), primary_key=True)
    files: Mapped[int] = mapped_column(BigInteger)


class RepositoryCount(FacetCombination, Base):
    """How many files (and bytes) the File Repository shows of each combination of its
    column facets, kept in step with `repository_entries`: totals and facet counts of any
    selection without a donor or text are sums over a few hundred rows, not counts over a
    million."""

    __tablename__ = "repository_counts"
    bytes: Mapped[int] = mapped_column(BigInteger)


class RepositoryDonorCount(Base):
    """Files the File Repository shows per donor (and study), kept in step with
    `repository_donors`: the donor facet of the whole repository or of some studies."""

    __tablename__ = "repository_donor_counts"
    donor_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    files: Mapped[int] = mapped_column(BigInteger)


class RepositoryDonorCube(FacetCombination, Base):
    """Files the File Repository shows per donor and combination of its column facets, kept
    in step with `repository_donors`: the donor facet under any column facet's filter is a
    sum over these rows (a few per donor), not a join of a million files."""

    __tablename__ = "repository_donor_cube"
    donor_id: Mapped[str] = mapped_column(String(64), primary_key=True)


class ImportMark(Base):
    """A record `score-server import` took from SONG or Score, with the token its source gave
    it: a record whose token has not changed is not read again (second runs, deltas)."""

    __tablename__ = "import_marks"
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    token: Mapped[str] = mapped_column(String(64))
