"""Where events go: a Kafka topic (SONG's), a webhook, Maestro's index API. Each sink takes
events in order and says how many of them, from the first, it has taken; it stops at the
first it could not deliver, which is sent again (with the ones after it) on the next try.

The `events` setting, a list of one-key objects (each may also carry a "name", needed when
two sinks are of one kind; the kind is the default name):

    [{"kafka": {"bootstrap": "kafka-1:9092,kafka-2:9092", "topic": "song-analysis",
                "config": {"security.protocol": "SASL_SSL", ...}}},
     {"webhook": {"url": "https://hooks.example.org/song", "secret": "...", "timeout": 10}},
     {"maestro": {"url": "http://maestro:11235", "repository": "song.overture"}}]

- kafka: the value is the AnalysisMessage's JSON as SONG's Jackson writes it (UTF-8, no
  spaces), the key its analysisId, as SONG's KafkaSender sends them; partitioned as Java
  clients do (murmur2), so an analysis keeps its partition whoever produced to the topic.
  `config`: more librdkafka properties (TLS, SASL). Needs `pip install 'pyscore[kafka]'`.
- webhook: a POST of the same JSON, with `X-Pyscore-Event-Id` (the event's number: a
  receiver that sees one twice drops the second) and, when a secret is set,
  `X-Pyscore-Signature-256: sha256=<hex HMAC-SHA256 of the body under the secret>`. Any 2xx
  is taken; anything else is tried again.
- maestro: what Maestro's own Kafka listener does with the message, through its REST API
  (inbound/webapi/ManagementController.java): `POST /index/repository/{repository}/study/
  {studyId}/analysis/{analysisId}` when the analysis is PUBLISHED, else `DELETE` of that
  path. `repository` (default: `song_server_id`) is the code of this server in Maestro's
  `repositories` list. An answer whose IndexResult says `successful: false` is tried again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Optional, Protocol

from pyscore.server.identity.errors import Unavailable
from pyscore.server.identity.http import request

KINDS = ("kafka", "webhook", "maestro")
DEFAULT_TOPIC = "song-analysis"  # SONG's spring.kafka.template.default-topic
TIMEOUT = 10.0  # seconds for one HTTP call, or for Kafka to acknowledge a batch
SIGNATURE = "X-Pyscore-Signature-256"
EVENT_ID = "X-Pyscore-Event-Id"


@dataclass
class Outgoing:
    """An event as it leaves: its number, ids, state and the message's bytes."""

    seq: int
    analysis_id: str
    study_id: str
    state: str
    body: bytes


def encode(message: dict[str, Any]) -> bytes:
    """JSON as SONG's Jackson writes it: no spaces, non-ASCII as UTF-8."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


class Sink(Protocol):
    name: str
    kind: str
    timeout: float  # seconds one call (HTTP), or a batch's acknowledgement (Kafka), may take

    def send(self, events: list[Outgoing], deadline: float) -> tuple[int, str]:
        """How many of `events`, from the first, were delivered, and why not the rest ("":
        all were). No new delivery begins after `deadline` (time.monotonic())."""
        ...

    def close(self) -> None: ...


class Http:
    """A sink of one HTTP call per event."""

    name = kind = ""
    timeout = TIMEOUT

    def call(self, event: Outgoing) -> str:
        """Deliver one event: "" when taken, else why not."""
        raise NotImplementedError

    def send(self, events: list[Outgoing], deadline: float) -> tuple[int, str]:
        for i, ev in enumerate(events):
            if i and time.monotonic() > deadline:
                return i, ""
            try:
                error = self.call(ev)
            except Unavailable as exc:
                error = str(exc)
            if error:
                return i, error
        return len(events), ""

    def close(self) -> None:
        pass


def _answered(status: int, body: bytes, url: str) -> str:
    if 200 <= status < 300:
        return ""
    return f"{url.split('?')[0]} answered {status}: {body[:200].decode(errors='replace')}"


class Webhook(Http):
    def __init__(self, name: str, url: str, secret: str, timeout: float) -> None:
        self.name, self.kind = name, "webhook"
        self.url, self.secret, self.timeout = url, secret.encode(), timeout

    def call(self, event: Outgoing) -> str:
        headers = {"Content-Type": "application/json", EVENT_ID: str(event.seq)}
        if self.secret:
            digest = hmac.new(self.secret, event.body, hashlib.sha256).hexdigest()
            headers[SIGNATURE] = f"sha256={digest}"
        status, body = request(
            self.url, method="POST", body=event.body, headers=headers, timeout=self.timeout
        )
        return _answered(status, body, self.url)


class Maestro(Http):
    def __init__(self, name: str, url: str, repository: str, timeout: float) -> None:
        self.name, self.kind = name, "maestro"
        self.url, self.repository, self.timeout = url.rstrip("/"), repository, timeout

    def call(self, event: Outgoing) -> str:
        parts = ("index/repository", self.repository, "study", event.study_id, "analysis")
        path = "/".join(urllib.parse.quote(p, safe="/") for p in (*parts, event.analysis_id))
        url = f"{self.url}/{path}"
        method = "POST" if event.state == "PUBLISHED" else "DELETE"
        status, body = request(url, method=method, timeout=self.timeout)
        return _answered(status, body, url) or _index_failures(body, method, url)


def _index_failures(body: bytes, method: str, url: str) -> str:
    """Why Maestro's IndexResult list says it failed ("" if it does not)."""
    try:
        results = json.loads(body) if body.strip() else []
    except ValueError:
        return ""
    failed = [
        r
        for r in (results if isinstance(results, list) else [results])
        if isinstance(r, dict) and r.get("successful") is False
    ]
    if not failed:
        return ""
    return f"Maestro {method} {url}: not successful: {json.dumps(failed[0])[:300]}"


