"""An in-memory SQLite database with the server's schema, for unit tests that need a Session:
no file, no server, no migrations to run (the tables are made from their declarations)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, event
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from pyscore.server.tables import Base


@contextmanager
def memory_session() -> Iterator[Session]:
    """A session on a fresh in-memory database (one connection, foreign keys enforced)."""
    engine = create_engine("sqlite://", poolclass=StaticPool)

    @event.listens_for(engine, "connect")
    def _foreign_keys(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_conn.execute("PRAGMA foreign_keys=ON")

    Base.metadata.create_all(engine)
    try:
        with Session(engine, expire_on_commit=False) as session:
            yield session
    finally:
        engine.dispose()
