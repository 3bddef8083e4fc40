"""Identity pieces on their own: an issuer's keys followed through rotation without letting
made-up key ids hammer it, Ego's check_api_key, and scopes read from where providers put
them (Ego's context.scope, Keycloak's scope and roles)."""

from __future__ import annotations

import threading
import time

import pytest

from pyscore.server.auth import validate_scopes
from pyscore.server.identity import Identity, Refused, Unavailable
from pyscore.server.identity.introspection import Introspector
from pyscore.server.identity.jwks import KeySet
from pyscore.server.identity.jwt import ScopeRules, fits, verify
from tests.identity import start_broker, start_ego, start_endpoint
from tests.mounts import wait_until


@pytest.fixture
def broker():
    b = start_broker()
    yield b
    b.stop()


class Clock:
    """Time that passes only when a test says so (a KeySet's or an Introspector's `clock`):
    ttls, refetch limits and back-offs are checked on any machine, however slow."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def token(broker, kid: str | None = None) -> str:
    now = int(time.time())
    claims = {"iss": broker.issuer, "sub": "s", "iat": now, "exp": now + 60}
    if kid is None or kid in broker.keys:
        return broker.sign(claims, kid)
    return broker.sign(claims, kid, key=broker.keys[broker.signing])  # an unlisted kid


def test_key_rotation_is_followed_and_refetches_are_rate_limited(broker) -> None:
    clock = Clock()  # no time passes in the loops below, however slow the machine
    keys = KeySet(broker.issuer, min_refetch=30, clock=clock)  # found by discovery
    assert verify(token(broker), keys, broker.issuer, None, 0)["sub"] == "s"
    assert broker.fetches == 1
    for i in range(20):  # made-up key ids: refused, and the issuer is not asked again
        with pytest.raises(Refused) as refused:
            verify(token(broker, f"made-up-{i}"), keys, broker.issuer, None, 0)
        assert refused.value.code == "unknown_key"
    assert broker.fetches == 1
    clock.advance(29)  # still within min_refetch of the last fetch: the issuer is not asked
    with pytest.raises(Refused):
        verify(token(broker, "made-up-x"), keys, broker.issuer, None, 0)
    assert broker.fetches == 1
    clock.advance(1)  # min_refetch has passed
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
    assert got.scopes == {"PROGRAMDATA-DEMO.READ", "song.READ"}  # Song's scope names are ours
    other = rsa_key()
    with pytest.raises(Refused) as refused:  # signed by anyone else
        identity.resolve(broker.sign(claims, key=other))
    assert refused.value.code == "bad_signature"


def rsa_key():
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


EGO_USER = "1d2c3b4a-0000-4000-8000-00000000c0ff"  # Ego names a user by a UUID


def test_ego_api_keys_are_checked_and_cached() -> None:
    """Read as Ego writes its answer: 207, `exp` the seconds the key has left (a key with
    0 left is refused, as the original Score does), the user's id the principal (never the
    client_id older Egos echo: that is ours). Its answer is believed for those seconds (on
    the introspector's clock, moved by the test), not a moment longer."""
    scope = ["PROGRAMDATA-DEMO.READ", "song.WRITE"]
    ego = start_ego(
        {
            "good-key": {"user_id": EGO_USER, "exp": 2, "scope": scope},
            "old-ego-key": {"user_id": EGO_USER, "client_id": "score", "exp": 9, "scope": scope},
            "spent-key": {"user_id": EGO_USER, "exp": 0, "scope": scope},
        }
    )
    try:
        clock = Clock()
        introspector = Introspector(
            f"{ego.url}/o/check_api_key", "ego", "score", "score-secret", 60, clock=clock
        )
        for key in ("good-key", "old-ego-key"):
            got = introspector.check(key)
            assert (got.subject, got.name, got.scopes) == (
                EGO_USER,
                EGO_USER,
                {"PROGRAMDATA-DEMO.READ", "song.WRITE"},
            )
        assert introspector.check("good-key") == got and len(ego.calls) == 2  # cached...
        clock.advance(1.9)
        assert introspector.check("good-key") == got and len(ego.calls) == 2
        clock.advance(0.1)  # ...only while the key has seconds left (2)
        assert introspector.check("good-key") == got and len(ego.calls) == 3
        path, auth = ego.calls[0]
        assert path == "/o/check_api_key?apiKey=good-key"
        assert auth == "Basic c2NvcmU6c2NvcmUtc2VjcmV0"
        for key, code in [("bad-key", "inactive_key"), ("spent-key", "expired_token")]:
            with pytest.raises(Refused) as refused:
                introspector.check(key)
            assert refused.value.code == code
    finally:
        ego.stop()


def test_scopes_are_read_where_each_provider_puts_them() -> None:
    ego = ScopeRules.parse({"scope_claim": "context.scope"})
    claims = {"context": {"scope": ["PROGRAMDATA-DEMO.READ", "score.WRITE", "song.READ"]}}
    assert ego.scopes(claims) == {"PROGRAMDATA-DEMO.READ", "score.WRITE", "song.READ"}
    assert ego.scopes({"context": {"scope": ["song.ADMIN", "id.READ"]}}) == set()
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
        (
            {
                "passports": {
                    "brokers": [{"issuer": "https://b.test", "audience": "x"}],
                    "patterns": ["x"],
                }
            },
            "study",
        ),
        ({"passports": {"brokers": [{"issuer": "https://b.test"}]}}, "b.test: set `audience`"),
        (
            {"introspection": {"url": "https://idp.test/introspect"}},
            "introspection: set `audience`",
        ),
        ({"ldap": {}}, "unknown"),
    ],
)
def test_mistakes_in_the_settings_are_named(config: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        Identity.from_settings(config)


@pytest.mark.parametrize(
    "scope", ["ſcore.ADMIN", "score.admın", "PROGRAMDATA-DEMO.READ\n", "PROGRAMDATA-ſ.READ"]
)
def test_scope_words_are_ascii(scope: str) -> None:
    """Scope words match ignoring ASCII case only: letters that fold to ASCII ones (U+017F,
    U+0131, the Kelvin sign) make no scope, for our tokens or anyone else's."""
    with pytest.raises(ValueError, match="unknown scope"):
        validate_scopes([scope])
    assert ScopeRules.parse({}).scopes({"scope": [scope]}) == set()
    assert validate_scopes(["SCORE.admin", "programdata-DEMO.read"])  # ASCII case still folds


def test_an_algorithm_fits_only_keys_of_its_kind() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt import PyJWK
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm

    rsa_jwk = PyJWK(RSAAlgorithm.to_jwk(rsa_key().public_key(), as_dict=True))
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    ec_jwk = PyJWK(ECAlgorithm.to_jwk(p256, as_dict=True))
    assert fits("RS256", rsa_jwk) and fits("PS512", rsa_jwk) and fits("ES256", ec_jwk)
    assert not fits("ES256", rsa_jwk) and not fits("EdDSA", rsa_jwk)
    assert not fits("RS256", ec_jwk) and not fits("ES384", ec_jwk)


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        ({"token_type": "Bearer"}, None),
        ({"typ": "Bearer", "aud": ["account", "https://us.test"]}, None),  # Keycloak
        ({"token_type": "refresh_token"}, "not_access_token"),
        ({"typ": "Refresh"}, "not_access_token"),  # Keycloak
        ({"token_use": "refresh_token"}, "not_access_token"),  # Ory Hydra
        ({}, "not_access_token"),  # oidc-provider's refresh tokens say no type
        ({"token_type": "Bearer", "aud": "https://other.test"}, "wrong_audience"),
        ({"token_type": "Bearer", "aud": None}, "wrong_audience"),
        ({"token_type": "Bearer", "active": "true"}, "inactive_key"),
    ],
)
def test_rfc7662_answers_are_bearers_only_when_access_tokens_for_us(
    answer: dict, code: str | None
) -> None:
    body = {"active": True, "sub": "u1", "aud": "https://us.test", "scope": "score.READ"}
    endpoint = start_endpoint(lambda path, form: (200, {**body, **answer}))
    try:
        introspector = Introspector.parse({"url": endpoint.url, "audience": "https://us.test"})
        if code is None:
            assert introspector.check("key").scopes == {"score.READ"}
        else:
            with pytest.raises(Refused) as refused:
                introspector.check("key")
            assert refused.value.code == code
    finally:
        endpoint.stop()


