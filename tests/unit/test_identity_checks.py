"""Identity pieces on their own: an issuer's keys followed through rotation without letting
made-up key ids hammer it, Ego's check_api_key, and scopes read from where providers put
them (Ego's context.scope, Keycloak's scope and roles)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pyscore.server.identity import Identity, Refused
from pyscore.server.identity.introspection import Introspector
from pyscore.server.identity.jwks import KeySet
from pyscore.server.identity.jwt import ScopeRules, verify
from tests.identity import start_broker


@pytest.fixture
def broker():
    b = start_broker()
    yield b
    b.stop()


def token(broker, kid: str | None = None) -> str:
    now = int(time.time())
    claims = {"iss": broker.issuer, "sub": "s", "iat": now, "exp": now + 60}
    if kid is None or kid in broker.keys:
        return broker.sign(claims, kid)
    return broker.sign(claims, kid, key=broker.keys[broker.signing])  # an unlisted kid


def test_key_rotation_is_followed_and_refetches_are_rate_limited(broker) -> None:
    # an hour between refetches, so no loop below outlasts it however slow the machine;
    # the hour passing is told to the key set (its last fetch moved back), not waited for
    keys = KeySet(broker.issuer, ttl=24 * 3600, min_refetch=3600)  # found by discovery
    assert verify(token(broker), keys, broker.issuer, None, 0)["sub"] == "s"
    assert broker.fetches == 1
    for i in range(20):  # made-up key ids: refused, and the issuer is not asked again
        with pytest.raises(Refused) as refused:
            verify(token(broker, f"made-up-{i}"), keys, broker.issuer, None, 0)
        assert refused.value.code == "unknown_key"
    assert broker.fetches == 1
    keys.fetched -= 3600  # min_refetch has passed since the last fetch
    broker.rotate()  # the issuer signs with a new key
    assert verify(token(broker), keys, broker.issuer, None, 0)["sub"] == "s"
    assert broker.fetches == 2
    for i in range(20):
        with pytest.raises(Refused):
            verify(token(broker, f"made-up-{i}"), keys, broker.issuer, None, 0)
    assert broker.fetches == 2


def test_ego_jwts_are_checked_with_its_pem_key(broker) -> None:
    """Ego signs user JWTs with one RSA key it serves as PEM, names itself "ego" and puts
    scopes in context.scope; its audience is the applications a user approved."""
    identity = Identity.from_settings(
        {
            "oidc": [
                {
                    "issuer": "ego",
                    "public_key_url": f"{broker.issuer}/oauth/token/public_key",
                    "audience": "*",
                    "scope_claim": "context.scope",
                    "name_claim": "context.user.name",
                }
            ]
        }
    )
    now = int(time.time())
    claims = {
        "iss": "ego",
        "sub": "c0ffee-user",
        "iat": now,
        "exp": now + 60,
        "aud": [],
        "context": {
            "scope": ["PROGRAMDATA-DEMO.READ", "song.READ"],
            "user": {"name": "ada@example.org"},
        },
    }
    got = identity.resolve(broker.sign(claims, kid=None))
    assert got is not None
    assert (got.subject, got.name, got.issuer) == ("c0ffee-user", "ada@example.org", "ego")
    assert got.scopes == {"PROGRAMDATA-DEMO.READ"}
    other = rsa_key()
    with pytest.raises(Refused) as refused:  # signed by anyone else
        identity.resolve(broker.sign(claims, key=other))
    assert refused.value.code == "bad_signature"


def rsa_key():
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Ego(BaseHTTPRequestHandler):
    """Ego's POST /o/check_api_key?apiKey=...: 200 with the key's user and scopes, or 401."""

    calls: list[tuple[str, str]] = []  # noqa: RUF012

    def do_POST(self) -> None:
        key = self.path.partition("apiKey=")[2]
        Ego.calls.append((self.path.split("?")[0], self.headers.get("Authorization", "")))
        if key != "good-key":
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps(
            {
                "user_id": "c0ffee-user",
                "client_id": "score",
                "exp": int(time.time()) + 3600,
                "scope": ["PROGRAMDATA-DEMO.READ", "song.WRITE"],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_ego_api_keys_are_checked_and_cached() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Ego)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/o/check_api_key"
    try:
        ego = Introspector(url, "ego", "score", "score-secret", cache_seconds=60)
        got = ego.check("good-key")
        assert (got.subject, got.scopes) == ("c0ffee-user", {"PROGRAMDATA-DEMO.READ"})
        assert ego.check("good-key") == got and len(Ego.calls) == 1  # cached
        path, auth = Ego.calls[0]
        assert path == "/o/check_api_key" and auth == "Basic c2NvcmU6c2NvcmUtc2VjcmV0"
        with pytest.raises(Refused) as refused:
            ego.check("bad-key")
        assert refused.value.code == "inactive_key"
    finally:
        server.shutdown()
        server.server_close()


def test_scopes_are_read_where_each_provider_puts_them() -> None:
    ego = ScopeRules.parse({"scope_claim": "context.scope"})
    claims = {"context": {"scope": ["PROGRAMDATA-DEMO.READ", "score.WRITE", "song.READ"]}}
    assert ego.scopes(claims) == {"PROGRAMDATA-DEMO.READ", "score.WRITE"}
    keycloak = ScopeRules.parse(
        {
            "scope_claim": ["scope", "realm_access.roles"],
            "scope_map": {"genomics-reader": "score.READ"},
            "scope_patterns": [["^study-(?P<study>[A-Z0-9-]+)-read$", "PROGRAMDATA-{study}.READ"]],
        }
    )
    claims = {
        "scope": "openid profile genomics-reader",
        "realm_access": {"roles": ["study-PACA-CA-read", "study-x y-read", "offline_access"]},
    }
    assert keycloak.scopes(claims) == {"score.READ", "PROGRAMDATA-PACA-CA.READ"}
    strict = ScopeRules.parse({"scope_passthrough": False})
    assert strict.scopes({"scope": "score.ADMIN"}) == set()


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"oidc": [{"issuer": "https://idp.test"}]}, "audience"),
        ({"oidc": [{"issuer": "idp.test", "audience": "x"}]}, "http(s) URL"),
        (
            {"oidc": [{"issuer": "https://idp.test", "audience": "x", "algorithms": ["HS256"]}]},
            "HS256",
        ),
        (
            {"oidc": {"issuer": "https://i.test", "audience": "x", "scope_map": {"a": "root"}}},
            "root",
        ),
        ({"introspection": {"url": "https://ego.test", "style": "magic"}}, "magic"),
        ({"passports": {"brokers": [{"issuer": "https://b.test"}], "patterns": ["x"]}}, "study"),
        ({"ldap": {}}, "unknown"),
    ],
)
def test_mistakes_in_the_settings_are_named(config: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        Identity.from_settings(config)
