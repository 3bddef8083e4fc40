"""import marks, relocated objects

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 12:00:00

`import_marks`: what `score-server import` took from SONG or Score, with each record's token
(a second run reads again only what changed). `objects.bucket`: the bucket of an object Score
left outside the partition its id maps to.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "import_marks",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("kind", "key"),
    )
    with op.batch_alter_table("objects") as batch:
        batch.add_column(sa.Column("bucket", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("objects") as batch:
        batch.drop_column("bucket")
    op.drop_table("import_marks")
