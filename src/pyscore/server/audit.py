"""The audit trail: who was granted or refused which controlled data, when, and from where.

What is recorded (one row per decision, append-only):
- every grant of controlled data: download specifications (the byte ranges of their part
  URLs), whole-object URLs, htsget tickets, DRS access URLs, the portal's downloads and
  `/listing` (what a mount sees) when it lists controlled files;
- every grant to write: upload, publish, unpublish, suppress, submit, file updates;
- every refusal, of anything: a missing scope (403), and a missing, unknown, expired or
  revoked token (401) on any route.
Grants of open files are not recorded: anyone may read them without a token, so the trail
would fill with public traffic and say nothing a data access committee asks about.

How: the access decision (`auth.authorize`) notes each decision in the request's `Context`
(a context variable the HTTP edge opens per request); the route adds the byte ranges it
hands out (`ranges`); when the answer is sent, `finish` turns the notes into `Record`s with
the answer's status (a grant whose answer was an error is recorded as `error`: nothing was
handed out) and a `Writer` thread appends them to the database in batches (those made
within `interval`: a few transactions a second, however busy), so a request never waits for
a write (nor for a database write lock another process holds). A clean stop writes
everything queued; a process killed with SIGKILL loses at most the last `interval`.

Nothing here imports FastAPI: the edge (web/logging.py) opens and finishes contexts.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import BigInteger, DateTime, Index, Integer, String, Table, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from pyscore.server.db import as_utc, parse_duration, utcnow
from pyscore.server.tables import Base
from pyscore.wire.tsv import printable
from pyscore.wire.tsv import row as tsv_row

GRANTED, REFUSED, ERROR = "granted", "refused", "error"
MAX_ID = 64
# what a study or object id may be: UUIDs, Song's ids, the study ids a scope can name
ID = re.compile(rf"[A-Za-z0-9._\-]{{1,{MAX_ID}}}")
ANONYMOUS = "anonymous"  # no token, or none that was valid
MAX_RANGES_TEXT = 4000  # a 10,000-part spec lists its first ranges and how many more


class AuditEvent(Base):
    """One decision about data. The migration adds triggers that refuse UPDATE and DELETE."""

    __tablename__ = "audit_events"
    # `score-server audit --study S --since T`: a study's records of a time span
    __table_args__ = (Index("ix_audit_events_study_at", "study_id", "at"),)
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    action: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    status: Mapped[int] = mapped_column(Integer)
    # our token's id, or the subject an identity provider vouches for; never a secret
    principal: Mapped[str] = mapped_column(String(255), index=True)
    principal_name: Mapped[str] = mapped_column(String(255))
    issuer: Mapped[str] = mapped_column(String(255))  # "" for this server's own tokens
    study_id: Mapped[Optional[str]] = mapped_column(String(64))
    object_id: Mapped[Optional[str]] = mapped_column(String(64), index=True)
    ranges: Mapped[str] = mapped_column(String(MAX_RANGES_TEXT + 64))
    reason: Mapped[str] = mapped_column(String(512))
    client: Mapped[str] = mapped_column(String(64))
    user_agent: Mapped[str] = mapped_column(String(255))
    request_id: Mapped[str] = mapped_column(String(128))


TABLE: Table = AuditEvent.__table__  # type: ignore[assignment]

COLUMNS = (
    "at",
    "outcome",
    "action",
    "status",
    "principal",
    "principal_name",
    "issuer",
    "study_id",
    "object_id",
    "ranges",
    "reason",
    "client",
    "user_agent",
    "request_id",
)


@dataclass
class Record:
    at: datetime
    action: str
    outcome: str
    status: int
    principal: str
    principal_name: str
    issuer: str
    study_id: Optional[str]
    object_id: Optional[str]
    ranges: str
    reason: str
    client: str
    user_agent: str
    request_id: str

    def row(self) -> dict[str, Any]:
        # by hand: dataclasses.asdict deep-copies every value (most of a batch's cost)
        return {c: getattr(self, c) for c in COLUMNS}

    def json(self) -> str:
        body = self.row()
        body["at"] = iso(self.at)
        return json.dumps(body, separators=(",", ":"))


def iso(at: datetime) -> str:
    return (as_utc(at) or at).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- the request being served -------------------------------------------------------------
@dataclass
class Decision:
    action: str
    granted: bool
    study_id: Optional[str]
    object_id: Optional[str]
    reason: str = ""
    code: str = ""  # why refused, for metrics: no_token, invalid_token, missing_scope...
    ranges: list = field(default_factory=list)  # [(offset, length)]
    # the answer for this object, when it is not the request's (one item of a batch)
    status: Optional[int] = None


@dataclass
class Who:
    """A principal as the trail names it ("": not asked, as on routes open to all)."""

    id: str = ""
    name: str = ""
    issuer: str = ""


@dataclass
class Context:
    request_id: str
    client: str
    user_agent: str
    method: str = ""
    who: Who = field(default_factory=Who)
    decisions: list[Decision] = field(default_factory=list)
    # a token refused before any decision (401), noted so the refusal is recorded
    refused_token: Optional[Decision] = None


_current: contextvars.ContextVar[Optional[Context]] = contextvars.ContextVar(
    "pyscore_audit_context", default=None
)


def begin(request_id: str, client: str, user_agent: str, method: str = "") -> Context:
    """Open the context of one request (the HTTP edge does, before any route)."""
    ctx = Context(request_id, client[:64], user_agent[:255], method)
    _current.set(ctx)
    return ctx


def current() -> Optional[Context]:
    return _current.get()


def identified(principal_id: str, name: str = "", issuer: str = "") -> None:
    """Who the request's bearer is (auth.principal_for says so once it knows)."""
    ctx = _current.get()
    if ctx is not None:
        ctx.who = Who(principal_id, name, issuer)


