"""Calls to the metadata (Song) and storage (Score) APIs, with auth, retries and clear errors.

Object bytes never go through here: transfer.py fetches them from the signed part URLs.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Sequence
from http import HTTPStatus
from typing import Any, Optional, TypeVar, Union

import httpx

from pyscore.client import tls
from pyscore.client.config import ClientSettings
from pyscore.client.errors import (
    AuthError,
    NotFoundError,
    NotPublishedError,
    ScoreError,
    ServerError,
    UnreachableError,
    UsageError,
)
from pyscore.client.httpio import USER_AGENT
from pyscore.client.retry import Transient, retrying
from pyscore.wire.batch import (
    BATCH_HEADER,
    ENTITIES_PATH,
    SPECS_PATH,
    UPLOAD_FINISH_PATH,
    UPLOAD_START_PATH,
    EntityBatchAnswer,
    SpecBatchAnswer,
    UploadDone,
    UploadFinishAnswer,
    UploadFinishRequest,
    UploadStartAnswer,
    UploadStartResult,
    parse_batch_header,
)
from pyscore.wire.codec import WireError, from_wire, to_wire
from pyscore.wire.files import find_index
from pyscore.wire.score import ListingEntry, ObjectSpecification, UploadProgress
from pyscore.wire.song import Entity

T = TypeVar("T")
MiB = 1024 * 1024
# Answers are read in pieces up to a cap: a broken or hostile server's endless body must not
# grow the client without bound. An entity page of 2000 is ~0.5 MiB.
JSON_LIMIT = 16 * MiB
LISTING_LIMIT = 512 * MiB  # /listing names every object in the repository
TEXT_LIMIT = 64 * 1024  # the ping URL, the sentinel object
MANIFEST_LIMIT = 256 * MiB  # a million rows
SPRING_ERROR = {"timestamp", "status", "error", "path"}  # Spring Boot's body: no message
WWW_AUTH_DETAIL = (re.compile(r'error_description="([^"]*)"'), re.compile(r'error="([^"]*)"'))


def read_capped(response: httpx.Response, limit: int, what: str) -> httpx.Response:
    """A streamed response with its body read, but no more than `limit` bytes of it."""
    chunks, size = [], 0
    try:
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > limit:
                raise ScoreError(
                    f"{what}: the answer from {response.url.host} is larger than "
                    f"{limit:,} bytes; stopped reading (is the URL right?)"
                )
            chunks.append(chunk)
    finally:
        response.close()
    skip = ("content-encoding", "content-length", "transfer-encoding")  # already decoded
    return httpx.Response(
        response.status_code,
        headers=[(k, v) for k, v in response.headers.multi_items() if k.lower() not in skip],
        content=b"".join(chunks),
        request=response.request,
    )


def server_message(response: httpx.Response) -> str:
    """The human part of an error answer: Song's `message`, htsget's, DRS's `msg`, or a
    plain-text body's first line; "" when there is none (an empty body, or Spring Boot's
    `{timestamp, status, error, path}`, whose `error` is only the status's name)."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
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


def error_for(response: httpx.Response, what: str) -> ScoreError:
    """The one-line error for a refused call, whichever server (ours, the original's Spring
    Boot services, a proxy) refused it and however little it said."""
    message = server_message(response)
    status = response.status_code
    bare = f"HTTP {status} {response.reason_phrase}".strip()
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


def status_phrase(status: int) -> str:
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


class NotOffered(ScoreError):
    """A batch lookup the service said it offers was not answered as one (a 404 or 405 from
    a proxy that routes it elsewhere, an answer of another shape): ask one by one instead."""


def decode(kind: type[T], data: Any, what: str) -> T:
    """A server's JSON as a wire object; one that breaks the contract is this file's failure."""
    try:
        return from_wire(kind, data, what)
    except WireError as exc:
        raise ScoreError(str(exc)) from None


