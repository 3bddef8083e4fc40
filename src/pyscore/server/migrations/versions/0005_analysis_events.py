"""analysis events: the outbox and each sink's position

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 15:00:00

analysis_events holds SONG's AnalysisMessage of each change of an analysis, written in the
change's transaction; `seq` (given at commit, see events/outbox.py) is the order of delivery.
event_sinks holds each sink's position in it, its lease and its failures.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "analysis_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("analysis_id", sa.String(length=64), nullable=False),
        sa.Column("study_id", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("sink", sa.String(length=64), nullable=True),
        sa.Column("analysis", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_analysis_events_seq", "analysis_events", ["seq"], unique=True)
    op.create_index("ix_analysis_events_at", "analysis_events", ["at"])
    op.create_table(
        "event_sinks",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.BigInteger(), nullable=False),
        sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=False),
        sa.Column("last_delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("event_sinks")
    op.drop_index("ix_analysis_events_at", "analysis_events")
    op.drop_index("ix_analysis_events_seq", "analysis_events")
    op.drop_table("analysis_events")
