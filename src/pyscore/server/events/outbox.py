"""The outbox: analysis events written in the transaction of the change they describe, each
sink's position in them, and the queries of the delivery loop, `score-server events` and the
operator's endpoints.

Order. An event's `id` is given at insert, in no useful order across transactions (two
transactions on PostgreSQL take ids in one order and may commit in the other). Its `seq`,
the order of delivery, is given just before COMMIT (a `before_commit` hook): one more than the
largest so far, under the database's write lock on SQLite and a transaction-level advisory
lock on PostgreSQL, both held until the commit. So seq order is commit order: a deliverer that
has seen seq N has seen every seq below it, and may keep one number per sink (its position)
instead of a row per event and sink. The lock is taken last in the transaction, so it never
waits for a lock another transaction holds (no deadlock), and only for the moment of a commit.
Changes of one analysis commit in order (each takes the analysis's row), hence its events too.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Optional

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Integer,
    String,
    Table,
    and_,
    bindparam,
    delete,
    event,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from pyscore.server.db import as_utc, utcnow
from pyscore.server.tables import Analysis, Base

CREATE, PUBLISH, UNPUBLISH, SUPPRESS = "CREATE", "PUBLISH", "UNPUBLISH", "SUPPRESS"
ACTIONS = (CREATE, PUBLISH, UNPUBLISH, SUPPRESS)  # SONG's AnalysisActions, all of them
# SONG has no action of its own for an update (PUT/PATCH of an analysis): it sends PUBLISH
# with the analysis's state (service/analysis/AnalysisServiceSender.java); so does pyscore.
UPDATE = PUBLISH

PENDING = "pyscore_events_pending"  # session.info: ids of the events this transaction made
COMMITTED = "pyscore_events_committed"
LOCK_KEY = 0x7079_7363_6F72_6576  # "pyscorev": PostgreSQL's advisory lock of the sequence
MAX_ERROR = 500


class Event(Base):
    """One analysis event: SONG's AnalysisMessage but for songServerId (added when sent, from
    the settings). `sink` None: for every sink; a name: only that one (`events replay`)."""

    __tablename__ = "analysis_events"
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    seq: Mapped[Optional[int]] = mapped_column(BigInteger, unique=True, index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    analysis_id: Mapped[str] = mapped_column(String(64))
    study_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    sink: Mapped[Optional[str]] = mapped_column(String(64))
    analysis: Mapped[dict] = mapped_column(JSON)  # the analysis as SONG renders it, then

    def message(self, song_server_id: str) -> dict[str, Any]:
        """SONG's AnalysisMessage, its fields in SONG's order (kafka/AnalysisMessage.java)."""
        return {
            "analysisId": self.analysis_id,
            "studyId": self.study_id,
            "state": self.state,
            "action": self.action,
            "songServerId": song_server_id,
            "analysis": self.analysis,
        }


class SinkState(Base):
    """A sink's position (the last seq it took), its lease (which process delivers to it, and
    until when unless renewed), and what the operator is told about it."""

    __tablename__ = "event_sinks"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
    owner: Mapped[Optional[str]] = mapped_column(String(128))
    lease_until: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    delivered: Mapped[int] = mapped_column(BigInteger, default=0)
    failures: Mapped[int] = mapped_column(BigInteger, default=0)
    failing_since: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str] = mapped_column(String(MAX_ERROR), default="")
    last_delivered_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))


EVENTS: Table = Event.__table__  # type: ignore[assignment]
SINKS: Table = SinkState.__table__  # type: ignore[assignment]


# -- writing, in the change's transaction ---------------------------------------------------
def record(session: Session, analysis: Analysis, action: str, sink: Optional[str] = None) -> None:
    """Add the event of `action` (one of ACTIONS; UPDATE for a PUT/PATCH) on `analysis` to the
    session's transaction, after the change: it is sent when, and only if, the transaction
    commits. The analysis is rendered now, as SONG sends it: as the change left it."""
    # metadata calls this function; imported here, not at the top, so that importing metadata
    # does not need this module's import to have finished
    from pyscore.server.metadata.analyses import analysis_json

    if action not in ACTIONS:
        raise ValueError(f"unknown analysis action {action!r}; expected one of {ACTIONS}")
    session.flush()
    row = Event(
        at=utcnow(),
        analysis_id=analysis.analysis_id,
        study_id=analysis.study_id,
        action=action,
        state=analysis.state,
        sink=sink,
        analysis=analysis_json(session, analysis),
    )
    session.add(row)
    session.flush()
    session.info.setdefault(PENDING, []).append(row.id)


@event.listens_for(Session, "before_commit")
def _sequence(session: Session) -> None:
    """Number the transaction's events in commit order (see the module's docstring)."""
    ids = session.info.pop(PENDING, None)
    if not ids:
        return
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
    others = EVENTS.alias("others")
    conn.execute(
        EVENTS.update()
        .where(EVENTS.c.id == bindparam("event_id"))
        .values(seq=select(func.coalesce(func.max(others.c.seq), 0) + 1).scalar_subquery()),
        [{"event_id": i} for i in ids],
    )
    session.info[COMMITTED] = True


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    if session.info.pop(COMMITTED, False):
        wake()


@event.listens_for(Session, "after_rollback")
def _rolled_back(session: Session) -> None:
    session.info.pop(PENDING, None)
    session.info.pop(COMMITTED, None)


_waiting: set[threading.Event] = set()


def wake() -> None:
    """Tell this process's deliverers that events were committed (others poll)."""
    for waiter in list(_waiting):
        waiter.set()


