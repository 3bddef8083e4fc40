"""Calls to the metadata (Song) and storage (Score) APIs, with auth, retries and clear errors.

Object bytes never go through here: transfer.py fetches them from the signed part URLs.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

from pyscore.client import http1
from pyscore.client.config import ClientSettings, env_names
from pyscore.client.errors import (
    AuthError,
    NotFoundError,
    NotPublishedError,
    ScoreError,
    ServerError,
    SettingError,
    UnreachableError,
    UsageError,
)
from pyscore.client.http1 import Answer
from pyscore.client.httpio import USER_AGENT
from pyscore.client.retry import Transient, retrying

TYPE_CHECKING = False
if TYPE_CHECKING:  # the wire models load when an answer is decoded, after the first request
    from collections.abc import Iterable, Iterator, Sequence
    from typing import Any, Optional, TypeVar, Union

    from pyscore.wire.batch import UploadDone, UploadStartResult
    from pyscore.wire.score import ListingEntry, ObjectSpecification, UploadProgress
    from pyscore.wire.song import Entity

    T = TypeVar("T")
MiB = 1024 * 1024
# Answers are read in pieces up to a cap: a broken or hostile server's endless body must not
# grow the client without bound. An entity page of 2000 is ~0.5 MiB.
JSON_LIMIT = 16 * MiB
LISTING_LIMIT = 512 * MiB  # /listing names every object in the repository
ENTITY_PAGE = 2000  # what the original's clients ask for (Spring's largest page by default)
OUR_ENTITY_PAGE = 10_000  # the largest page our server gives
ENTITY_PAGES_AT_ONCE = 4
KEY_RANGES = ["", "4", "8", "c"]  # where the id ranges asked side by side start (UUIDs)
TEXT_LIMIT = 64 * 1024  # the ping URL, the sentinel object
MANIFEST_LIMIT = 256 * MiB  # a million rows
SPRING_ERROR = {"timestamp", "status", "error", "path"}  # Spring Boot's body: no message
WWW_AUTH_DETAIL = (re.compile(r'error_description="([^"]*)"'), re.compile(r'error="([^"]*)"'))
# The two services by their setting: what each is, and the one path every such service
# answers under its base URL (Song's, and ARGO's gateway's, legacy entity listing; Score's
# sentinel), asked when a call under it was answered 404.
SERVICES = {
    "metadata.url": ("Song", "/entities", "?size=1"),
    "storage.url": ("Score", "/download/ping", ""),
}
STORAGE_PATHS = ("/download", "/upload", "/listing", "/htsget")  # storage's, under one URL
NO_TLS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG")
# "Token missing required scope PROGRAMDATA-X.READ to ..." (ours); the original names none
MISSING_SCOPE = re.compile(r"missing required scope ([\w:-]+\.[\w.:-]+)", re.IGNORECASE)
STUDY_SCOPE = re.compile(r"PROGRAMDATA-(.+)\.READ", re.IGNORECASE)
DACO = "https://daco.icgc-argo.org"


MANIFEST_DIR = "manifest"  # the image's /score-client/manifest, where its alias mounts `pwd`


def manifest_path(source: str) -> Path:
    """A local manifest; a relative one not in the current directory is also looked for in
    ./manifest/, as in the Docker use the original documents (`-v $(pwd):/score-client/manifest`,
    then `--manifest name.txt` from /score-client)."""
    path = Path(source)
    if not path.is_file() and not path.is_absolute() and (Path(MANIFEST_DIR) / path).is_file():
        path = Path(MANIFEST_DIR) / path
    if not path.is_file():
        raise UsageError(f"Manifest '{source}' does not exist or is not a file")
    return path


def read_manifest_text(source: str) -> str:
    if source.startswith(("http://", "https://")):
        pool = http1.Pool(60.0, 60.0)
        try:
            r = pool.fetch("GET", source, {"User-Agent": USER_AGENT}, limit=MANIFEST_LIMIT)
        except http1.TooLarge:
            raise ScoreError(
                f"manifest {source}: the answer is larger than {MANIFEST_LIMIT:,} bytes; "
                "stopped reading (is the URL right?)"
            ) from None
        except (OSError, ValueError) as exc:
            raise UnreachableError(f"Cannot fetch manifest {source}: {exc}") from None
        finally:
            pool.close()
        if r.status_code >= 400:
            raise UsageError(f"Cannot fetch manifest {source}: HTTP {r.status_code}")
        return r.text
    path = manifest_path(source)
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"Manifest '{source}' is not UTF-8 text") from None


def server_message(response: Answer) -> str:
    """The human part of an error answer: Song's `message`, htsget's, DRS's `msg`, or a
    plain-text body's first line; "" when there is none (an empty body, or Spring Boot's
    `{timestamp, status, error, path}`, whose `error` is only the status's name)."""
    try:
        body = response.json()
    except ValueError:  # not JSON (UnicodeDecodeError is a ValueError too)
        text = response.text.strip().splitlines()
        return text[0][:200] if text else ""
    if isinstance(body, dict):
        if isinstance(body.get("htsget"), dict):
            body = body["htsget"]
        for key in ("message", "msg"):
            if isinstance(body.get(key), str) and body[key].strip():
                return body[key]
        if body.keys() >= SPRING_ERROR:
            return ""
        if isinstance(body.get("error"), str):
            return body["error"]
    return str(body)[:200]