def token_refused(code: str, reason: str) -> None:
    """A bearer was refused (401) before any access decision."""
    ctx = _current.get()
    if ctx is not None:
        ctx.refused_token = Decision("", False, None, None, reason, code)


def decided(
    action: str,
    granted: bool,
    study_id: Optional[str] = None,
    object_id: Optional[str] = None,
    reason: str = "",
    code: str = "",
) -> None:
    ctx = _current.get()
    if ctx is not None:
        ctx.decisions.append(Decision(action, granted, study_id, object_id, reason, code))


def ranges(pairs: list[tuple[int, int]]) -> None:
    """The byte ranges (offset, length) handed out under the request's last grant."""
    ctx = _current.get()
    if ctx is not None and ctx.decisions and ctx.decisions[-1].granted:
        ctx.decisions[-1].ranges.extend(pairs)


def failed(object_id: str, status: int) -> None:
    """The answer about `object_id` was `status` though the request's is not (an item of a
    batch): its refusal is recorded with it, its grant as an error (nothing handed out)."""
    ctx = _current.get()
    if ctx is not None and ctx.decisions:
        last = ctx.decisions[-1]
        if last.object_id == object_id and last.status is None:
            last.status = status


def ranges_text(pairs: list[tuple[int, int]]) -> str:
    """`first-last` byte positions, inclusive, as HTTP writes ranges; merged where adjacent."""
    merged: list[list[int]] = []
    for offset, length in sorted(pairs):
        if length <= 0:
            continue
        if merged and offset <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], offset + length - 1)
        else:
            merged.append([offset, offset + length - 1])
    text = ",".join(f"{a}-{b}" for a, b in merged)
    if len(text) > MAX_RANGES_TEXT:
        cut = text.rfind(",", 0, MAX_RANGES_TEXT)
        text = f"{text[:cut]},...({len(merged)} ranges)"
    return text


def _token_refusal(ctx: Context, status: int) -> Optional[Decision]:
    """The refused token, when it is the request's refusal: nothing else was decided and the
    answer is 401 or 403."""
    if not ctx.decisions and status in (401, 403):
        return ctx.refused_token
    return None


def refusal_codes(ctx: Context, status: int) -> list[str]:
    """Why the request was refused, one code a refusal (metrics count them by reason)."""
    codes = [d.code for d in ctx.decisions if not d.granted]
    token = _token_refusal(ctx, status)
    return [*codes, token.code] if token is not None else codes