def waiter() -> threading.Event:
    """An event set by `wake`, for a deliverer of this process to wait on."""
    flag = threading.Event()
    _waiting.add(flag)
    return flag


def last_seq(session: Session) -> int:
    return int(session.scalar(select(func.max(Event.seq))) or 0)


# -- delivery -------------------------------------------------------------------------------
def _for(sink: str) -> Any:
    return or_(Event.sink.is_(None), Event.sink == sink)


def ensure_sink(session: Session, name: str) -> None:
    """A row for sink `name` if it has none: a new sink starts with the events that come
    after its first start (older ones: `events replay`)."""
    if session.get(SinkState, name) is None:
        session.add(SinkState(name=name, position=last_seq(session)))


def take_lease(
    session: Session, name: str, owner: str, seconds: float, now: Optional[datetime] = None
) -> Optional[int]:
    """Hold (or keep) the lease of sink `name` for `seconds` more: its position if `owner`
    holds it now, None if another process does."""
    now = now or utcnow()
    held = session.execute(
        update(SinkState)
        .where(
            SinkState.name == name,
            or_(
                SinkState.owner == owner,
                SinkState.owner.is_(None),
                SinkState.lease_until.is_(None),
                SinkState.lease_until < now,
            ),
        )
        .values(owner=owner, lease_until=now + timedelta(seconds=seconds))
        .execution_options(synchronize_session=False)
    )
    if held.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return session.scalar(select(SinkState.position).where(SinkState.name == name))


def release(session: Session, name: str, owner: str) -> None:
    session.execute(
        update(SinkState)
        .where(SinkState.name == name, SinkState.owner == owner)
        .values(owner=None, lease_until=None)
        .execution_options(synchronize_session=False)
    )


def pending(session: Session, sink: str, position: int, limit: int) -> list[Event]:
    """The next events for `sink` after `position`, in order."""
    return list(
        session.scalars(
            select(Event).where(Event.seq > position, _for(sink)).order_by(Event.seq).limit(limit)
        )
    )


