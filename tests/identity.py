"""Identity providers on loopback for tests: the real OpenID provider of tests/oidc
(oidc-provider on Node) and a small GA4GH passport broker whose JWKS this module serves."""

from __future__ import annotations

import json
import os
import select
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.conftest import free_port, need

OIDC_DIR = Path(__file__).parent / "oidc"
RESOURCE = "https://pyscore.test"  # the audience the trusted provider's JWTs carry


@dataclass
class Provider:
    """Two running oidc-provider instances: `trusted` and `stranger` (an issuer the platform
    does not trust), each with the clients researcher/researcher-secret and
    pyscore/pyscore-secret."""

    trusted: str
    stranger: str
    process: subprocess.Popen

    def token(self, scope: str, resource: str | None = RESOURCE, issuer: str = "") -> str:
        data = {"grant_type": "client_credentials", "scope": scope}
        if resource:
            data["resource"] = resource
        r = httpx.post(
            f"{issuer or self.trusted}/token",
            data=data,
            auth=("researcher", "researcher-secret"),
            timeout=30,
        )
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    def refresh_token(self) -> str:
        """A refresh token of the researcher's (with every scope), as a login would give."""
        r = httpx.post(
            f"{self.trusted}/token",
            data={"grant_type": "urn:pyscore:test:refresh_token"},
            auth=("researcher", "researcher-secret"),
            timeout=30,
        )
        assert r.status_code == 200, r.text
        return r.json()["refresh_token"]

    def revoke(self, token: str) -> None:
        r = httpx.post(
            f"{self.trusted}/token/revocation",
            data={"token": token},
            auth=("researcher", "researcher-secret"),
            timeout=30,
        )
        assert r.status_code == 200, r.text