def error_for(response: Answer, what: str) -> ScoreError:
    """The one-line error for a refused call, whichever server (ours, the original's Spring
    Boot services, a proxy) refused it and however little it said."""
    message = server_message(response)
    status = response.status_code
    bare = f"HTTP {status} {response.reason_phrase or status_phrase(status)[9:]}".strip()
    detail = ""
    if status == 401:
        challenge = response.headers.get("WWW-Authenticate", "")
        found = [m[1] for m in (p.search(challenge) for p in WWW_AUTH_DETAIL) if m]
        detail = message or (found and found[0]) or bare
    return refusal(status, message or detail, bare, what)


def refusal(status: int, message: str, bare: str, what: str) -> ScoreError:
    """The ScoreError of a refusal with this status and message (`bare`: the status alone,
    said when the server said nothing); a single call's and a batch's per-id alike."""
    if status == 401:
        error: ScoreError = AuthError(
            f"{what}: access token rejected ({message or bare}); check accessToken / ACCESSTOKEN"
        )
    elif status == 403:
        error = AuthError(f"{what}: permission denied: {message or bare}")
        needed = MISSING_SCOPE.search(message)
        error.scope = needed[1] if needed else None
    elif status == 404:
        error = NotFoundError(f"{what}: not found" + (f": {message}" if message else ""))
    elif status in (400, 422) and message:
        error = UsageError(f"{what}: {message}")
    elif status >= 500:
        error = ServerError(f"{what}: server error {status}: {message or bare}")
    else:
        error = ScoreError(f"{what}: refused by the server: {message or bare}")
    error.status = status
    return error


def missing(object_id: str) -> NotFoundError:
    """A 404 for an object id: most often a mistyped id, so say that (not the service's
    class names)."""
    error = NotFoundError(f"no object with id {object_id} (check the id or the manifest)")
    error.status = 404
    return error


def token_scopes(token: str) -> Optional[list[str]]:
    """The scopes a JWT access token says it carries (OIDC `scope`/`scp`, Ego's
    `context.scope`), for telling a user what their token has; None for an opaque token.
    Read, not verified: the server decides, this only explains."""
    if token.count(".") != 2:
        return None
    import base64
    import binascii
    import json

    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(claims, dict):
        return None
    context = claims.get("context")
    for found in (
        claims.get("scope"),
        claims.get("scp"),
        context.get("scope") if isinstance(context, dict) else None,
    ):
        if isinstance(found, str):
            return found.split()
        if isinstance(found, list):
            return [str(s) for s in found]
    return None


def refusal_summary(refused: Sequence[tuple[AuthError, str]], token: str) -> list[str]:
    """Files refused for want of a scope (each with its study), as one line per scope or
    study rather than one per file: how many, what they need, what the token has when it
    says, and what to ask for."""
    groups: dict[tuple[Optional[str], str], list[AuthError]] = {}
    for error, study in refused:
        groups.setdefault((error.scope, study if not error.scope else ""), []).append(error)
    scopes = token_scopes(token)
    has = f" (scopes: {', '.join(scopes) or 'none'})" if scopes is not None else ""
    lacking = f"which this token{has} does not have" if token else "and no access token is set"
    lines = []
    for (scope, study), errors in groups.items():
        what, _, said = str(errors[0]).partition(": permission denied: ")
        one = len(errors) == 1
        files = what if one else f"{len(errors)} files"  # one file: named, as alone
        program = (STUDY_SCOPE.fullmatch(scope or "") or [None, study])[1]
        ask = (
            f"ask for access to program {program} (on ICGC ARGO: DACO approval, {DACO})"
            if program
            else "ask the platform for it"
        )
        if scope:
            lines.append(
                f"{files} {'needs' if one else 'need'} scope {scope}, {lacking}: {ask}, then "
                "use a token with that scope (accessToken / ACCESSTOKEN)"
            )
        else:
            where = f" of program {program}" if program else ""
            lines.append(f"{files}{where} {'was' if one else 'were'} refused ({said}): {ask}")
    return lines


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception a library's error wraps (its socket or TLS error)."""
    for _ in range(10):
        inner = exc.__cause__ or exc.__context__
        if inner is None:
            break
        exc = inner
    return exc


