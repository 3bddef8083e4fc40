"""A test double of the original Java services (score-server, Song and the S3 store behind
them), built from shared/reference/original_wire.md, not from our server.

It answers as the original answers a client, on 127.0.0.1, from memory: Song's legacy
`/entities` (pages with `content[]`/`last`) and analyses with their states; Score's
`/download/{id}` ObjectSpecifications (part URLs that sign their Range, `md5: null`,
`external=true` as one part of size -1), `/download/ping`, `/listing` (unpublished objects
included), `/profile`, the upload protocol (`sourceMd5` marks, 404 without an upload, part
PUTs whose ETag is the MD5, or opaque with `x-amz-server-side-encryption: aws:kms`); its
error shapes (Spring Boot's `{timestamp,status,error,path}`, the plain-text 403, the empty
401 with WWW-Authenticate, 400 for unpublished objects); and presigned URLs checked the way
S3 checks SigV4 ones: the signature covers method, path, host, expiry and, for download parts,
the Range header, so another Range, none, or a HEAD is a 403 SignatureDoesNotMatch.

Every request is recorded (`hits`) so tests can say what the client asked for.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, quote, urlsplit

from tests.loopback import Loopback

MiB = 1024 * 1024
ORIGINAL_PART_SIZE = 20 * MiB  # score-server's upload.partsize floor
SECRET = b"double-s3-secret-key"
ACCESS_KEY = "DOUBLEACCESSKEY"
BUCKET = "/s3/object.bucket"
SENTINEL = "heliograph"
SCOPE_403 = b"Token missing required scope to download controlled-access file"
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
SIGNATURE_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SignatureDoesNotMatch</Code>'
    b"<Message>The request signature we calculated does not match the signature you "
    b"provided. Check your key and signing method.</Message></Error>"
)


@dataclass
class Hit:
    """One request the double answered."""

    method: str
    path: str
    query: dict[str, str]
    range: str | None
    status: int = 0
    sent: int = 0  # body bytes written so far (data responses)
    done: bool = False

    @property
    def data(self) -> bool:
        return self.path.startswith(f"{BUCKET}/data/") and SENTINEL not in self.path


@dataclass
class Stored:
    """A file Song knows; its bytes are in the bucket once `data` is set."""

    object_id: str
    file_name: str
    analysis_id: str
    study: str
    access: str
    data: bytes | None = None
    meta: bool = True  # data/<id>.meta exists (uploaded through score): MD5s are known
    upload_id: str = ""
    part_md5s: list[str] = field(default_factory=list)
    part_sizes: list[int] = field(default_factory=list)
    last_modified: float = field(default_factory=time.time)


@dataclass
class Upload:
    object_id: str
    upload_id: str
    size: int
    md5: str
    part_size: int
    received: dict[int, bytes] = field(default_factory=dict)
    finalized: dict[int, str] = field(default_factory=dict)  # partNumber -> md5

    def layout(self) -> list[tuple[int, int]]:
        return _even(self.size, self.part_size)


class OriginalPlatform:
    def __init__(self, part_size: int = ORIGINAL_PART_SIZE, kms: bool = False) -> None:
        self.part_size = part_size
        self.kms = kms
        self.rate = 0.0  # bytes per second per data response (0: as fast as possible)
        self.endless: set[str] = set()  # paths answered with a body that never ends
        self.tokens: dict[str, set[str]] = {}
        self.files: dict[str, Stored] = {}
        self.analyses: dict[str, tuple[str, str]] = {}  # analysisId -> (study, state)
        self.uploads: dict[str, Upload] = {}
        self.hits: list[Hit] = []
        self.advertise: dict[str, str] = {}  # headers of every answer (e.g. an older pyscore's)
        self.lock = threading.Lock()
        self.loopback = Loopback(self._handle)
        self.port, self.url = self.loopback.port, self.loopback.url

    def close(self) -> None:
        self.loopback.close()

    def __enter__(self) -> OriginalPlatform:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def client_env(self, token: str | None = None) -> dict[str, str]:
        """score-client's environment for talking to the double (as tests.conftest.Server)."""
        return {
            "METADATA_URL": self.url,
            "STORAGE_URL": self.url,
            "ACCESSTOKEN": token or "",
            "SCORE_CLIENT_CONF_DIR": "/nonexistent/score-client-conf",
        }

    # -- setting up what it serves ---------------------------------------------------------
    def token(self, *scopes: str) -> str:
        token = uuid.uuid4().hex
        self.tokens[token] = set(scopes)
        return token

    def analysis(self, study: str, state: str = "PUBLISHED") -> str:
        analysis_id = str(uuid.uuid4())
        self.analyses[analysis_id] = (study, state)
        return analysis_id

    def add(
        self,
        analysis_id: str,
        file_name: str,
        data: bytes | None,
        access: str = "controlled",
        meta: bool = True,
    ) -> str:
        """A file of an analysis; with `data`, its object is in the bucket (as if uploaded
        through score when `meta`, else put there by other means: no MD5s known)."""
        object_id = str(uuid.uuid4())
        study = self.analyses[analysis_id][0]
        f = Stored(object_id, file_name, analysis_id, study, access)
        self.files[object_id] = f
        if data is not None:
            self._store(f, data, meta, upload_id=object_id)
        return object_id

    def _store(self, f: Stored, data: bytes, meta: bool, upload_id: str) -> None:
        f.data, f.meta, f.upload_id = data, meta, upload_id
        f.part_sizes = [len(p) for p in _chunks(data, self.part_size)]
        f.part_md5s = [hashlib.md5(p).hexdigest() for p in _chunks(data, self.part_size)]
        f.last_modified = time.time()

    def data_gets(self) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if h.data and h.method == "GET"]

    def data_bytes(self) -> int:
        with self.lock:
            return sum(h.sent for h in self.hits if h.data and h.method == "GET")

    def part_ranges(self, object_id: str) -> set[str]:
        """The Range header of each download part of an object, as the spec gives them."""
        f = self.files[object_id]
        return {
            f"bytes={off}-{off + size - 1}"
            for off, size in _layout(len(f.data or b""), f.part_sizes)
        }

    # -- signing, as S3 SigV4 query signing does it (same inputs, simpler digest) ------------
    def _presign(
        self, method: str, path: str, expires: int, rng: str | None, extra: dict | None = None
    ) -> str:
        now = time.gmtime()
        query = {
            **(extra or {}),
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Date": time.strftime("%Y%m%dT%H%M%SZ", now),
            "X-Amz-SignedHeaders": "host;range" if rng else "host",
            "X-Amz-Expires": str(expires),
            "X-Amz-Credential": f"{ACCESS_KEY}/{time.strftime('%Y%m%d', now)}/us-east-1/s3/"
            "aws4_request",
        }
        query["X-Amz-Signature"] = self._signature(
            method, path, f"127.0.0.1:{self.port}", rng, query
        )
        return f"{self.url}{path}?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())

    @staticmethod
    def _signature(method: str, path: str, host: str, rng: str | None, query: dict) -> str:
        signed = [k for k in sorted(query) if k != "X-Amz-Signature"]
        text = "\n".join(
            [method, path, "&".join(f"{k}={query[k]}" for k in signed), f"host:{host}"]
            + ([f"range:{rng}"] if rng is not None else [])
        )
        return hmac.new(SECRET, text.encode(), hashlib.sha256).hexdigest()

    def _verify(self, h: BaseHTTPRequestHandler, path: str, query: dict[str, str]) -> str | None:
        """None if the request matches its signature and has not expired, else the S3 error
        code to answer with."""
        if "X-Amz-Signature" not in query:
            return "AccessDenied"
        heads = query.get("X-Amz-SignedHeaders", "").split(";")
        rng = (h.headers.get("Range") or "") if "range" in heads else None
        method = h.command
        expected = self._signature(method, path, h.headers.get("Host", ""), rng, query)
        if not hmac.compare_digest(expected, query["X-Amz-Signature"]):
            return "SignatureDoesNotMatch"
        signed_at = calendar.timegm(time.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ"))
        if signed_at + int(query["X-Amz-Expires"]) < time.time():
            return "AccessDenied"
        return None

    def _part_url(self, object_id: str, offset: int, size: int) -> str:
        return self._presign(
            "GET", f"{BUCKET}/data/{object_id}", 86400, f"bytes={offset}-{offset + size - 1}"
        )

    def _object_url(self, object_id: str, expires: int = 86400) -> str:
        return self._presign("GET", f"{BUCKET}/data/{object_id}", expires, None)

    # -- the HTTP side ------------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        hit = Hit(h.command, parts.path, query, h.headers.get("Range"))
        with self.lock:
            self.hits.append(hit)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        try:
            if parts.path in self.endless:
                self._endless(h, hit)
            elif parts.path.startswith(f"{BUCKET}/"):
                self._s3(h, hit, parts.path, query, body)
            elif parts.path.startswith(("/entities", "/studies/")):
                self._song(h, hit, parts.path, query)
            else:
                self._score(h, hit, parts.path, query)
        except BrokenPipeError:
            h.close_connection = True
        except ConnectionResetError:
            h.close_connection = True
        finally:
            hit.done = True

    def _send(
        self,
        h: BaseHTTPRequestHandler,
        hit: Hit,
        status: int,
        body: bytes = b"",
        ctype: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        hit.status = status
        h.send_response(status)
        if ctype:
            h.send_header("Content-Type", ctype)
        for k, v in {**self.advertise, **(headers or {})}.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def _json(self, h, hit, value, status: int = 200) -> None:
        self._send(h, hit, status, json.dumps(value).encode(), "application/json")

    def _spring(self, h, hit, status: int, path: str) -> None:
        """Spring Boot 2.6's error body: no message."""
        names = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000+00:00", time.gmtime())
        value = {"timestamp": now, "status": status, "error": names.get(status, ""), "path": path}
        self._json(h, hit, value, status)

    def _song_error(self, h, hit, status: int, error_id: str, message: str) -> None:
        now = time.time()
        value = {
            "errorId": error_id,
            "httpStatusName": {404: "NOT_FOUND", 400: "BAD_REQUEST"}.get(status, "ERROR"),
            "httpStatusCode": status,
            "message": message,
            "requestUrl": f"{self.url}{h.path}",
            "debugMessage": "",
            "timestamp": int(now * 1000),
            "datetime": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now)),
            "stackTrace": [],
        }
        self._json(h, hit, value, status)

    def _endless(self, h, hit) -> None:
        """A body that never ends (chunked), until the client goes away."""
        hit.status = 200
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        chunk = b'{"id": "' + b"x" * 65536
        frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            h.wfile.write(frame)
            hit.sent += len(chunk)
        h.close_connection = True

    # -- Song ---------------------------------------------------------------------------------
    def _entity(self, f: Stored) -> dict:
        return {
            "id": f.object_id,
            "gnosId": f.analysis_id,
            "fileName": f.file_name,
            "projectCode": f.study,
            "access": f.access,
            "createdTime": int(f.last_modified * 1000),
        }

    def _song(self, h, hit, path: str, query: dict[str, str]) -> None:
        m = re.fullmatch(r"/entities/([^/]+)", path)
        if m:
            f = self.files.get(m[1])
            if f is None:
                self._song_error(
                    h,
                    hit,
                    404,
                    "legacy.entity.not.found",
                    f"The LegacyEntity with id '{m[1]}' does not exist",
                )
            else:
                self._json(h, hit, self._entity(f))
            return
        if path.rstrip("/") == "/entities":
            self._entity_page(h, hit, query)
            return
        m = re.fullmatch(r"/studies/([^/]+)/analysis(?:/([^/]+))?", path)
        if m:
            study, analysis_id = m[1], m[2]
            if analysis_id is None:
                states = set(query.get("analysisStates", "PUBLISHED").split(","))
                found = [
                    self._analysis(a)
                    for a, (s, state) in sorted(self.analyses.items())
                    if s == study and state in states
                ]
                self._json(h, hit, found)
            elif self.analyses.get(analysis_id, ("", ""))[0] == study:
                self._json(h, hit, self._analysis(analysis_id))
            else:
                self._song_error(
                    h,
                    hit,
                    404,
                    "analysis.id.not.found",
                    f"The analysisId '{analysis_id}' was not found",
                )
            return
        self._song_error(h, hit, 404, "not.found", f"No endpoint {path}")

    def _analysis(self, analysis_id: str) -> dict:
        study, state = self.analyses[analysis_id]
        files = [f for f in self.files.values() if f.analysis_id == analysis_id]
        return {
            "analysisId": analysis_id,
            "studyId": study,
            "analysisState": state,
            "analysisType": {"name": "sequencingRead", "version": 1},
            "files": [
                {
                    "objectId": f.object_id,
                    "fileName": f.file_name,
                    "fileAccess": f.access,
                    "fileSize": len(f.data or b""),
                }
                for f in files
            ],
        }

    def _entity_page(self, h, hit, query: dict[str, str]) -> None:
        page, size = int(query.get("page", 0)), int(query.get("size", 20))
        probe = {
            k: query[k] for k in ("id", "gnosId", "fileName", "projectCode", "access") if k in query
        }
        rows = [
            self._entity(f)
            for f in sorted(self.files.values(), key=lambda f: f.object_id)
            if all(self._entity(f)[k] == v for k, v in probe.items())
        ]
        wanted = parse_qs(urlsplit(h.path).query).get("fields")
        if wanted:
            rows = [{k: r[k] for k in wanted if k in r} for r in rows]
        content = rows[page * size : (page + 1) * size]
        pages = max(1, -(-len(rows) // size))
        self._json(
            h,
            hit,
            {
                "content": content,
                "pageable": {"pageNumber": page, "pageSize": size, "offset": page * size},
                "totalElements": len(rows),
                "totalPages": pages,
                "last": page >= pages - 1,
                "size": size,
                "number": page,
                "numberOfElements": len(content),
                "first": page == 0,
                "empty": not content,
            },
        )

    # -- Score ----------------------------------------------------------------------------------
    def _scopes(self, h, hit, path: str) -> set[str] | None:
        """The token's scopes (empty: anonymous); None after answering 401 to a bad token."""
        auth = h.headers.get("Authorization", "")
        if not auth:
            return set()
        token = auth.removeprefix("Bearer ").strip()
        if token in self.tokens:
            return self.tokens[token]
        hit.status = 401
        h.send_response(401)
        h.send_header(
            "WWW-Authenticate",
            'Bearer error="invalid_token", error_description="Invalid access token"',
        )
        h.send_header("Content-Length", "0")
        h.end_headers()
        return None

    @staticmethod
    def _may(scopes: set[str], study: str, action: str) -> bool:
        return f"score.{action}" in scopes or f"PROGRAMDATA-{study}.{action}" in scopes

    def _score(self, h, hit, path: str, query: dict[str, str]) -> None:
        if path == "/profile":
            self._send(h, hit, 200, b"s3", "text/plain")
            return
        scopes = self._scopes(h, hit, path)
        if scopes is None:
            return
        if path == "/download/ping":
            self._send(h, hit, 200, self._object_url(SENTINEL, 300).encode(), "text/plain")
            return
        if path == "/listing":
            if not scopes:
                self._spring(h, hit, 401, path)
                return
            self._json(
                h,
                hit,
                [
                    {
                        "id": f.object_id,
                        "lastModified": int(f.last_modified * 1000),
                        "size": len(f.data),
                    }
                    for f in self.files.values()
                    if f.data is not None
                ],
            )
            return
        m = re.fullmatch(r"/download/([^/]+)", path)
        if m and h.command == "GET":
            self._download(h, hit, m[1], scopes, query)
            return
        m = re.fullmatch(r"/upload/([^/]+)(/uploads|/parts|/status|/recovery)?", path)
        if m:
            self._upload(h, hit, m[1], m[2] or "", scopes, query)
            return
        self._spring(h, hit, 404, path)

    def _download(self, h, hit, object_id: str, scopes: set[str], query: dict[str, str]) -> None:
        path = f"/download/{object_id}"
        f = self.files.get(object_id)
        if f is None or f.data is None:
            self._spring(h, hit, 404, path)
            return
        if f.access == "controlled" and not self._may(scopes, f.study, "READ"):
            self._send(h, hit, 403, SCOPE_403, "text/plain;charset=UTF-8")
            return
        if self.analyses[f.analysis_id][1] != "PUBLISHED":
            self._spring(h, hit, 400, path)
            return
        size = len(f.data)
        offset, length = int(query.get("offset", 0)), int(query.get("length", -1))
        external = query.get("external", "false") == "true"
        md5 = hashlib.md5(f.data).hexdigest() if f.meta else None
        if external:
            parts = [
                {
                    "partNumber": 1,
                    "partSize": -1,
                    "offset": 0,
                    "url": self._object_url(object_id),
                    "md5": None,
                }
            ]
            size_out = -1 if f.meta else size
        else:
            whole = offset == 0 and length < 0
            end = size if length < 0 else offset + length
            if end > size:
                self._spring(h, hit, 500, path)
                return
            layout = (
                _layout(size, f.part_sizes)
                if whole and f.meta
                else _even(end - offset, self.part_size)
            )
            if not whole:
                layout = [(offset + o, n) for o, n in layout]
            parts = []
            for number, (off, n) in enumerate(layout, start=1):
                part = {
                    "partNumber": number,
                    "partSize": n,
                    "offset": off,
                    "url": self._part_url(object_id, off, n),
                    "md5": None,
                }
                if whole and f.meta:
                    part["sourceMd5"] = f.part_md5s[number - 1]
                parts.append(part)
            size_out = end - offset
        self._json(
            h,
            hit,
            {
                "objectKey": f"data/{object_id}",
                "objectId": object_id,
                "uploadId": f.upload_id if f.meta else object_id,
                "parts": parts,
                "objectSize": size_out,
                "objectMd5": md5,
            },
        )

    def _upload(self, h, hit, object_id: str, what: str, scopes: set[str], query: dict) -> None:
        path = f"/upload/{object_id}{what}"
        f = self.files.get(object_id)
        if f is None:
            self._spring(h, hit, 404, path)
            return
        if not self._may(scopes, f.study, "WRITE"):
            self._spring(h, hit, 403, path)
            return
        up = self.uploads.get(object_id)
        method = h.command
        if what == "" and method == "GET":
            self._json(h, hit, f.data is not None and f.meta)
        elif what == "/status" and method == "GET":
            if up is None:
                self._spring(h, hit, 404, path)
            elif int(query.get("fileSize", up.size)) != up.size:
                self._spring(h, hit, 400, path)
            else:
                self._json(
                    h,
                    hit,
                    {
                        "objectId": object_id,
                        "uploadId": up.upload_id,
                        "parts": self._upload_parts(up),
                    },
                )
        elif what == "/uploads" and method == "POST":
            overwrite = query.get("overwrite", "false") == "true"
            if self.analyses[f.analysis_id][1] != "UNPUBLISHED" or (
                f.data is not None and not overwrite
            ):
                self._spring(h, hit, 400, path)
                return
            up = Upload(
                object_id,
                uuid.uuid4().hex,
                int(query["fileSize"]),
                query.get("md5", ""),
                self.part_size,
            )
            self.uploads[object_id] = up
            self._json(
                h,
                hit,
                {
                    "objectKey": f"data/{object_id}",
                    "objectId": object_id,
                    "uploadId": up.upload_id,
                    "parts": self._upload_parts(up),
                    "objectSize": up.size,
                    "objectMd5": up.md5 or None,
                },
            )
        elif what == "/parts" and method == "POST":
            if up is None or query.get("uploadId") != up.upload_id:
                self._spring(h, hit, 400, path)
                return
            up.finalized[int(query["partNumber"])] = query["md5"]
            self._send(h, hit, 200)
        elif what == "/parts" and method == "DELETE":
            if up is not None:
                up.finalized.pop(int(query["partNumber"]), None)
            self._send(h, hit, 200)
        elif what == "" and method == "POST":
            count = len(up.layout()) if up else 0
            if up is None or query.get("uploadId") != up.upload_id or len(up.finalized) != count:
                self._spring(h, hit, 400, path)
                return
            data = b"".join(up.received[n] for n in range(1, count + 1))
            self._store(f, data, True, up.upload_id)
            del self.uploads[object_id]
            self._send(h, hit, 200)
        elif what == "/recovery" and method == "POST":
            ok = up is not None and int(query.get("fileSize", -1)) == up.size
            self._send(h, hit, 200) if ok else self._spring(h, hit, 400, path)
        elif what == "" and method == "DELETE":
            self.uploads.pop(object_id, None)
            self._send(h, hit, 200)
        else:
            self._spring(h, hit, 405, path)

    def _upload_parts(self, up: Upload) -> list[dict]:
        """Parts with PUT URLs; finished ones marked with `sourceMd5`, as the original's
        markCompletedParts does (`md5` stays null)."""
        parts = []
        for number, (off, n) in enumerate(up.layout(), start=1):
            part = {
                "partNumber": number,
                "partSize": n,
                "offset": off,
                "url": self._presign(
                    "PUT",
                    f"{BUCKET}/data/{up.object_id}",
                    6 * 86400,
                    None,
                    {"partNumber": str(number), "uploadId": up.upload_id},
                ),
                "md5": None,
            }
            if number in up.finalized:
                part["sourceMd5"] = up.finalized[number]
            parts.append(part)
        return parts

    # -- S3 -------------------------------------------------------------------------------------
    def _s3(self, h, hit, path: str, query: dict[str, str], body: bytes) -> None:
        problem = self._verify(h, path, query)
        if problem:
            xml = (
                SIGNATURE_XML
                if problem == "SignatureDoesNotMatch"
                else (
                    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
                    b"<Message>Request has expired</Message></Error>"
                )
            )
            self._send(h, hit, 403, xml, "application/xml")
            return
        key = path[len(BUCKET) + len("/data/") :]
        if h.command == "PUT":
            up = self.uploads.get(key)
            if up is None or query.get("uploadId") != up.upload_id:
                self._send(
                    h, hit, 404, b"<Error><Code>NoSuchUpload</Code></Error>", "application/xml"
                )
                return
            number = int(query["partNumber"])
            up.received[number] = body
            md5 = hashlib.md5(body).hexdigest()
            if self.kms:  # SSE-KMS: the ETag is not the MD5 of the part
                headers = {
                    "ETag": f'"{hashlib.sha256(body).hexdigest()[:32]}"',
                    "x-amz-server-side-encryption": "aws:kms",
                }
            else:
                headers = {"ETag": f'"{md5}"'}
            self._send(h, hit, 200, headers=headers)
            return
        if key == SENTINEL:
            self._send(h, hit, 200, b"heliograph", "application/octet-stream")
            return
        f = self.files.get(key)
        if f is None or f.data is None:
            self._send(h, hit, 404, b"<Error><Code>NoSuchKey</Code></Error>", "application/xml")
            return
        self._object(h, hit, f.data)

    def _object(self, h, hit, data: bytes) -> None:
        size = len(data)
        start, end, status = 0, size - 1, 200
        m = RANGE.match(hit.range or "")
        if m and (m[1] or m[2]):
            if m[1]:
                start, end = int(m[1]), min(int(m[2]) if m[2] else size - 1, size - 1)
            else:
                start, end = max(0, size - int(m[2])), size - 1
            if start >= size or start > end:
                self._send(h, hit, 416, headers={"Content-Range": f"bytes */{size}"})
                return
            status = 206
        hit.status = status
        h.send_response(status)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(end - start + 1))
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("ETag", f'"{hashlib.md5(data).hexdigest()}"')
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        h.end_headers()
        if h.command == "HEAD":
            return
        began = time.monotonic()
        pos = start
        while pos <= end:
            chunk = data[pos : min(end + 1, pos + 64 * 1024)]
            h.wfile.write(chunk)
            pos += len(chunk)
            with self.lock:
                hit.sent += len(chunk)
            if self.rate:
                ahead = hit.sent / self.rate - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(min(ahead, 1.0))  # bounded: a slowed response still moves


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def _even(size: int, part_size: int) -> list[tuple[int, int]]:
    """(offset, size) of `part_size` parts covering `size` bytes, the last one shorter."""
    return [(off, min(part_size, size - off)) for off in range(0, size, part_size)]


def _layout(size: int, part_sizes: list[int]) -> list[tuple[int, int]]:
    """(offset, size) of parts of the given sizes covering `size` bytes."""
    out, off = [], 0
    for n in part_sizes:
        if off >= size:
            break
        n = min(n, size - off)
        out.append((off, n))
        off += n
    return out