def finish(ctx: Context, status: int, route: str, path_params: dict[str, Any]) -> list[Record]:
    """The records of a request whose answer had `status`; `route` (e.g.
    `GET /download/{object_id}`) names the action of a token refused before any decision."""
    decisions = list(ctx.decisions)
    refused = _token_refusal(ctx, status)
    if refused is not None:
        refused.action = route or ctx.method
        refused.study_id = path_params.get("study_id")
        refused.object_id = path_params.get("object_id")
        decisions.append(refused)
    now = utcnow()
    records = []
    for d in decisions:
        _only_ids(d)
        answered = d.status or status
        outcome = (GRANTED if answered < 400 else ERROR) if d.granted else REFUSED
        records.append(
            Record(
                at=now,
                action=d.action[:64],
                outcome=outcome,
                status=answered,
                principal=(ctx.who.id or ANONYMOUS)[:255],
                principal_name=ctx.who.name[:255],
                issuer=ctx.who.issuer[:255],
                study_id=d.study_id,
                object_id=d.object_id,
                ranges=ranges_text(d.ranges) if outcome == GRANTED else "",
                reason=d.reason[:512],
                client=ctx.client,
                user_agent=ctx.user_agent,
                request_id=ctx.request_id,
            )
        )
    return records


def _only_ids(d: Decision) -> None:
    """Keep a decision's study and object ids only where they look like ids (an operator
    filters by them, and an anonymous caller chooses what a refused path holds): anything
    else is said in the reason, escaped and cut short."""
    for name in ("study_id", "object_id"):
        value = getattr(d, name)
        if value is None:
            continue
        text = str(value)
        if ID.fullmatch(text):
            setattr(d, name, text)
            continue
        shown = printable(text[:MAX_ID]) + ("..." if len(text) > MAX_ID else "")
        d.reason = f"{d.reason} ({name} not recorded, not an id: '{shown}')".lstrip()
        setattr(d, name, None)