def first_contact_problem(exc: BaseException, host: str, connect: float) -> Optional[str]:
    """What failing to reach a service that has not answered yet in this run says about its
    URL (refused, no such host, no TLS there, ...), None for what can heal by itself (a
    read that timed out, a reset): those are retried, a wrong setting is not."""
    if isinstance(exc, http1.InvalidUrl):
        return "is not a URL: it needs http:// or https://"
    if isinstance(exc, http1.ConnectTimeout):
        return f"did not accept a connection within {connect:.0f} s"
    if isinstance(exc, http1.ProtocolError):
        return "did not answer as an HTTP server (is it https://?)"
    if not isinstance(exc, http1.ConnectError):
        return None
    import socket
    import ssl

    cause = root_cause(exc)
    if isinstance(cause, ConnectionRefusedError):
        return "refused the connection"
    if isinstance(cause, socket.gaierror):
        return f"names a host that cannot be found ({host})"
    if isinstance(cause, ssl.SSLCertVerificationError):
        why = getattr(cause, "verify_message", None) or cause
        return f"presents a TLS certificate this machine does not trust ({why})"
    if isinstance(cause, ssl.SSLError):
        if cause.reason in NO_TLS:
            return "does not speak TLS (is it http://?)"
        return f"failed the TLS handshake ({cause.reason or cause})"
    return f"cannot be reached ({getattr(cause, 'strerror', None) or cause})"


def _host(url: str) -> str:
    try:
        return http1.split(url).host
    except http1.InvalidUrl:
        return url


def _dumps(data: Any) -> bytes:
    import json

    return json.dumps(data, separators=(",", ":")).encode()


def setting_error(settings: ClientSettings, key: str, problem: str) -> SettingError:
    """The one line for a setting that cannot work: its name, its value, what is wrong and
    where it was set."""
    name = env_names(key)[-1]
    return SettingError(f"{name}={settings.get(key)} {problem} ({settings.origin(key)})")


def check_url(settings: ClientSettings, key: str) -> None:
    """A service URL must at least be one (scheme and host) before anything is asked."""
    try:
        http1.split(settings.get(key))
    except http1.InvalidUrl:
        raise setting_error(settings, key, "is not a URL: it needs http:// or https://") from None


def status_phrase(status: int) -> str:
    from http import HTTPStatus

    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


class NotOffered(ScoreError):
    """A batch lookup the service said it offers was not answered as one (a 404 or 405 from
    a proxy that routes it elsewhere, an answer of another shape): ask one by one instead."""


def decode(kind: type[T], data: Any, what: str) -> T:
    """A server's JSON as a wire object; one that breaks the contract is this file's failure."""
    from pyscore.wire.codec import WireError, from_wire

    try:
        return from_wire(kind, data, what)
    except WireError as exc:
        raise ScoreError(str(exc)) from None


def decode_json(kind: Any, content: bytes, what: str) -> Any:
    """A server's JSON bytes decoded straight into `kind`; one that breaks the contract is
    this file's failure."""
    from pyscore.wire.codec import WireError, from_json

    try:
        return from_json(kind, content, what)
    except WireError as exc:
        raise ScoreError(str(exc)) from None


def _unseen(rows: Iterable[T], seen: set[str]) -> Iterator[T]:
    """Rows whose id is not in `seen` yet (added as they go)."""
    for e in rows:
        if e.id not in seen:  # type: ignore[attr-defined]
            seen.add(e.id)  # type: ignore[attr-defined]
            yield e


