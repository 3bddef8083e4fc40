"""An in-memory SQLite database with the server's schema, for unit tests that need a Session:
no file, no server, no migrations to run (the tables are made once from their declarations,
then each session gets a fresh copy)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from pyscore.server.tables import Base

_TEMPLATE: list[sqlite3.Connection] = []


def _template() -> sqlite3.Connection:
    if not _TEMPLATE:
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        engine = create_engine("sqlite://", creator=lambda: conn, poolclass=StaticPool)
        Base.metadata.create_all(engine)
        _TEMPLATE.append(conn)
    return _TEMPLATE[0]


@contextmanager
def memory_session() -> Iterator[Session]:
    """A session on a fresh in-memory database (one connection, foreign keys enforced)."""
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    _template().backup(conn)
    conn.execute("PRAGMA foreign_keys=ON")
    engine = create_engine("sqlite://", creator=lambda: conn, poolclass=StaticPool)
    try:
        with Session(engine, expire_on_commit=False) as session:
            yield session
    finally:
        engine.dispose()
        conn.close()
