"""Calling a running platform's Song and Score HTTP APIs from tests: Song-shaped errors,
bearer headers, tokens minted in-process, and analyses submitted and uploaded over HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from pathlib import Path

import httpx
from sqlalchemy.orm import Session

from tests.publish import md5

SONG_ERROR_KEYS = {
    "errorId",
    "httpStatusName",
    "httpStatusCode",
    "message",
    "requestUrl",
    "debugMessage",
    "timestamp",
    "datetime",
    "stackTrace",
}


def song_error(
    response: httpx.Response,
    status: int,
    error_id: str | None = None,
    *mentions: str,
    every_field: bool = False,
) -> dict:
    """Assert `response` is a Song error: the status, JSON (never HTML), all 9 SongError keys,
    the errorId (unless None), and a message naming each of `mentions`; `timestamp` a long
    (epoch ms), as SongError has it. With every_field, also a stackTrace list, a timestamp
    of now, and the request's full URL (with its query) in requestUrl."""
    assert response.status_code == status, f"{response.status_code}: {response.text[:500]}"
    assert response.headers.get("content-type", "").startswith("application/json"), (
        response.headers.get("content-type")
    )
    assert not response.text.lstrip().startswith("<"), "error body is HTML"
    body = response.json()
    assert isinstance(body, dict), body
    missing = SONG_ERROR_KEYS - set(body)
    assert not missing, f"SongError keys missing: {sorted(missing)} in {body}"
    assert body["httpStatusCode"] == status
    assert body["httpStatusName"] == HTTPStatus(status).name
    assert isinstance(body["timestamp"], int), body["timestamp"]
    if every_field:
        assert isinstance(body["stackTrace"], list)
        assert abs(body["timestamp"] / 1000 - time.time()) < 600, body["timestamp"]
        assert isinstance(body["datetime"], str) and body["datetime"][:4].isdigit()
        assert body["requestUrl"] == str(response.request.url), body["requestUrl"]
    if error_id is not None:
        assert body["errorId"] == error_id, body
    for text in mentions:
        assert text in body["message"], f"{text!r} not in message {body['message']!r}"
    return body


def bearer(token: str | None) -> dict[str, str]:
    """The Authorization header for a token; none without one."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def drs_access_url(base_url: str, object_id: str, token: str | None) -> str:
    """The signed URL DRS hands out for an object (asserting it does)."""
    answer = httpx.get(
        f"{base_url}/ga4gh/drs/v1/objects/{object_id}/access/https",
        headers=bearer(token),
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["url"]


@contextmanager
def database(data_dir: Path) -> Iterator[Session]:
    """A session on a platform's database, opened in-process (the server may be running),
    committed at the end of the block."""
    from pyscore.server.db import Database
    from pyscore.server.settings import Settings

    db = Database(Settings.load(data_dir).database_url)
    try:
        with db.session() as s:
            yield s
    finally:
        db.engine.dispose()


def mint_tokens(data_dir: Path, scopes: dict[str, str]) -> dict[str, str]:
    """Tokens (user -> secret, one scope each) made in-process with the server's own token
    function and database: the same rows `score-server token create` writes, without its
    ~1 s start-up per token."""
    from pyscore.server import auth

    with database(data_dir) as s:
        return {user: auth.create_token(s, user, [scope])[1] for user, scope in scopes.items()}


def enlarge(data_dir: Path, object_id: str, size: int) -> None:
    """Make a stored object `size` bytes long in the platform's eyes, without the bytes: a
    specification is written from the database's rows (its parts, their URLs), never from
    the store."""
    from pyscore.server.tables import File, StoredObject

    with database(data_dir) as s:
        obj, f = s.get(StoredObject, object_id), s.get(File, object_id)
        assert obj is not None and f is not None, object_id
        obj.size = f.file_size = size
        obj.part_md5s = []


def submit(
    http: httpx.Client, payload: dict, headers: dict[str, str] | None = None
) -> tuple[str, dict[str, str]]:
    """POST a payload to /submit/{its studyId}, which must take it; the new analysis id and
    its files' object ids by file name."""
    study = payload["studyId"]
    r = http.post(f"/submit/{study}", json=payload, headers=headers)
    assert r.status_code == 200, r.text
    analysis_id = r.json()["analysisId"]
    files = http.get(f"/studies/{study}/analysis/{analysis_id}/files")
    assert files.status_code == 200, files.text
    return analysis_id, {f["fileName"]: f["objectId"] for f in files.json()}


def upload(
    http: httpx.Client, object_id: str, data: bytes, headers: dict[str, str] | None = None
) -> None:
    """Upload one object through the storage API as score-client does: initiate, PUT each
    part to its signed URL (the store's ETag must be the part's MD5), finalize each part,
    complete. Every step must succeed."""
    r = http.post(
        f"/upload/{object_id}/uploads",
        headers=headers,
        params={"fileSize": len(data), "md5": md5(data)},
    )
    assert r.status_code == 200, r.text
    spec = r.json()
    for part in spec["parts"]:
        chunk = data[part["offset"] : part["offset"] + part["partSize"]]
        put = httpx.put(part["url"], content=chunk)
        assert put.status_code == 200, put.text
        assert put.headers["ETag"].strip('"') == md5(chunk)
        r = http.post(
            f"/upload/{object_id}/parts",
            headers=headers,
            params={
                "uploadId": spec["uploadId"],
                "partNumber": part["partNumber"],
                "md5": md5(chunk),
                "etag": put.headers["ETag"],
            },
        )
        assert r.status_code == 200, r.text
    r = http.post(f"/upload/{object_id}", params={"uploadId": spec["uploadId"]}, headers=headers)
    assert r.status_code == 200, r.text