class Api:
    """The two services score-client talks to; both may be the same pyscore server."""

    def __init__(self, settings: ClientSettings) -> None:
        for key in SERVICES:
            check_url(settings, key)
        self.settings = settings
        self.headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if settings.token:
            self.headers["Authorization"] = f"Bearer {settings.token}"
        self.timeout = float(settings.int("client.readTimeoutSeconds"))
        self.connect_timeout = float(settings.int("client.connectTimeoutSeconds"))
        self.http = http1.Pool(self.timeout, self.connect_timeout, 64, self._verify())
        self._store: http1.Pool | None = None
        self.attempts = settings.int("storage.retryNumber")
        self._siblings: dict[str, dict[str, Entity]] = {}
        self._lock = threading.Lock()
        # what each service (by base URL) offers beyond the original's API: the most ids per
        # batch lookup, None for none; learned from its first answer (see wire/batch.py)
        self._offers: dict[str, Optional[int]] = {}
        # base URLs that answered in this run: failing to reach one of them later is a
        # restart or a blip (retried); failing before is most likely its setting (not)
        self._answered: set[str] = set()
        # settings whose URL a success proved right, and the outcome of each 404 check
        self._proven: set[str] = set()
        self._checked: dict[str, Optional[SettingError]] = {}
        self._checking = threading.Lock()

    def _verify(self) -> Any:
        """The TLS context of the API calls: the client's shared one, or with
        metadata.ssl.enabled=false one that checks nothing (made when first needed)."""
        if self.settings.get("metadata.ssl.enabled") != "false":
            return None
        import ssl

        unchecked = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        unchecked.check_hostname = False
        unchecked.verify_mode = ssl.CERT_NONE
        return unchecked

    @property
    def store(self) -> http1.Pool:
        """For object-store URLs (signed, or htsget blocks): the token is for our services
        only and never goes there."""
        if self._store is None:
            self._store = http1.Pool(self.timeout, self.connect_timeout)
        return self._store

    def close(self) -> None:
        self.http.close()
        if self._store is not None:
            self._store.close()

    def send_once(
        self,
        method: str,
        url: str,
        what: str,
        limit: int = JSON_LIMIT,
        *,
        params: Optional[dict[str, Any]] = None,
        json: Any = None,
        headers: Optional[dict[str, str]] = None,
        timeout: Optional[float] = None,
    ) -> Answer:
        """One call, its answer read up to `limit` bytes; a transport error is Transient."""
        key = self._setting_of(url)
        url = http1.with_params(url, params)
        headers, body = {**self.headers, **(headers or {})}, None
        if json is not None:
            headers = {**headers, "Content-Type": "application/json"}
            body = _dumps(json)
        try:
            response = self.http.fetch(method, url, headers, body, limit, timeout)
        except http1.TooLarge:
            raise ScoreError(
                f"{what}: the answer from {http1.split(url).host} is larger than "
                f"{limit:,} bytes; stopped reading (is the URL right?)"
            ) from None
        except (OSError, ValueError) as exc:
            host = _host(url)
            base = self.settings.get(key).rstrip("/") if key else ""
            if key and base not in self._answered:
                problem = first_contact_problem(exc, host, self.connect_timeout)
                if problem:
                    raise setting_error(self.settings, key, problem) from None
            raise Transient() from UnreachableError(
                f"{what}: cannot reach {host} ({type(exc).__name__}: {exc})"
            )
        if key:
            self._answered.add(self.settings.get(key).rstrip("/"))
            if response.status_code < 400:
                self._proven.add(key)
        self._learn(url, response)
        return response

    def _setting_of(self, url: str) -> Optional[str]:
        """Which service setting a URL of ours is under (None: a signed URL elsewhere). When
        both services share one base URL, storage's paths tell them apart."""
        meta, storage = self.settings.metadata_url, self.settings.storage_url

        def under(base: str) -> bool:
            return url == base or url.startswith(base + "/") or url.startswith(base + "?")

        if meta == storage:
            if not under(meta):
                return None
            return "storage.url" if url[len(meta) :].startswith(STORAGE_PATHS) else "metadata.url"
        found = [
            (len(b), k) for k, b in (("metadata.url", meta), ("storage.url", storage)) if under(b)
        ]
        return max(found)[1] if found else None

    def check_service(self, url: str) -> None:
        """After a 404 under a service's URL that no success has proven right: ask the path
        every such service answers; a 404 there too means the setting is wrong (a base URL
        with a path the service does not have), not the thing asked for. Asked once a run."""
        key = self._setting_of(url)
        if key is None or key in self._proven:
            return
        with self._checking:
            if key in self._checked:
                error = self._checked[key]
            else:
                error = self._checked[key] = self._probe(key)
        if error is not None:
            raise error

    def _probe(self, key: str) -> Optional[SettingError]:
        service, path, query = SERVICES[key]
        base = self.settings.get(key).rstrip("/")
        try:
            response = self.send_once("GET", base + path + query, f"{service} check")
        except Transient:
            return None  # cannot tell: the 404 stands as it is
        if response.status_code != 404:
            return None
        problem = f"is not the base URL of a {service} service (its {path} answers 404)"
        return setting_error(self.settings, key, problem)

    # -- what a server offers beyond the original's API ----------------------------------------
    def _learn(self, url: str, response: Answer) -> None:
        """The first answer (not a 5xx, which a proxy may have written) of each service says
        whether it offers batch lookups: pyscore's say `Pyscore-Batch: max=<n>` on every
        answer, the original's say nothing. Costs no request of its own."""
        if response.status_code >= 500:
            return
        from pyscore.wire.batch import BATCH_HEADER, parse_batch_header

        for base in (self.settings.storage_url, self.settings.metadata_url):
            if base not in self._offers and url.startswith(base.rstrip("/") + "/"):
                with self._lock:
                    self._offers.setdefault(
                        base, parse_batch_header(response.headers.get(BATCH_HEADER))
                    )

    def batch_offer(self, base: str) -> tuple[bool, Optional[int]]:
        """(known yet, most ids per batch or None) for the service at `base`."""
        with self._lock:
            return base in self._offers, self._offers.get(base)

    def no_batches(self, base: str) -> None:
        """The service said it offers batches but does not answer them: never ask again."""
        with self._lock:
            self._offers[base] = None

    def request(
        self,
        method: str,
        url: str,
        what: str,
        *,
        ok: tuple[int, ...] = (),
        limit: int = JSON_LIMIT,
        **kwargs: Any,
    ) -> Answer:
        """One call, retried on transport errors, 5xx and 429; other errors as ScoreErrors."""

        def once() -> Answer:
            response = self.send_once(method, url, what, limit, **kwargs)
            if response.status_code >= 500 or response.status_code == 429:
                raise Transient() from error_for(response, what)
            return response

        response = retrying(once, self.attempts)
        if response.status_code >= 400 and response.status_code not in ok:
            if response.status_code == 404:
                self.check_service(url)
            raise error_for(response, what)
        return response

    # -- metadata -------------------------------------------------------------------------
    def entity(self, object_id: str) -> Entity:
        from pyscore.wire.song import Entity

        url = f"{self.settings.metadata_url}/entities/{object_id}"
        try:
            response = self.request("GET", url, f"object {object_id}")
        except NotFoundError:
            raise missing(object_id) from None
        return decode(Entity, response.json(), f"object {object_id}")

    def entities(self, **filters: str) -> Iterator[Entity]:
        from pyscore.wire.song import Entity

        return self.entities_as(Entity, **filters)

    def entity_count(self) -> Optional[int]:
        """How many files the metadata names (a page of one says; None if it does not)."""
        from pyscore.wire.song import Entity

        return self._entity_page(Entity, {}, 0, 1)[2]

    def entities_as(self, kind: type[T], fields: Sequence[str] = (), **filters: str) -> Iterator[T]:
        """Every entity matching the filters, each decoded into `kind` (Entity, or a lighter
        type of some of its fields), each id once. The original's way first (score-client
        asks pages of ENTITY_PAGE); when the first page says there are more, the rest are
        asked ENTITY_PAGES_AT_ONCE at a time. Where the service is ours (it advertises
        batches) that is KEY_RANGES ranges of ids side by side, each walked in pages of
        OUR_ENTITY_PAGE from the last id of the one before (pyscore's `from`/`before`: no
        page is an offset deep nor counted), with only `fields` (those `kind` reads) when
        given: a million files are ~110 cheap requests."""
        from concurrent.futures import ThreadPoolExecutor

        found, last, total = self._entity_page(kind, filters, 0, ENTITY_PAGE)
        seen: set[str] = set()
        ours = bool(self.batch_offer(self.settings.metadata_url)[1])
        with ThreadPoolExecutor(ENTITY_PAGES_AT_ONCE) as pool:
            yield from _unseen(found, seen)
            if last:
                return
            if ours:
                asked = {**filters, **({"fields": ",".join(fields)} if fields else {})}
                try:
                    for rows in self._key_ranges(pool, kind, asked):
                        yield from _unseen(rows, seen)
                    return
                except NotOffered:  # a pyscore from before `from=`: pages by number
                    pass
            pages: Iterable[tuple[list[Any], bool, Optional[int]]]
            if total is None:  # no count given: one page after another
                pages = self._entity_pages(kind, filters)
            else:
                size, start = ENTITY_PAGE, 1
                if ours and total > OUR_ENTITY_PAGE:
                    size, start = OUR_ENTITY_PAGE, 0  # its first page again: first 2,000 too
                numbers = range(start, -(-total // size))
                pages = pool.map(lambda n: self._entity_page(kind, filters, n, size), numbers)
            for page in pages:
                yield from _unseen(page[0], seen)

    def _key_ranges(self, pool: Any, kind: Any, filters: dict[str, str]) -> Iterator[list[Any]]:
        """The pages of KEY_RANGES ranges of ids, each range walked in a thread of `pool`,
        as they come (so that a caller keeps what it needs of a page before the next)."""
        import queue

        pages: queue.SimpleQueue = queue.SimpleQueue()

        def walk(start: str, before: Optional[str]) -> None:
            try:
                self._key_range(kind, filters, start, before, pages.put)
            finally:
                pages.put(None)  # this range is done (or failed: its future says)

        walks = [pool.submit(walk, *r) for r in zip(KEY_RANGES, [*KEY_RANGES[1:], None])]
        for _ in walks:
            while (rows := pages.get()) is not None:
                yield rows
        for done in walks:
            done.result()

    def _key_range(
        self, kind: Any, filters: dict[str, str], start: str, before: Optional[str], put: Any
    ) -> None:
        """Every entity with an id from `start` and below `before` (None: no end), a page of
        OUR_ENTITY_PAGE at a time given to `put`, each page from the last id of the one
        before (asked again: the range is inclusive; the caller drops the repeat).
        NotOffered when the server does not know ranges (refused, or the same page again)."""
        while True:
            bounds = {"from": start, **({"before": before} if before is not None else {})}
            try:
                rows, _, _ = self._entity_page(kind, {**filters, **bounds}, 0, OUR_ENTITY_PAGE)
            except ScoreError as exc:
                if exc.status == 400:
                    raise NotOffered(str(exc)) from None
                raise
            put(rows)
            if len(rows) < OUR_ENTITY_PAGE:
                return
            if rows[-1].id <= start:
                raise NotOffered("entity listing: the server does not page by id range")
            start = rows[-1].id

    def _entity_pages(
        self, kind: Any, filters: dict[str, str]
    ) -> Iterator[tuple[list[Any], bool, Optional[int]]]:
        page = 1
        while True:
            answer = self._entity_page(kind, filters, page, ENTITY_PAGE)
            yield answer
            if answer[1]:
                return
            page += 1

    def _entity_page(
        self, kind: Any, filters: dict[str, str], page: int, size: int
    ) -> tuple[list[Any], bool, Optional[int]]:
        """A page of entities, whether it is the last, and how many there are in all."""
        from pyscore.wire.song import Page

        params = {**filters, "page": page, "size": size}
        url = f"{self.settings.metadata_url}/entities"
        answer = self.request("GET", url, "entity listing", params=params)
        body = decode_json(Page[kind], answer.content, "entity listing")
        return body.content, bool(body.last) or not body.content, body.totalElements

    def index_entity(self, data: Entity) -> Entity | None:
        """The index file beside a data file: same analysis, named <file>.bai/.crai/.tbi/...
        (An analysis's files are listed once per run, however many of them are asked for.)"""
        with self._lock:
            siblings = self._siblings.get(data.gnosId)
        if siblings is None:
            siblings = {e.fileName.lower(): e for e in self.entities(gnosId=data.gnosId)}
            with self._lock:
                self._siblings[data.gnosId] = siblings
        from pyscore.wire.files import find_index

        found = find_index(data.fileName, siblings)
        return found if found is not None and found.id != data.id else None

    def submit(self, study_id: str, payload: dict) -> str:
        r = self.request(
            "POST",
            f"{self.settings.metadata_url}/submit/{study_id}",
            f"submission to study {study_id}",
            json=payload,
        )
        return r.json()["analysisId"]

    def analysis(self, study_id: str, analysis_id: str) -> dict:
        return self.request(
            "GET",
            f"{self.settings.metadata_url}/studies/{study_id}/analysis/{analysis_id}",
            f"analysis {analysis_id}",
        ).json()

    def unpublished_analyses(self, study_id: str) -> set[str]:
        """Ids of a study's analyses that the metadata calls UNPUBLISHED or SUPPRESSED (Song's
        `GET /studies/{study}/analysis?analysisStates=`): their files cannot be read."""
        body = self.request(
            "GET",
            f"{self.settings.metadata_url}/studies/{study_id}/analysis",
            f"analyses of study {study_id}",
            params={"analysisStates": "UNPUBLISHED,SUPPRESSED"},
            limit=LISTING_LIMIT,
        ).json()
        if not isinstance(body, list):
            raise ScoreError(f"analyses of study {study_id}: the answer is not a list")
        return {a["analysisId"] for a in body if isinstance(a, dict) and "analysisId" in a}

    def publish(self, study_id: str, analysis_id: str) -> None:
        self.request(
            "PUT",
            f"{self.settings.metadata_url}/studies/{study_id}/analysis/publish/{analysis_id}",
            f"publishing analysis {analysis_id}",
        )

    # -- storage --------------------------------------------------------------------------
    def ping(self) -> None:
        """--verify-connection: the sentinel URL must be fetchable."""
        self.ping_store(self.ping_url())

    def ping_url(self) -> str:
        """The storage service's sentinel URL (its answer also says what it offers)."""
        return self.request(
            "GET",
            f"{self.settings.storage_url}/download/ping",
            "connection check",
            limit=TEXT_LIMIT,
        ).text.strip()

    def ping_store(self, url: str) -> None:
        """The second half of `ping`: fetch the sentinel."""
        if url.startswith("http"):
            what = "connection check (object store)"
            try:
                r = self.store.fetch("GET", url, {"User-Agent": USER_AGENT}, limit=TEXT_LIMIT)
            except http1.TooLarge:
                raise ScoreError(
                    f"{what}: the answer from {_host(url)} is larger than {TEXT_LIMIT:,} "
                    "bytes; stopped reading (is the URL right?)"
                ) from None
            except (OSError, ValueError) as exc:
                raise UnreachableError(
                    f"{what}: cannot reach {_host(url)} ({type(exc).__name__}: {exc})"
                ) from None
            if r.status_code >= 400:
                raise error_for(r, what)

    def download_spec(
        self, object_id: str, offset: int = 0, length: int = -1, external: bool = False
    ) -> ObjectSpecification:
        params = {"offset": offset, "length": length, "external": str(external).lower()}
        try:
            response = self.request(
                "GET",
                f"{self.settings.storage_url}/download/{object_id}",
                f"object {object_id}",
                params=params,
            )
        except ScoreError as exc:
            if exc.status in (400, 409):  # the original says 400 and nothing more
                raise self._why_refused(object_id) or exc from None
            if isinstance(exc, NotFoundError):
                raise missing(object_id) from None
            raise
        from pyscore.wire.score import ObjectSpecification

        return decode(ObjectSpecification, response.json(), f"object {object_id}")

    def signed_url(self, object_id: str) -> str:
        """A signed URL of the whole object, for tools that read it themselves (htslib,
        a browser, curl): one unranged URL, as `url` prints."""
        return self.download_spec(object_id, external=True).parts[0].url or ""

    def _why_refused(self, object_id: str) -> ScoreError | None:
        """The metadata's reason a download was refused, if it is that the file's analysis is
        not published; None if the metadata does not say so."""
        try:
            e = self.entity(object_id)
            state = self.analysis(e.projectCode, e.gnosId).get("analysisState")
        except (ScoreError, AttributeError):
            return None
        if not isinstance(state, str) or state == "PUBLISHED":
            return None
        return NotPublishedError(
            f"object {object_id} ({e.fileName}): its analysis {e.gnosId} is {state}; "
            "only files of published analyses can be downloaded"
        )

    def download_specs(
        self, wanted: Sequence[tuple[str, int, int]]
    ) -> list[Union[ObjectSpecification, ScoreError]]:
        """Many objects' specifications in one request (pyscore's batch extension, only where
        `batch_offer` says so): each (object id, offset, length) answered by its spec or by the
        error its own `download_spec` would raise, in order. The server may answer only the
        first of them (its answer was full: wire/batch.py); the rest are to be asked again."""
        from pyscore.wire.batch import SPECS_PATH, SpecBatchAnswer

        what = f"download specifications of {len(wanted)} objects"
        body = {"objects": [{"objectId": i, "offset": o, "length": n} for i, o, n in wanted]}
        url = f"{self.settings.storage_url}{SPECS_PATH}"
        answer = self._batch(SpecBatchAnswer, url, body, what)
        answered = [r.objectId for r in answer.results]
        if not answered or answered != [i for i, _, _ in wanted[: len(answered)]]:
            raise NotOffered(f"{what}: the answer does not answer the objects asked for")
        out: list[Union[ObjectSpecification, ScoreError]] = []
        for r in answer.results:
            what_one = f"object {r.objectId}"
            if r.status == 200 and r.spec is not None:
                out.append(r.spec)
                continue
            if r.status == 404:
                out.append(missing(r.objectId))
                continue
            error = refusal(r.status, r.message or "", status_phrase(r.status), what_one)
            if r.status in (400, 409):  # as download_spec: say why, if it is publication
                error = self._why_refused(r.objectId) or error
            out.append(error)
        return out

    def _batch(
        self, kind: type[T], url: str, body: dict, what: str, headers: Optional[dict] = None
    ) -> T:
        try:
            response = self.request("POST", url, what, json=body, headers=headers)
        except ScoreError as exc:
            if exc.status in (404, 405, 501):
                raise NotOffered(str(exc)) from None
            raise
        from pyscore.wire.codec import WireError, from_wire

        try:
            return from_wire(kind, response.json(), what)
        except (WireError, ValueError) as exc:
            raise NotOffered(f"{what}: {exc}") from None

    def entities_batch(self, ids: Sequence[str]) -> list[Union[Entity, ScoreError]]:
        """Many entities in one request (pyscore's batch extension): each id's entity or the
        error its own `entity` would raise, in order."""
        from pyscore.wire.batch import ENTITIES_PATH, EntityBatchAnswer

        what = f"entities of {len(ids)} objects"
        url = f"{self.settings.metadata_url}{ENTITIES_PATH}"
        answer = self._batch(EntityBatchAnswer, url, {"ids": list(ids)}, what)
        if [r.id for r in answer.results] != list(ids):
            raise NotOffered(f"{what}: the answer does not answer the ids asked for")
        out: list[Union[Entity, ScoreError]] = []
        for r in answer.results:
            if r.status == 200 and r.entity is not None:
                out.append(r.entity)
            elif r.status == 404:
                out.append(missing(r.id))
            else:
                message, bare = r.message or "", status_phrase(r.status)
                out.append(refusal(r.status, message, bare, f"object {r.id}"))
        return out

    def listing(self) -> list[ListingEntry]:
        from pyscore.wire.score import ListingEntry

        return self.listing_as(ListingEntry)

    def listing_as(self, kind: type[T], names: bool = False) -> list[T]:
        """Every object the storage service lists (id, size, lastModified), each decoded
        into `kind` (ListingEntry, or a lighter type of the same fields); with `names`, a
        pyscore service also names each file (gnosId, fileName; ignored by others)."""
        answer = self.request(
            "GET",
            f"{self.settings.storage_url}/listing",
            "object listing",
            limit=LISTING_LIMIT,
            params={"names": "true"} if names else None,
        )
        return decode_json(list[kind], answer.content, "object listing")  # type: ignore[valid-type]

    # -- upload ---------------------------------------------------------------------------
    def upload_exists(self, object_id: str) -> bool:
        r = self.request(
            "GET", f"{self.settings.storage_url}/upload/{object_id}", f"object {object_id}"
        )
        return r.json() is True

    def upload_status(self, object_id: str, size: int) -> UploadProgress | None:
        r = self.request(
            "GET",
            f"{self.settings.storage_url}/upload/{object_id}/status",
            f"upload of {object_id}",
            params={"fileSize": size},
            ok=(404,),
        )
        if r.status_code == 404:
            return None
        from pyscore.wire.score import UploadProgress

        return decode(UploadProgress, r.json(), f"upload of {object_id}")

    def initiate_upload(
        self, object_id: str, size: int, md5: str, overwrite: bool
    ) -> ObjectSpecification:
        r = self.request(
            "POST",
            f"{self.settings.storage_url}/upload/{object_id}/uploads",
            f"upload of {object_id}",
            params={"fileSize": size, "md5": md5, "overwrite": str(overwrite).lower()},
        )
        from pyscore.wire.score import ObjectSpecification

        return decode(ObjectSpecification, r.json(), f"upload of {object_id}")

    def finalize_part(self, object_id: str, upload_id: str, part: int, md5: str, etag: str) -> None:
        self.request(
            "POST",
            f"{self.settings.storage_url}/upload/{object_id}/parts",
            f"upload of {object_id} part {part}",
            params={"uploadId": upload_id, "partNumber": part, "md5": md5, "etag": etag},
        )

    def complete_upload(self, object_id: str, upload_id: str) -> None:
        self.request(
            "POST",
            f"{self.settings.storage_url}/upload/{object_id}",
            f"upload of {object_id}",
            params={"uploadId": upload_id},
        )

    def upload_starts(
        self, wanted: Sequence[tuple[str, int, str, bool]]
    ) -> list[UploadStartResult]:
        """Many uploads begun in one request (pyscore's batch extension, only where
        `batch_offer` says so): each (object id, size, md5, overwrite) answered in order by
        its upload (uploadId, parts, resumed) or its refusal (status, errorId, message). The
        server may answer only the first of them (its answer was full: wire/batch.py, we
        say we take that); the rest, not begun, are to be asked again."""
        from pyscore.wire.batch import ACCEPT_PARTIAL, UPLOAD_START_PATH, UploadStartAnswer

        what = f"uploads of {len(wanted)} objects"
        body = {
            "uploads": [
                {"objectId": i, "fileSize": n, "md5": m, "overwrite": o} for i, n, m, o in wanted
            ]
        }
        url = f"{self.settings.storage_url}{UPLOAD_START_PATH}"
        answer = self._batch(UploadStartAnswer, url, body, what, ACCEPT_PARTIAL)
        answered = [r.objectId for r in answer.results]
        if not answered or answered != [w[0] for w in wanted[: len(answered)]]:
            raise NotOffered(f"{what}: the answer does not answer the objects asked for")
        return answer.results

    def upload_finishes(self, done: Sequence[UploadDone]) -> list[Optional[ScoreError]]:
        """Many uploads' sent parts recorded and the uploads completed in one request
        (pyscore's batch extension): each one's error, None if completed, in order."""
        from pyscore.wire.batch import UPLOAD_FINISH_PATH, UploadFinishAnswer, UploadFinishRequest
        from pyscore.wire.codec import to_wire

        what = f"uploads of {len(done)} objects"
        url = f"{self.settings.storage_url}{UPLOAD_FINISH_PATH}"
        body = to_wire(UploadFinishRequest(list(done)))
        answer = self._batch(UploadFinishAnswer, url, body, what)
        if [r.objectId for r in answer.results] != [d.objectId for d in done]:
            raise NotOffered(f"{what}: the answer does not answer the objects asked for")
        return [
            None
            if r.status == 200
            else refusal(
                r.status, r.message or "", status_phrase(r.status), f"upload of {r.objectId}"
            )
            for r in answer.results
        ]

    def cancel_upload(self, object_id: str) -> None:
        self.request(
            "DELETE",
            f"{self.settings.storage_url}/upload/{object_id}",
            f"upload of {object_id}",
            ok=(404,),
        )
