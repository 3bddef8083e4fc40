"""Identity providers on loopback for tests: the real OpenID provider of tests/oidc
(oidc-provider on Node) and a small GA4GH passport broker whose JWKS this module serves."""

from __future__ import annotations

import json
import os
import select
import subprocess
import threading
import time
import uuid
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
            timeout=10,
        )
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    def revoke(self, token: str) -> None:
        r = httpx.post(
            f"{self.trusted}/token/revocation",
            data={"token": token},
            auth=("researcher", "researcher-secret"),
            timeout=10,
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
    deadline, seen = time.monotonic() + 30, b""
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


@dataclass
class Broker:
    """A passport broker and visa issuer: RSA keys, the public ones served as its JWKS at
    `{issuer}/jwks` (and named by its discovery document); `fetches` counts JWKS reads."""

    issuer: str = ""
    keys: dict[str, Any] = field(default_factory=dict)  # kid -> private key, all published
    signing: str = ""
    fetches: int = 0
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

    def sign(self, claims: dict, kid: str | None = None, key: Any = None) -> str:
        kid = kid or self.signing
        return jwt.encode(claims, key or self.keys[kid], algorithm="RS256", headers={"kid": kid})

    def visa(self, subject: str, value: str, lifetime: int = 600, **extra: Any) -> dict:
        now = int(time.time())
        return {
            "iss": self.issuer,
            "sub": subject,
            "iat": now,
            "exp": now + lifetime,
            "jti": uuid.uuid4().hex,
            "ga4gh_visa_v1": {
                "type": "ControlledAccessGrants",
                "value": value,
                "source": "https://dac.test",
                "by": "dac",
                "asserted": now - 3600,
                **extra,
            },
        }

    def passport(self, subject: str, visas: list[str], lifetime: int = 600) -> str:
        now = int(time.time())
        return self.sign(
            {
                "iss": self.issuer,
                "sub": subject,
                "iat": now,
                "exp": now + lifetime,
                "ga4gh_passport_v1": visas,
            }
        )

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def start_broker() -> Broker:
    broker = Broker()
    broker.rotate()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/jwks":
                broker.fetches += 1
                body = broker.jwks()
            elif self.path == "/.well-known/openid-configuration":
                body = {"issuer": broker.issuer, "jwks_uri": f"{broker.issuer}/jwks"}
            elif self.path == "/oauth/token/public_key":  # as Ego serves its key: PEM
                pem = (
                    broker.keys[broker.signing]
                    .public_key()
                    .public_bytes(
                        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                    )
                )
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(pem)))
                self.end_headers()
                self.wfile.write(pem)
                return
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    broker.server = server
    broker.issuer = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return broker