class Api:
    """The two services score-client talks to; both may be the same pyscore server."""

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        headers = {"User-Agent": USER_AGENT}
        if settings.token:
            headers["Authorization"] = f"Bearer {settings.token}"
        timeout = httpx.Timeout(
            settings.int("client.readTimeoutSeconds"),
            connect=settings.int("client.connectTimeoutSeconds"),
        )
        verify = tls.context() if settings.get("metadata.ssl.enabled") != "false" else False
        self.http = httpx.Client(
            headers=headers,
            timeout=timeout,
            follow_redirects=True,
            verify=verify,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )
        self._store: httpx.Client | None = None
        self.attempts = settings.int("storage.retryNumber")
        self._siblings: dict[str, dict[str, Entity]] = {}
        self._lock = threading.Lock()
        # what each service (by base URL) offers beyond the original's API: the most ids per
        # batch lookup, None for none; learned from its first answer (see wire/batch.py)
        self._offers: dict[str, Optional[int]] = {}

    @property
    def store(self) -> httpx.Client:
        """For object-store URLs (signed, or htsget blocks): the token is for our services
        only and never goes there."""
        if self._store is None:
            self._store = httpx.Client(
                headers={"User-Agent": USER_AGENT},
                timeout=self.http.timeout,
                follow_redirects=True,
                verify=tls.context(),
            )
        return self._store

    def close(self) -> None:
        self.http.close()
        if self._store is not None:
            self._store.close()

    def send_once(
        self, method: str, url: str, what: str, limit: int = JSON_LIMIT, **kwargs: Any
    ) -> httpx.Response:
        """One call, its answer read up to `limit` bytes; a transport error is Transient."""
        try:
            request = self.http.build_request(method, url, **kwargs)
            response = read_capped(self.http.send(request, stream=True), limit, what)
        except httpx.TransportError as exc:
            host = httpx.URL(url).host
            raise Transient() from UnreachableError(
                f"{what}: cannot reach {host} ({type(exc).__name__}: {exc})"
            )
        self._learn(url, response)
        return response

    # -- what a server offers beyond the original's API ----------------------------------------
    def _learn(self, url: str, response: httpx.Response) -> None:
        """The first answer (not a 5xx, which a proxy may have written) of each service says
        whether it offers batch lookups: pyscore's say `Pyscore-Batch: max=<n>` on every
        answer, the original's say nothing. Costs no request of its own."""
        if response.status_code >= 500:
            return
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
    ) -> httpx.Response:
        """One call, retried on transport errors, 5xx and 429; other errors as ScoreErrors."""

        def once() -> httpx.Response:
            response = self.send_once(method, url, what, limit, **kwargs)
            if response.status_code >= 500 or response.status_code == 429:
                raise Transient() from error_for(response, what)
            return response

        response = retrying(once, self.attempts)
        if response.status_code >= 400 and response.status_code not in ok:
            raise error_for(response, what)
        return response

    # -- metadata -------------------------------------------------------------------------
    def entity(self, object_id: str) -> Entity:
        url = f"{self.settings.metadata_url}/entities/{object_id}"
        return decode(
            Entity, self.request("GET", url, f"object {object_id}").json(), f"object {object_id}"
        )

    def entities(self, **filters: str) -> Iterator[Entity]:
        """Every entity matching the filters, page by page (as score-client does)."""
        page = 0
        while True:
            params = {**filters, "page": page, "size": 2000}
            body = self.request(
                "GET", f"{self.settings.metadata_url}/entities", "entity listing", params=params
            ).json()
            for item in body.get("content", []):
                yield decode(Entity, item, "entity listing")
            if body.get("last", True) or not body.get("content"):
                return
            page += 1

    def index_entity(self, data: Entity) -> Entity | None:
        """The index file beside a data file: same analysis, named <file>.bai/.crai/.tbi/...
        (An analysis's files are listed once per run, however many of them are asked for.)"""
        with self._lock:
            siblings = self._siblings.get(data.gnosId)
        if siblings is None:
            siblings = {e.fileName.lower(): e for e in self.entities(gnosId=data.gnosId)}
            with self._lock:
                self._siblings[data.gnosId] = siblings
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
                r = read_capped(
                    self.store.send(self.store.build_request("GET", url), stream=True),
                    TEXT_LIMIT,
                    what,
                )
            except httpx.TransportError as exc:
                raise UnreachableError(
                    f"{what}: cannot reach {httpx.URL(url).host} ({type(exc).__name__}: {exc})"
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
            raise
        return decode(ObjectSpecification, response.json(), f"object {object_id}")

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
            error = refusal(r.status, r.message or "", status_phrase(r.status), what_one)
            if r.status in (400, 409):  # as download_spec: say why, if it is publication
                error = self._why_refused(r.objectId) or error
            out.append(error)
        return out

    def _batch(self, kind: type[T], url: str, body: dict, what: str) -> T:
        try:
            response = self.request("POST", url, what, json=body)
        except ScoreError as exc:
            if exc.status in (404, 405, 501):
                raise NotOffered(str(exc)) from None
            raise
        try:
            return from_wire(kind, response.json(), what)
        except (WireError, ValueError) as exc:
            raise NotOffered(f"{what}: {exc}") from None

    def entities_batch(self, ids: Sequence[str]) -> list[Union[Entity, ScoreError]]:
        """Many entities in one request (pyscore's batch extension): each id's entity or the
        error its own `entity` would raise, in order."""
        what = f"entities of {len(ids)} objects"
        url = f"{self.settings.metadata_url}{ENTITIES_PATH}"
        answer = self._batch(EntityBatchAnswer, url, {"ids": list(ids)}, what)
        if [r.id for r in answer.results] != list(ids):
            raise NotOffered(f"{what}: the answer does not answer the ids asked for")
        out: list[Union[Entity, ScoreError]] = []
        for r in answer.results:
            if r.status == 200 and r.entity is not None:
                out.append(r.entity)
            else:
                message, bare = r.message or "", status_phrase(r.status)
                out.append(refusal(r.status, message, bare, f"object {r.id}"))
        return out

    def listing(self) -> list[ListingEntry]:
        body = self.request(
            "GET", f"{self.settings.storage_url}/listing", "object listing", limit=LISTING_LIMIT
        ).json()
        return [decode(ListingEntry, e, "object listing") for e in body]

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
        its upload (uploadId, parts, resumed) or its refusal (status, errorId, message)."""
        what = f"uploads of {len(wanted)} objects"
        body = {
            "uploads": [
                {"objectId": i, "fileSize": n, "md5": m, "overwrite": o} for i, n, m, o in wanted
            ]
        }
        url = f"{self.settings.storage_url}{UPLOAD_START_PATH}"
        answer = self._batch(UploadStartAnswer, url, body, what)
        if [r.objectId for r in answer.results] != [w[0] for w in wanted]:
            raise NotOffered(f"{what}: the answer does not answer the objects asked for")
        return answer.results

    def upload_finishes(self, done: Sequence[UploadDone]) -> list[Optional[ScoreError]]:
        """Many uploads' sent parts recorded and the uploads completed in one request
        (pyscore's batch extension): each one's error, None if completed, in order."""
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
