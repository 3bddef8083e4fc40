"""Database engine and sessions. SQLite by default, PostgreSQL by URL; schema by Alembic."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, overload

from sqlalchemy import JSON, create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def parse_duration(text: str) -> timedelta:
    """'30d', '12h', '45m', '90s' → timedelta."""
    match = re.fullmatch(r"\s*(\d+)\s*([dhms])\s*", text)
    if not match:
        raise ValueError(f"bad duration {text!r}; use e.g. 30d, 12h, 45m or 90s")
    n, unit = int(match[1]), match[2]
    return timedelta(**{{"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}[unit]: n})


def normalize_url(url: str) -> str:
    """Accept plain `postgresql://` URLs and use the psycopg 3 driver for them."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str, pool_size: int = 5) -> Engine:
    """An engine whose pool holds `pool_size` connections (a server sizes it above the
    requests it admits at once, so none ever waits for a connection: see limits.py)."""
    url = normalize_url(url)
    pool = {"pool_size": pool_size, "max_overflow": 4, "pool_timeout": 30}
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **pool
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, **pool)


def _alembic(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    """Bring the schema to the newest revision (idempotent)."""
    from alembic import command

    command.upgrade(_alembic(url), revision)


def schema_revisions(url: str) -> tuple[str | None, str, bool]:
    """The database's schema revision (None: never migrated), this version's newest, and
    whether this version knows the database's (False: a newer version migrated it)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from alembic.util.exc import CommandError
    from sqlalchemy.pool import NullPool

    script = ScriptDirectory.from_config(_alembic(url))
    engine = create_engine(normalize_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
    try:
        known = current is None or script.get_revision(current) is not None
    except CommandError:
        known = False
    return current, script.get_current_head() or "", known


def insert_rows(session: Session, table: Any, rows: list[dict]) -> None:
    """Many rows of a table in, in the session's transaction: by COPY on PostgreSQL (an
    executemany costs a statement per row, SQL text of many VALUES costs its parsing), by
    executemany on SQLite (in-process, fast as it is). Every row has the same keys."""
    if not rows:
        return
    core = getattr(table, "__table__", table)
    conn = session.connection()
    if conn.dialect.name != "postgresql" or conn.dialect.driver != "psycopg":
        conn.execute(core.insert(), rows)
        return
    columns = list(rows[0])
    as_json = {c for c in columns if isinstance(core.c[c].type, JSON)}
    names = ", ".join(f'"{c}"' for c in columns)
    raw: Any = conn.connection.dbapi_connection
    with raw.cursor() as cur, cur.copy(f'COPY "{core.name}" ({names}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row(
                [
                    json.dumps(row[c]) if c in as_json and row[c] is not None else row[c]
                    for c in columns
                ]
            )


def outage(exc: BaseException) -> bool:
    """Whether `exc` says the database is away (a connection refused, dropped or shut down;
    none free in time; SQLite's lock held past its timeout) rather than that it refused a
    statement: the same request may succeed once the database is back."""
    from sqlalchemy import exc as sa

    if isinstance(exc, sa.DBAPIError):
        return exc.connection_invalidated or isinstance(
            exc, (sa.OperationalError, sa.InterfaceError)
        )
    return isinstance(exc, sa.TimeoutError)  # the pool's: no connection within pool_timeout


class Database:
    """An engine and its session factory; one per process."""

    def __init__(self, url: str, pool_size: int = 5) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def local(self) -> bool:
        """SQLite: in this process, reads of a few rows take microseconds and never wait for
        a writer (WAL), so they may run on the event loop rather than hop to a thread."""
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A plain connection for a read of a few rows: no ORM session (whose setup, unit
        of work and commit cost four times the query on the hottest routes)."""
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def streaming(self, batch: int, whole: bool = False) -> Iterator[Connection]:
        """A connection of its own whose results come through a server-side cursor, `batch`
        rows a fetch: an export of a million rows holds a batch in memory. `whole`: the
        answer is read to its end, so PostgreSQL plans for all its rows rather than its first
        10% (cursor_tuple_fraction; /listing of a million objects: hash joins and one sort,
        ~5 s, not a nested loop of two million index lookups, ~25 s)."""
        with self.engine.connect() as conn:
            if whole and conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET LOCAL cursor_tuple_fraction = 1.0")
            yield conn.execution_options(stream_results=True, max_row_buffer=batch)
            conn.rollback()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