class Kafka:
    """A producer kept open between batches; each batch is waited for until every message
    has its outcome (delivered, or failed after `timeout`), so no copy of a failed batch is
    still in flight when it is sent again."""

    def __init__(self, name: str, bootstrap: str, topic: str, config: dict, timeout: float):
        try:
            import confluent_kafka
        except ModuleNotFoundError:
            raise ValueError(
                "a kafka sink needs the confluent-kafka package, which is not installed: "
                "pip install 'pyscore[kafka]'"
            ) from None
        self.name, self.kind, self.topic = name, "kafka", topic
        self.module = confluent_kafka
        self.timeout = timeout
        quiet = logging.getLogger("pyscore.events.kafka")  # failures are reported by delivery
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False
        self.config = {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,  # no reordering nor duplicates from its own retries
            "partitioner": "murmur2_random",  # the Java client's: same key, same partition
            "message.timeout.ms": int(timeout * 1000),
            "socket.timeout.ms": int(timeout * 1000),
            "client.id": "pyscore",
            **config,
            "logger": quiet,
            "error_cb": self._error,
        }
        self.producer: Any = None
        self.last_error = ""
        self.lock = threading.Lock()

    def _error(self, err: Any) -> None:
        self.last_error = err.str()
        if err.fatal():
            self.producer = None  # made anew for the next batch

    def send(self, events: list[Outgoing], deadline: float) -> tuple[int, str]:
        with self.lock:
            if self.producer is None:
                self.producer = self.module.Producer(self.config)
            producer = self.producer
            outcome: list[Optional[str]] = [None] * len(events)

            def report(i: int) -> Any:
                def done(err: Any, _msg: Any) -> None:
                    outcome[i] = "" if err is None else err.str()

                return done

            self.last_error = ""
            for i, ev in enumerate(events):
                producer.produce(
                    self.topic, key=ev.analysis_id.encode(), value=ev.body, on_delivery=report(i)
                )
            # message.timeout.ms ends every message's wait; the bound is only a safety net
            stop = time.monotonic() + self.timeout + 10
            while len(producer) and time.monotonic() < stop:
                producer.flush(1.0)
            count = 0
            while count < len(events) and outcome[count] == "":
                count += 1
            if count == len(events):
                return count, ""
            reason = outcome[count] or "no acknowledgement"
            if self.last_error and self.last_error not in reason:
                reason = f"{reason} ({self.last_error})"
            if len(producer):  # something is stuck: start again with a new producer
                self.producer = None
            return count, f"kafka {self.config['bootstrap.servers']}: {reason}"

    def close(self) -> None:
        if self.producer is not None:
            self.producer.flush(1.0)
            self.producer = None


def from_settings(config: Any, song_server_id: str) -> list[Sink]:
    """The sinks of the `events` setting; ValueError says what is wrong in it."""
    if not isinstance(config, list):
        raise ValueError('events: expected a list of sinks, such as [{"kafka": {...}}]')
    sinks: list[Sink] = []
    for i, entry in enumerate(config):
        where = f"events[{i}]"
        if not isinstance(entry, dict) or len(entry) != 1 or next(iter(entry)) not in KINDS:
            raise ValueError(f"{where}: expected one of {{{', '.join(KINDS)}: {{...}}}}")
        kind, options = next(iter(entry.items()))
        if not isinstance(options, dict):
            raise ValueError(f"{where}.{kind}: expected an object")
        sinks.append(_sink(kind, dict(options), f"{where}.{kind}", song_server_id))
    names = [s.name for s in sinks]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f'events: two sinks are named {twice[0]!r}; give each a "name"')
    return sinks


def _sink(kind: str, options: dict, where: str, song_server_id: str) -> Sink:
    def take(key: str, default: Any = None, kind_of: type = str) -> Any:
        value = options.pop(key, default)
        if value is None:
            raise ValueError(f'{where}: "{key}" is required')
        if kind_of is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind_of):
            raise ValueError(f"{where}.{key}: expected a {kind_of.__name__}")
        return value

    name = take("name", kind)
    if not name or len(name) > 64:
        raise ValueError(f"{where}.name: 1 to 64 characters")
    timeout = take("timeout", TIMEOUT, float)
    if kind == "kafka":
        bootstrap, topic = take("bootstrap"), take("topic", DEFAULT_TOPIC)
        config = take("config", {}, dict)
        _no_more(options, where)
        return Kafka(name, bootstrap, topic, config, timeout)
    url = take("url")
    _check_url(url, where)
    if kind == "webhook":
        secret = take("secret", "")
        _no_more(options, where)
        return Webhook(name, url, secret, timeout)
    repository = take("repository", song_server_id)
    _no_more(options, where)
    return Maestro(name, url, repository, timeout)


def _no_more(options: dict, where: str) -> None:
    if options:
        raise ValueError(f"{where}: unknown key(s) {sorted(options)}")


def _check_url(url: str, where: str) -> None:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"{where}.url: expected an http(s) URL, not {url!r}")