def test_a_failed_key_fetch_is_remembered(broker) -> None:
    """While an issuer's JWKS errors, tokens with made-up key ids do not each fetch again:
    not within the back-off (min_refetch after one failure), once it has passed they do."""
    broker.jwks_status = 500
    clock = Clock()
    keys = KeySet(broker.issuer, min_refetch=30, clock=clock)
    for i in range(20):
        with pytest.raises(Unavailable):
            verify(token(broker, f"made-up-{i}"), keys, broker.issuer, None, 0)
        clock.advance(1)  # 20 s in all
    assert broker.fetches == 1
    clock.advance(10)
    with pytest.raises(Unavailable):
        verify(token(broker, "made-up-x"), keys, broker.issuer, None, 0)
    assert broker.fetches == 2


def test_cached_keys_serve_past_their_ttl_while_a_refresh_fails(broker) -> None:
    clock = Clock()
    keys = KeySet(broker.issuer, ttl=600, min_refetch=30, clock=clock)  # a failure: 30 s off
    assert verify(token(broker), keys, broker.issuer, None, 0)["sub"] == "s"
    broker.jwks_status = 500
    clock.advance(601)  # the keys' time is up: the next token begins a refresh, which fails
    assert verify(token(broker), keys, broker.issuer, None, 0)["sub"] == "s"
    assert wait_until(lambda: keys.failures == 1, 60), "the refresh never ended"
    for _ in range(10):  # the cached keys serve on, and the failure is remembered
        assert verify(token(broker), keys, broker.issuer, None, 0)["sub"] == "s"
        clock.advance(2)  # 20 s in all
    assert broker.fetches == 2
    clock.advance(10)  # the back-off is over: refreshed again, and now it works
    broker.jwks_status = 200
    assert verify(token(broker), keys, broker.issuer, None, 0)["sub"] == "s"
    assert wait_until(lambda: keys.fetched == clock.now, 60), keys.error
    assert broker.fetches == 3


def test_a_hanging_jwks_is_fetched_once_and_waited_for_briefly(broker) -> None:
    """Tokens naming unknown keys while the JWKS hangs: one fetch, behind the requests; each
    waits for it a moment (`wait`), not for the fetch to end. The JWKS hangs until the test
    ends it (no timeout ends its read), so answers while it still hangs did not wait for it,
    however slow the machine."""
    broker.hold = threading.Event()
    clock = Clock()
    keys = KeySet(broker.issuer, min_refetch=30, wait=0.2, clock=clock)
    outcomes: list[str] = []

    def ask(i: int) -> None:
        try:
            keys.key(f"made-up-{i}")
            outcomes.append("key")
        except (Refused, Unavailable) as exc:
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert outcomes == ["Unavailable"] * 8
    # answered, and the fetch they did not wait for is still under way (held by the broker)
    assert wait_until(lambda: broker.held == 1, 60) and broker.fetches == 1
    clock.advance(0.2)
    with pytest.raises(Unavailable):  # later ones are answered at once, fetching no more
        keys.key("made-up-9")
    assert broker.held == 1 and broker.fetches == 1
