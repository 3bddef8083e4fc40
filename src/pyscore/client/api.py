"""Calls to the metadata (Song) and storage (Score) APIs, with auth, retries and clear errors.

Object bytes never go through here: transfer.py fetches them from the signed part URLs.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx

from pyscore import __version__
from pyscore.client import tls
from pyscore.client.retry import Transient, retrying
from pyscore.config import ClientSettings
from pyscore.errors import (
    AuthError,
    NotFoundError,
    ScoreError,
    ServerError,
    UnreachableError,
    UsageError,
)
from pyscore.models import Entity, ListingEntry, ObjectSpecification, UploadProgress, from_wire

INDEX_EXTENSIONS = (".bai", ".crai", ".tbi", ".csi", ".idx", ".fai")
USER_AGENT = f"pyscore-score-client/{__version__}"


def server_message(response: httpx.Response) -> str:
    """The human part of an error answer: Song's `message`, htsget's, or the first text line."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        text = response.text.strip().splitlines()
        return text[0][:200] if text else response.reason_phrase
    if isinstance(body, dict):
        if isinstance(body.get("htsget"), dict):
            body = body["htsget"]
        for key in ("message", "msg", "error"):
            if isinstance(body.get(key), str):
                return body[key]
    return str(body)[:200]


def error_for(response: httpx.Response, what: str) -> ScoreError:
    message = server_message(response)
    status = response.status_code
    if status == 401:
        return AuthError(
            f"{what}: access token rejected ({message}); check accessToken / ACCESSTOKEN"
        )
    if status == 403:
        return AuthError(f"{what}: permission denied: {message}")
    if status == 404:
        return NotFoundError(f"{what}: not found: {message}")
    if status in (400, 422):
        return UsageError(f"{what}: {message}")
    if status >= 500:
        return ServerError(f"{what}: server error {status}: {message}")
    return ScoreError(f"{what}: {message} (HTTP {status})")


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
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        )
        self._store: httpx.Client | None = None
        self.attempts = settings.int("storage.retryNumber")
        self._siblings: dict[str, dict[str, Entity]] = {}
        self._lock = threading.Lock()

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

    def request(
        self, method: str, url: str, what: str, *, ok: tuple[int, ...] = (), **kwargs: Any
    ) -> httpx.Response:
        """One call, retried on transport errors, 5xx and 429; other errors as ScoreErrors."""

        def once() -> httpx.Response:
            try:
                response = self.http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                host = httpx.URL(url).host
                raise Transient() from UnreachableError(
                    f"{what}: cannot reach {host} ({type(exc).__name__}: {exc})"
                )
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
        return from_wire(
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
                yield from_wire(Entity, item, "entity listing")
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
        name = data.fileName.lower()
        stem = name.rsplit(".", 1)[0]
        for ext in INDEX_EXTENSIONS:
            for candidate in (name + ext, stem + ext):
                found = siblings.get(candidate)
                if found is not None and found.id != data.id:
                    return found
        return None

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

    def publish(self, study_id: str, analysis_id: str) -> None:
        self.request(
            "PUT",
            f"{self.settings.metadata_url}/studies/{study_id}/analysis/publish/{analysis_id}",
            f"publishing analysis {analysis_id}",
        )

    # -- storage --------------------------------------------------------------------------
    def ping(self) -> None:
        """--verify-connection: the sentinel URL must be fetchable."""
        url = self.request(
            "GET", f"{self.settings.storage_url}/download/ping", "connection check"
        ).text.strip()
        if url.startswith("http"):
            what = "connection check (object store)"
            try:
                r = self.store.get(url)
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
        response = self.request(
            "GET",
            f"{self.settings.storage_url}/download/{object_id}",
            f"object {object_id}",
            params=params,
        )
        return from_wire(ObjectSpecification, response.json(), f"object {object_id}")

    def listing(self) -> list[ListingEntry]:
        body = self.request("GET", f"{self.settings.storage_url}/listing", "object listing").json()
        return [from_wire(ListingEntry, e, "object listing") for e in body]

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
        return from_wire(UploadProgress, r.json(), f"upload of {object_id}")

    def initiate_upload(
        self, object_id: str, size: int, md5: str, overwrite: bool
    ) -> ObjectSpecification:
        r = self.request(
            "POST",
            f"{self.settings.storage_url}/upload/{object_id}/uploads",
            f"upload of {object_id}",
            params={"fileSize": size, "md5": md5, "overwrite": str(overwrite).lower()},
        )
        return from_wire(ObjectSpecification, r.json(), f"upload of {object_id}")

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

    def cancel_upload(self, object_id: str) -> None:
        self.request(
            "DELETE",
            f"{self.settings.storage_url}/upload/{object_id}",
            f"upload of {object_id}",
            ok=(404,),
        )
