"""audit records cannot be replaced

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 12:00:00

SQLite's `INSERT OR REPLACE` (and `REPLACE INTO`) with an existing id deletes the record
without firing DELETE triggers (unless recursive_triggers is on), so 0003's triggers let a
record be rewritten in place: a BEFORE INSERT trigger now refuses an insert whose id is
taken. PostgreSQL needs none: its only way, `INSERT ... ON CONFLICT DO UPDATE`, fires the
statement-level UPDATE trigger 0003 made.

No hash chain: records are appended by every worker process (of several hosts on
PostgreSQL), so a chain needs one writer order (a lock across processes on each batch), and
it proves nothing unless keyed by a secret the database lacks and anchored outside it;
whoever can rewrite rows can recompute an unkeyed chain. A copy outside the database (the
`audit_log` JSON lines, shipped to append-only storage) is the tamper-evident record.
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

APPEND_ONLY = "audit records are append-only"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE TRIGGER audit_events_no_replace BEFORE INSERT ON audit_events "
            "WHEN EXISTS (SELECT 1 FROM audit_events WHERE id = NEW.id) "
            f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_replace")