# -- writing ------------------------------------------------------------------------------
class Writer:
    """Appends records in the background: `put` never waits. A thread (started by the first
    record) writes what is queued every `interval` seconds, at most `batch` rows per
    transaction; while the database refuses, it keeps the batch and retries with a growing
    pause. Beyond `capacity` queued records, new ones are dropped and counted (`dropped`),
    and said on stderr: the operator must know the trail has a gap. `sink`, when set, gets
    each record as a JSON line too ("-" for stdout, else a file path, appended to)."""

    def __init__(
        self,
        sessions: Any,
        sink: str = "",
        interval: float = 0.2,
        batch: int = 500,
        capacity: int = 100_000,
        on_drop: Optional[Any] = None,
    ) -> None:
        self.sessions = sessions  # a callable returning a context manager of a Session
        self.on_drop = on_drop  # called once per record dropped (a metric counts them)
        self.sink = sink
        self.interval, self.batch = interval, batch
        self.queue: queue.Queue[Optional[Record]] = queue.Queue(capacity)
        self.dropped = 0
        self.written = 0
        self.failures = 0
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0  # put and not yet written
        self._closed = False
        self._deadline = 0.0  # when closing: give up retrying after this
        self._stopping = threading.Event()

    def put(self, records: list[Record]) -> None:
        if not records or self._closed:
            return
        self._start()
        for record in records:
            try:
                self.queue.put_nowait(record)
            except queue.Full:
                self.dropped += 1
                if self.on_drop is not None:
                    self.on_drop()
                if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                    print(
                        f"pyscore audit: {self.dropped} record(s) dropped: the database has "
                        "not taken them in time (queue full)",
                        file=sys.stderr,
                        flush=True,
                    )
                continue
            with self._lock:
                self._pending += 1

    def _start(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="audit-writer", daemon=True
                    )
                    self._thread.start()

    def _take(self) -> tuple[list[Record], bool]:
        """The next batch: once a first record comes, what else arrives within `interval`
        (or until `batch` are queued), so a busy server writes a few large transactions a
        second, not one per request; and whether the writer was asked to stop."""
        items: list[Record] = []
        first = self.queue.get()  # blocks until a record, or close()'s None
        if first is None:
            return items, True
        items.append(first)
        if self.queue.qsize() < self.batch:
            self._stopping.wait(self.interval)  # close() cuts the wait short
        while len(items) < self.batch:
            try:
                more = self.queue.get_nowait()
            except queue.Empty:
                break
            if more is None:
                return items, True
            items.append(more)
        return items, False

    def _run(self) -> None:
        pause = self.interval
        carried: list[Record] = []
        while True:
            batch, stop = self._take() if not carried else (carried, False)
            if batch:
                try:
                    self._write(batch)
                except Exception as exc:
                    self.failures += 1
                    if self.failures in (1, 10) or self.failures % 100 == 0:
                        print(
                            f"pyscore audit: cannot write {len(batch)} record(s) yet "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                            "retrying",
                            file=sys.stderr,
                            flush=True,
                        )
                    carried = batch
                    if self._closed and time.monotonic() > self._deadline:
                        return  # stopping, and the database is still away: give up
                    time.sleep(pause)
                    pause = min(pause * 2, 5.0)
                    continue
                carried, pause = [], self.interval
                with self._lock:
                    self._pending -= len(batch)
                    self.written += len(batch)
                    self._idle.notify_all()
            if stop:
                return

    def _write(self, batch: list[Record]) -> None:
        with self.sessions() as session:  # Core's executemany: no ORM work per row
            session.connection().execute(TABLE.insert(), [r.row() for r in batch])
        if self.sink:
            text = "".join(r.json() + "\n" for r in batch).encode()
            if self.sink == "-":
                sys.stdout.buffer.write(text)
                sys.stdout.flush()
            else:
                fd = os.open(self.sink, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, text)  # one write: lines of processes sharing it never mix
                finally:
                    os.close(fd)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every record put so far is written; False if `timeout` passed first."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.1))
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (for up to `timeout` seconds), then stop the thread."""
        if self._closed:
            return
        self._deadline = time.monotonic() + timeout
        self._closed = True
        self._stopping.set()
        if self._thread is not None:
            with contextlib.suppress(queue.Full):
                self.queue.put(None, timeout=timeout)
            self._thread.join(timeout)


# -- reading ------------------------------------------------------------------------------
def query(
    session: Session,
    since: Optional[datetime] = None,
    until: Optional[datetime] = None,
    study: Optional[str] = None,
    object_id: Optional[str] = None,
    subject: Optional[str] = None,
    outcome: Optional[str] = None,
    limit: Optional[int] = None,
) -> Iterator[Record]:
    """Records in the order they were written, filtered; `subject` matches the principal's
    id or name."""
    stmt = select(AuditEvent).order_by(AuditEvent.id)
    if since is not None:
        stmt = stmt.where(AuditEvent.at >= since)
    if until is not None:
        stmt = stmt.where(AuditEvent.at < until)
    if study is not None:
        stmt = stmt.where(AuditEvent.study_id == study)
    if object_id is not None:
        stmt = stmt.where(AuditEvent.object_id == object_id)
    if subject is not None:
        stmt = stmt.where(
            (AuditEvent.principal == subject) | (AuditEvent.principal_name == subject)
        )
    if outcome is not None:
        stmt = stmt.where(AuditEvent.outcome == outcome)
    if limit is not None:
        stmt = stmt.limit(limit)
    for row in session.scalars(stmt.execution_options(yield_per=1000)):
        yield Record(**{c: getattr(row, c) for c in COLUMNS})


def parse_time(text: str, now: Optional[datetime] = None) -> datetime:
    """An ISO date or time (UTC unless it says otherwise), or a duration ago: 30d, 12h, 45m."""
    try:
        return (now or utcnow()) - parse_duration(text)
    except ValueError:
        pass
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"bad time {text!r}; use e.g. 2026-11-30, 2026-11-30T14:00, or 12h (ago)"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def tsv(records: Iterator[Record]) -> Iterator[str]:
    """Lines for a terminal or a spreadsheet: every cell made safe by wire.tsv (JSON lines
    keep exact values)."""
    yield tsv_row(COLUMNS)
    for r in records:
        values = r.row()
        values["at"] = iso(r.at)
        yield tsv_row(values[c] for c in COLUMNS)
