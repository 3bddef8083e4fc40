"""Analysis events, as SONG sends them: an AnalysisMessage {analysisId, studyId, state,
action, songServerId, analysis} for every change of an analysis, delivered at least once and
in order per analysis to the sinks of the `events` setting (a Kafka topic, webhooks, Maestro).

How: the change's transaction also writes the event to an outbox table (`outbox.py`), so an
event exists if and only if its change committed; a delivery loop in the server (`delivery.py`,
one process per sink at a time) sends what each sink has not taken yet (`sinks.py`). A sink
that is down makes nothing wait: its events queue, and it catches up in order when back.

The call, for code that changes an analysis (after the change, in its session):

    events.record(session: Session, analysis: tables.Analysis, action: str) -> None

`action` is one of events.CREATE, PUBLISH, UNPUBLISH, SUPPRESS, or events.UPDATE for a
curated change (PUT/PATCH of an analysis, an update or deletion of its files; SONG sends
these as PUBLISH, with the analysis's state). Record it after the change, while the analysis's
row exists: the message carries the analysis as the change left it.
"""

from __future__ import annotations

from pyscore.server.events.outbox import (
    ACTIONS,
    CREATE,
    PUBLISH,
    SUPPRESS,
    UNPUBLISH,
    UPDATE,
    record,
)

__all__ = ["ACTIONS", "CREATE", "PUBLISH", "SUPPRESS", "UNPUBLISH", "UPDATE", "record"]