def delivered(
    session: Session, name: str, owner: str, position: int, count: int, error: str = ""
) -> bool:
    """Note what the last attempt did: `count` events taken up to `position`, and `error`
    when it stopped short. False: the lease was lost meanwhile (another process delivers)."""
    now = utcnow()
    values: dict[str, Any] = {"position": position}
    if count:
        values.update(delivered=SinkState.delivered + count, last_delivered_at=now)
    if error:
        values.update(
            failures=SinkState.failures + 1,
            failing_since=func.coalesce(SinkState.failing_since, now),
            last_error=error[:MAX_ERROR],
        )
    else:
        values.update(failing_since=None, last_error="")
    done = session.execute(
        update(SinkState)
        .where(SinkState.name == name, SinkState.owner == owner)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return done.rowcount == 1  # type: ignore[attr-defined]


# -- what operators see ---------------------------------------------------------------------
@dataclass
class SinkStatus:
    name: str
    position: Optional[int]  # None: the sink has not started yet
    pending: int
    oldest_pending: Optional[datetime]
    delivered: int = 0
    failures: int = 0
    failing_since: Optional[datetime] = None
    last_error: str = ""
    last_delivered_at: Optional[datetime] = None
    owner: Optional[str] = None

    def lag_seconds(self, now: Optional[datetime] = None) -> float:
        if self.oldest_pending is None:
            return 0.0
        return max(0.0, ((now or utcnow()) - self.oldest_pending).total_seconds())

    def report(self) -> dict[str, Any]:
        """What /health/ready says of the sink."""
        return {
            "state": "failing" if self.failing_since else "ok",
            "pending": self.pending,
            "oldest_pending_seconds": round(self.lag_seconds(), 3),
            "failing_since": _iso(self.failing_since),
            "last_error": self.last_error,
            "last_delivered_at": _iso(self.last_delivered_at),
        }


def _iso(at: Optional[datetime]) -> Optional[str]:
    return at.isoformat(timespec="seconds").replace("+00:00", "Z") if at else None


def status(session: Session, names: list[str]) -> list[SinkStatus]:
    """Each sink's position, what waits for it (how many, since when) and its failures."""
    out = []
    for name in names:
        state = session.get(SinkState, name)
        position = state.position if state is not None else last_seq(session)
        count, oldest = (
            session.execute(
                select(func.count(), func.min(Event.at)).where(Event.seq > position, _for(name))
            )
            .one()
            ._tuple()
        )
        found = SinkStatus(name, state.position if state else None, int(count or 0), as_utc(oldest))
        if state is not None:
            found.delivered, found.failures = state.delivered, state.failures
            found.failing_since = as_utc(state.failing_since)
            found.last_error, found.owner = state.last_error, state.owner
            found.last_delivered_at = as_utc(state.last_delivered_at)
            if state.lease_until is None or as_utc(state.lease_until) < utcnow():
                found.owner = None
        out.append(found)
    return out


def replay_action(analysis: Analysis) -> str:
    """The action whose message says what `analysis` is now."""
    if analysis.state == "PUBLISHED":
        return PUBLISH
    if analysis.state == "SUPPRESSED":
        return SUPPRESS
    return UNPUBLISH if analysis.first_published_at else CREATE


def changed_since(session: Session, since: datetime, batch: int = 500) -> Iterator[list[str]]:
    """Ids of the analyses changed at or after `since`, oldest change first, in batches."""
    ids = list(
        session.scalars(
            select(Analysis.analysis_id)
            .where(Analysis.updated_at >= since)
            .order_by(Analysis.updated_at, Analysis.analysis_id)
        )
    )
    for i in range(0, len(ids), batch):
        yield ids[i : i + batch]


def replay(session: Session, analysis_ids: list[str], sink: Optional[str]) -> int:
    """A new event for each analysis, saying what it is now, for `sink` (None: every sink)."""
    for analysis_id in analysis_ids:
        analysis = session.get(Analysis, analysis_id)
        if analysis is not None:
            record(session, analysis, replay_action(analysis), sink)
    return len(analysis_ids)


def prune(session: Session, names: list[str], keep: timedelta) -> int:
    """Forget events older than `keep` that every sink in `names` has taken, never the newest
    (whose seq the next one continues)."""
    newest = last_seq(session)
    positions = [
        s.position for s in session.scalars(select(SinkState).where(SinkState.name.in_(names)))
    ]
    if len(positions) < len(names):  # a sink not started yet: wait for it
        return 0
    upto = min([*positions, newest - 1])
    done = session.execute(
        delete(Event)
        .where(and_(Event.at < utcnow() - keep, Event.seq <= upto))
        .execution_options(synchronize_session=False)
    )
    return int(done.rowcount or 0)  # type: ignore[attr-defined]
