"""indexes and counts for a million files

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 17:00:00

What listing and searching a million files needs (issue 26):
- `ix_analyses_study_state_created` (study, state, created_at, analysis_id): SONG's pages of a
  study's analyses are an ordered walk of the index, however deep the offset (was study,
  state: a sort of the whole study per page);
- `ix_files_study_object` (study, object_id): `/entities?projectCode=` pages by object id;
- `ix_audit_events_study_at` (study, at): `score-server audit --study S --since T`;
- `repository_counts` and `repository_donor_counts`: the File Repository's totals and facet
  counts as sums over a few hundred rows (per combination of facets; per donor), kept in step
  with `repository_entries` by the code that keeps that in step; filled here from it.
The single-column indexes the composite ones begin with are dropped. On a database of
10,000,000 audit records the new audit index takes a minute or two to build.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

REPLACED = [  # (table, old index, old columns, new index, new columns)
    (
        "analyses",
        "ix_analyses_study_state",
        ["study_id", "state"],
        "ix_analyses_study_state_created",
        ["study_id", "state", "created_at", "analysis_id"],
    ),
    (
        "files",
        "ix_files_study_id",
        ["study_id"],
        "ix_files_study_object",
        ["study_id", "object_id"],
    ),
    (
        "audit_events",
        "ix_audit_events_study_id",
        ["study_id"],
        "ix_audit_events_study_at",
        ["study_id", "at"],
    ),
]


def upgrade() -> None:
    for table, old, _, new, columns in REPLACED:
        op.create_index(new, table, columns)
        op.drop_index(old, table_name=table)
    op.create_table(
        "repository_counts",
        sa.Column("study_id", sa.String(length=64), nullable=False),
        sa.Column("analysis_type", sa.String(length=128), nullable=False),
        sa.Column("file_type", sa.String(length=64), nullable=False),
        sa.Column("data_type", sa.String(length=128), nullable=False),
        sa.Column("access", sa.String(length=16), nullable=False),
        sa.Column("files", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("study_id", "analysis_type", "file_type", "data_type", "access"),
    )
    op.create_table(
        "repository_donor_counts",
        sa.Column("donor_id", sa.String(length=64), nullable=False),
        sa.Column("study_id", sa.String(length=64), nullable=False),
        sa.Column("files", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("donor_id", "study_id"),
    )
    combination = (
        "study_id, analysis_type, COALESCE(file_type, ''), COALESCE(data_type, ''), access"
    )
    op.execute(
        "INSERT INTO repository_counts "
        "(study_id, analysis_type, file_type, data_type, access, files, bytes) "
        f"SELECT {combination}, COUNT(*), SUM(size) FROM repository_entries "
        f"GROUP BY {combination}"
    )
    op.execute(
        "INSERT INTO repository_donor_counts (donor_id, study_id, files) "
        "SELECT d.donor_id, e.study_id, COUNT(*) FROM repository_donors d "
        "JOIN repository_entries e ON e.object_id = d.object_id GROUP BY d.donor_id, e.study_id"
    )


def downgrade() -> None:
    op.drop_table("repository_donor_counts")
    op.drop_table("repository_counts")
    for table, old, columns, new, _ in REPLACED:
        op.create_index(old, table, columns)
        op.drop_index(new, table_name=table)