def start_provider() -> Provider:
    node = need("node")
    if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        message = (
            "oidc-provider is not installed: run `npm ci` in tests/oidc (scripts/test.sh does)"
        )
        if os.environ.get("PYSCORE_REQUIRE_TOOLS"):
            pytest.fail(message)
        pytest.skip(message)
    ports = free_port(), free_port()
    process = subprocess.Popen(
        [node, str(OIDC_DIR / "provider.mjs"), *map(str, ports)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=OIDC_DIR,
    )
    assert process.stdout is not None
    deadline, seen = time.monotonic() + 60, b""  # a bound for a busy machine
    while b"ready" not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or process.poll() is not None:
            process.kill()
            raise RuntimeError(f"the OpenID provider did not start: {seen.decode()}")
        if select.select([process.stdout], [], [], min(left, 0.5))[0]:
            seen += os.read(process.stdout.fileno(), 4096)
    # leave its further output unread: nothing more of note, and a full pipe would block it
    threading.Thread(target=process.stdout.read, daemon=True).start()
    a, b = (f"http://127.0.0.1:{p}" for p in ports)
    return Provider(a, b, process)


HOLD_LIMIT = 60.0  # seconds a held JWKS answer lasts at most (a test's own bound)
TRICKLE = 0.2  # seconds between the bytes of a held answer


@dataclass
class Broker:
    """A passport broker and visa issuer (or an OpenID provider of JWTs we sign as we like):
    RSA keys, the public ones served as its JWKS at `{issuer}/jwks` (and named by its
    discovery document); `fetches` counts JWKS reads. `jwks_status` other than 200: its JWKS
    answers that error; `hold`: its JWKS answers only once that event is set (or after
    HOLD_LIMIT), and meanwhile sends a byte now and then, so no reader's timeout ends the
    read: it hangs until the test ends it, however slow the machine. `held`: the held
    answers whose reader is still there."""

    issuer: str = ""
    keys: dict[str, Any] = field(default_factory=dict)  # kid -> private key, all published
    signing: str = ""
    fetches: int = 0
    jwks_status: int = 200
    hold: threading.Event | None = None
    held: int = 0
    server: ThreadingHTTPServer | None = None

    def rotate(self) -> str:
        """A new key signs from now on (the old ones stay published)."""
        kid = f"broker-{len(self.keys) + 1}"
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.signing = kid
        return kid

    def jwks(self) -> dict:
        keys = []
        for kid, key in self.keys.items():
            jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    def sign(
        self, claims: dict, kid: str | None = None, key: Any = None, algorithm: str = "RS256"
    ) -> str:
        kid = kid or self.signing
        return jwt.encode(claims, key or self.keys[kid], algorithm=algorithm, headers={"kid": kid})

    def claims(self, subject: str | None, lifetime: int = 600, **extra: Any) -> dict:
        """A JWT's claims from this issuer (`subject` None: no `sub`)."""
        now = int(time.time())
        subject_claim = {} if subject is None else {"sub": subject}
        return {"iss": self.issuer, **subject_claim, "iat": now, "exp": now + lifetime, **extra}

    def access_token(self, scope: str, subject: str = "idp-user", **extra: Any) -> str:
        """An OpenID access token for this platform (audience RESOURCE) with `scope`."""
        return self.sign(self.claims(subject, aud=RESOURCE, scope=scope, **extra))

    def visa(self, subject: str, value: str, lifetime: int = 600, **extra: Any) -> dict:
        now = int(time.time())
        visa = {
            "type": "ControlledAccessGrants",
            "value": value,
            "source": "https://dac.test",
            "by": "dac",
            "asserted": now - 3600,
            **extra,
        }
        return self.claims(subject, lifetime, jti=uuid.uuid4().hex, ga4gh_visa_v1=visa)

    def passport(
        self,
        subject: str | None,
        visas: list[str],
        lifetime: int = 600,
        audience: str | None = RESOURCE,
        kid: str | None = None,
    ) -> str:
        """A passport for `audience` (None: no `aud`), signed with `kid` (made up: the
        signing key, under that name)."""
        audience_claim = {} if audience is None else {"aud": audience}
        claims = self.claims(subject, lifetime, ga4gh_passport_v1=visas, **audience_claim)
        key = self.keys.get(kid or self.signing, self.keys[self.signing])
        return self.sign(claims, kid, key)

    def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def start_broker() -> Broker:
    broker = Broker()
    broker.rotate()
    lock = threading.Lock()

    def count(field: str, step: int) -> None:
        with lock:
            setattr(broker, field, getattr(broker, field) + step)

    def answer(path: str) -> tuple[int, str, bytes]:
        if path == "/jwks":
            if broker.jwks_status != 200:
                return broker.jwks_status, "application/json", b'{"error": "unavailable"}'
            return 200, "application/json", json.dumps(broker.jwks()).encode()
        if path == "/.well-known/openid-configuration":
            body = {"issuer": broker.issuer, "jwks_uri": f"{broker.issuer}/jwks"}
            return 200, "application/json", json.dumps(body).encode()
        if path == "/oauth/token/public_key":  # as Ego serves its key: PEM
            public = broker.keys[broker.signing].public_key()
            pem = public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            return 200, "text/plain", pem
        return 404, "text/plain", b"not found"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/jwks":
                count("fetches", 1)
                if broker.hold is not None:
                    self.held(broker.hold)
                    return
            status, kind, data = answer(self.path)
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def held(self, hold: threading.Event) -> None:
            """Status and headers at once, a space (JSON's whitespace) every TRICKLE seconds
            until `hold` is set, then the keys; no length: the body ends with the connection."""
            count("held", 1)
            try:
                self.send_response(broker.jwks_status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                ends = time.monotonic() + HOLD_LIMIT
                while not hold.wait(TRICKLE) and time.monotonic() < ends:
                    self.wfile.write(b" ")
                self.wfile.write(answer(self.path)[2])
            except OSError:
                pass  # its reader gave up
            finally:
                count("held", -1)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    broker.server = server
    broker.issuer = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return broker


@dataclass
class Endpoint:
    """A local endpoint that answers each POST (an introspection endpoint, Ego's
    check_api_key) as `answer(path with query, form body)` says: (status, JSON body).
    `calls`: the path and Authorization header of each POST."""

    url: str
    server: ThreadingHTTPServer
    calls: list[tuple[str, str]] = field(default_factory=list)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_endpoint(answer: Callable[[str, str], tuple[int, Any]]) -> Endpoint:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            form = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            endpoint.calls.append((self.path, self.headers.get("Authorization", "")))
            status, body = answer(self.path, form)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    endpoint = Endpoint(f"http://127.0.0.1:{server.server_address[1]}", server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return endpoint


def start_ego(keys: dict[str, dict]) -> Endpoint:
    """Ego's `POST /o/check_api_key?apiKey=...` as Ego's own code answers it
    (overture-stack/ego ApiKeyController.checkApiKey, TokenService.checkApiKey): 207
    Multi-Status with ApiKeyScopeResponse {user_id, exp: seconds left, scope} (Ego before
    5.x also wrote client_id: the *asking* application's) for a key of `keys` (its answer
    body), else 401 with {"error": "Invalid apiKey: ..."}."""

    def answer(path: str, form: str) -> tuple[int, Any]:
        key = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query).get("apiKey", [""])[0]
        if key not in keys:
            return 401, {"error": "Invalid apiKey: ApiKey not found"}
        return 207, keys[key]

    return start_endpoint(answer)
