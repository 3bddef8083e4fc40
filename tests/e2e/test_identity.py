"""Bearers of the identity providers an institution already runs, beside our own tokens:
JWT access tokens of a real OpenID provider (oidc-provider), API keys checked by token
introspection at that provider, and GA4GH passports whose visas a broker signed."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import jwt
import pytest

from tests.api import bearer, mint_tokens
from tests.conftest import Server, audit_trail, init_server, serve_refused
from tests.identity import RESOURCE, Broker, Provider, start_broker, start_ego, start_provider
from tests.mounts import wait_until
from tests.publish import publish_many, random_file

DEMO_VISA = "https://dac.test/datasets/DEMO"
OPAQUE = "https://opaque.pyscore.test"  # the provider's opaque tokens for us (introspected)
CACHE_SECONDS = 3


@pytest.fixture(scope="module")
def provider():
    p = start_provider()
    yield p
    p.process.terminate()
    p.process.wait(10)


@pytest.fixture(scope="module")
def broker():
    b = start_broker()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def idp():
    """An OpenID provider whose JWTs the tests sign as they like (scopes, algorithms)."""
    b = start_broker()
    yield b
    b.stop()


def controlled_platform(root: Path, identity: dict, env: dict[str, str] | None = None) -> Server:
    """A running server with controlled files in studies DEMO and OTHER (`objects`, `files`:
    by study) that accepts the bearers of `identity`."""
    server = init_server(root / "data")
    files = [random_file(root / "demo.bam", 300_000, seed=3), random_file(root / "other.bam", 1000)]
    published = publish_many(server.data_dir, [("DEMO", files[:1]), ("OTHER", files[1:])])
    server.objects = {"DEMO": published[0][1][0], "OTHER": published[1][1][0]}  # type: ignore[attr-defined]
    server.files = {"DEMO": files[0], "OTHER": files[1]}  # type: ignore[attr-defined]
    server.start(env={"PYSCORE_IDENTITY": json.dumps(identity), **(env or {})})
    return server


@pytest.fixture(scope="module")
def platform(
    tmp_path_factory: pytest.TempPathFactory, provider: Provider, broker: Broker, idp: Broker
):
    """Served with the trusted provider (JWTs, and introspection of its opaque tokens), the
    broker (passports) and idp (JWTs) configured."""
    identity = {
        "oidc": [
            {"issuer": provider.trusted, "audience": RESOURCE, "leeway_seconds": 0},
            {"issuer": idp.issuer, "audience": RESOURCE},
        ],
        "introspection": {
            "url": f"{provider.trusted}/token/introspection",
            "client_id": "pyscore",
            "client_secret": "pyscore-secret",
            "cache_seconds": CACHE_SECONDS,
            "audience": RESOURCE,
        },
        "passports": {
            "brokers": [{"issuer": broker.issuer, "audience": RESOURCE}],
            "studies": {DEMO_VISA: "DEMO"},
            "leeway_seconds": 0,
        },
    }
    server = controlled_platform(tmp_path_factory.mktemp("identity"), identity)
    yield server
    server.stop()


def spec(server: Server, study: str, token: str) -> httpx.Response:
    object_id = server.objects[study]  # type: ignore[attr-defined]
    return httpx.get(f"{server.url}/download/{object_id}", headers=bearer(token), timeout=30)


def test_provider_jwt_downloads_a_controlled_file(
    platform: Server, provider: Provider, tmp_path: Path
) -> None:
    token = provider.token("PROGRAMDATA-DEMO.READ")
    object_id = platform.objects["DEMO"]  # type: ignore[attr-defined]
    out = platform.client(
        "download", "--object-id", object_id, "--output-dir", str(tmp_path), token=token
    )
    assert out.returncode == 0, out.stderr
    got = list(tmp_path.rglob("demo.bam"))
    assert len(got) == 1 and got[0].read_bytes() == platform.files["DEMO"].read_bytes()  # type: ignore[attr-defined]
    # the trail names the provider's subject (the client) and the issuer, never the token
    trail = audit_trail(platform, "--subject", "researcher", "--object", object_id)
    assert trail, "the grant never reached the audit trail"
    assert (trail[0]["outcome"], trail[0]["issuer"], trail[0]["study_id"]) == (
        "granted",
        provider.trusted,
        "DEMO",
    )
    assert token not in json.dumps(trail)


def test_provider_jwt_refused_when_expired(platform: Server, provider: Provider) -> None:
    """Judged against the token's own `exp` (2 s after it was issued), not by how fast the
    requests were: one answered before `exp` is granted, every one sent from `exp` on is
    refused as expired (no leeway is configured)."""
    token = provider.token("PROGRAMDATA-DEMO.READ", resource="https://short.pyscore.test")
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert exp - time.time() <= 2
    r = spec(platform, "DEMO", token)
    if time.time() < exp:  # answered in time: good (a busy machine may not get here)
        assert r.status_code == 200, r.text
    time.sleep(max(0.0, exp - time.time()))
    for _ in range(3):
        r = spec(platform, "DEMO", token)
        assert r.status_code == 401 and "expired" in r.json()["message"], r.text


@pytest.mark.parametrize(
    ("case", "status", "words"),
    [
        ("another issuer", 401, "issuer this server does not trust"),
        ("wrong audience", 401, "not meant for this server"),
        ("missing scope", 403, "PROGRAMDATA-DEMO.READ"),
        ("altered claims", 401, "signature does not verify"),
    ],
)
def test_provider_jwt_refused(
    platform: Server, provider: Provider, case: str, status: int, words: str
) -> None:
    if case == "another issuer":  # a valid token, from a provider nobody configured
        token = provider.token("PROGRAMDATA-DEMO.READ", issuer=provider.stranger)
    elif case == "wrong audience":
        token = provider.token("PROGRAMDATA-DEMO.READ", resource="https://elsewhere.test")
    elif case == "missing scope":
        token = provider.token("PROGRAMDATA-OTHER.READ")
        assert spec(platform, "OTHER", token).status_code == 200  # the scope it has works
    else:  # a token for OTHER whose payload was edited to claim score.READ
        import base64

        head, body, sig = provider.token("PROGRAMDATA-OTHER.READ").split(".")
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        claims["scope"] = "score.READ"
        forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        token = f"{head}.{forged}.{sig}"
    r = spec(platform, "DEMO", token)
    assert r.status_code == status, r.text
    assert words in r.json()["message"], r.text


def test_introspected_key_works_until_revoked(platform: Server, provider: Provider) -> None:
    key = provider.token("PROGRAMDATA-DEMO.READ", resource=OPAQUE)  # opaque: introspected
    assert "." not in key
    assert spec(platform, "DEMO", key).status_code == 200
    assert spec(platform, "OTHER", key).status_code == 403  # its scopes, nothing more
    provider.revoke(key)
    # the server asked about the key before the revocation, so it believes that answer
    # CACHE_SECONDS after the revocation at the latest, however slow the machine: within
    # them a request may be granted or refused, after them every one is refused
    window_ends = time.monotonic() + CACHE_SECONDS
    within: list[int] = []
    for _ in range(1000):  # bounded; ends when the window does
        if time.monotonic() >= window_ends:
            break
        within.append(spec(platform, "DEMO", key).status_code)
        time.sleep(0.5)
    assert set(within) <= {200, 401}, within
    r = spec(platform, "DEMO", key)
    assert r.status_code == 401 and "not active" in r.json()["message"], (r.text, within)
    assert spec(platform, "DEMO", key).status_code == 401  # and stays refused


def test_passport_visa_grants_exactly_its_study(platform: Server, broker: Broker) -> None:
    subject = "researcher-42"
    intruder = Broker(issuer=broker.issuer)  # claims to be the broker, signs with its own key
    intruder.rotate()
    visas = [
        broker.sign(broker.visa(subject, DEMO_VISA)),
        # for OTHER: signed by a key the broker never published, and expired: grant nothing
        intruder.sign(intruder.visa(subject, "https://dac.test/datasets/OTHER")),
        broker.sign(broker.visa(subject, "https://dac.test/datasets/OTHER", lifetime=-60)),
    ]
    passport = broker.passport(subject, visas)
    r = spec(platform, "DEMO", passport)
    assert r.status_code == 200, r.text
    part = httpx.get(r.json()["parts"][0]["url"], timeout=30)
    assert part.content == platform.files["DEMO"].read_bytes()  # type: ignore[attr-defined]
    assert spec(platform, "OTHER", passport).status_code == 403
    # a passport holding only visas that do not verify grants nothing
    assert spec(platform, "DEMO", broker.passport(subject, visas[1:])).status_code == 403
    # a visa about someone else does not travel in this subject's passport
    stolen = broker.sign(broker.visa("someone-else", DEMO_VISA))
    assert spec(platform, "DEMO", broker.passport(subject, [stolen])).status_code == 403
    # nor is a passport signed by anyone but the broker accepted
    forged = intruder.passport(subject, visas[:1])
    r = spec(platform, "DEMO", forged)
    assert r.status_code == 401, r.text


def test_own_tokens_still_work(platform: Server) -> None:
    token = mint_tokens(platform.data_dir, {"own": "PROGRAMDATA-OTHER.READ"})["own"]
    assert spec(platform, "OTHER", token).status_code == 200
    assert spec(platform, "DEMO", token).status_code == 403
    assert spec(platform, "DEMO", "not-a-token-anyone-issued").status_code == 401


@pytest.mark.parametrize("scope", ["ſcore.ADMIN", "score.admın"])
def test_scope_lookalikes_grant_nothing(platform: Server, idp: Broker, scope: str) -> None:
    """A JWT scope spelt with a letter that folds to an ASCII one (U+017F long s, U+0131
    dotless i) is not score.ADMIN: it creates no study."""
    study = f"LOOK{sum(map(ord, scope))}"
    r = httpx.post(
        f"{platform.url}/studies/{study}/",
        json={"studyId": study, "name": "look-alike"},
        headers=bearer(idp.access_token(scope)),
        timeout=30,
    )
    assert r.status_code == 403, r.text
    assert httpx.get(f"{platform.url}/studies/{study}", timeout=30).status_code == 404
    admin = bearer(idp.access_token("score.ADMIN"))  # the real word does
    body = {"studyId": study, "name": "real"}
    r = httpx.post(f"{platform.url}/studies/{study}/", json=body, headers=admin, timeout=30)
    assert r.status_code == 200, r.text


def test_jwt_whose_algorithm_does_not_fit_its_key_is_refused(platform: Server, idp: Broker) -> None:
    """An ES256 header naming the issuer's RSA key: 401 and a refusal in the trail (not a
    500 from deep inside the JWT library)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    claims = idp.claims("idp-user", aud=RESOURCE, scope="score.READ")
    token = idp.sign(claims, key=ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")
    r = spec(platform, "DEMO", token)
    assert r.status_code == 401, r.text
    assert "does not fit" in r.json()["message"], r.text
    object_id = platform.objects["DEMO"]  # type: ignore[attr-defined]
    trail = audit_trail(platform, "--outcome", "refused", "--object", object_id)
    assert any("does not fit" in record["reason"] for record in trail), trail


def test_visas_need_the_holder_named(platform: Server, broker: Broker, idp: Broker) -> None:
    """A passport (or an OpenID token carrying one) without `sub` honours no visa: the
    holder check cannot be made, so another person's visa would otherwise grant access."""
    someone_elses = broker.sign(broker.visa("someone-else", DEMO_VISA))
    passport = broker.passport(None, [someone_elses])
    assert spec(platform, "DEMO", passport).status_code == 403
    carried = idp.sign(
        idp.claims(None, aud=RESOURCE, scope="openid", ga4gh_passport_v1=[someone_elses])
    )
    assert spec(platform, "DEMO", carried).status_code == 403
    # the holder named: their own visa does
    own = broker.sign(broker.visa("researcher-42", DEMO_VISA))
    assert spec(platform, "DEMO", broker.passport("researcher-42", [own])).status_code == 200


@pytest.mark.parametrize(
    "settings",
    [
        {"passports": {"brokers": [{"issuer": "https://broker.test"}]}},
        {"introspection": {"url": "https://idp.test/token/introspection"}},
    ],
    ids=["passport broker", "introspection"],
)
def test_serve_needs_the_audience_of_every_issuer(tmp_path: Path, settings: dict) -> None:
    """Without `audience`, a passport or introspected token minted for any other service of
    the issuer would do here: `serve` says so in one line and does not start."""
    server = init_server(tmp_path / "data")
    assert "audience" in serve_refused(server.data_dir, {"PYSCORE_IDENTITY": json.dumps(settings)})


def test_passports_for_another_service_are_refused(platform: Server, broker: Broker) -> None:
    visas = [broker.sign(broker.visa("researcher-42", DEMO_VISA))]
    for audience in ("https://elsewhere.test", None):
        r = spec(platform, "DEMO", broker.passport("researcher-42", visas, audience=audience))
        assert r.status_code == 401, r.text
    assert spec(platform, "DEMO", broker.passport("researcher-42", visas)).status_code == 200


def test_introspection_takes_only_access_tokens_for_this_server(
    platform: Server, provider: Provider
) -> None:
    """The provider says `active` of its refresh tokens and of tokens for other services:
    neither is a bearer for this server."""
    for resource, words in [
        ("https://opaque.elsewhere.test", "not meant for this server"),
        (None, "not meant for this server"),  # a token for no audience
    ]:
        r = spec(platform, "DEMO", provider.token("PROGRAMDATA-DEMO.READ", resource=resource))
        assert r.status_code == 401 and words in r.json()["message"], r.text
    r = spec(platform, "DEMO", provider.refresh_token())
    assert r.status_code == 401 and "not an access token" in r.json()["message"], r.text


def test_ego_api_keys_download_as_their_user(tmp_path: Path) -> None:
    """An Ego API key, checked at Ego's check_api_key as Ego answers (207; exp the seconds
    left; older Egos also echo our own client_id): the download is granted and recorded
    under the key's user, and a key Ego refuses gets 401."""
    user = "7e57ab1e-0000-4000-8000-0000000000e9"
    answer = {"user_id": user, "exp": 3599, "scope": ["PROGRAMDATA-DEMO.READ", "song.READ"]}
    ego = start_ego({"ego-key": answer, "old-ego-key": {**answer, "client_id": "pyscore"}})
    identity = {
        "introspection": {
            "url": f"{ego.url}/o/check_api_key",
            "style": "ego",
            "client_id": "pyscore",
            "client_secret": "pyscore-secret",
        }
    }
    server = controlled_platform(tmp_path, identity)
    try:
        for key in ("ego-key", "old-ego-key"):
            assert spec(server, "DEMO", key).status_code == 200
            assert spec(server, "OTHER", key).status_code == 403
        assert spec(server, "DEMO", "no-such-key").status_code == 401
        object_id = server.objects["DEMO"]  # type: ignore[attr-defined]
        trail = audit_trail(server, "--object", object_id, "--outcome", "granted", at_least=2)
        assert {(r["principal"], r["principal_name"]) for r in trail} == {(user, user)}, trail
        assert len(trail) == 2
        assert {r["issuer"] for r in trail} == {f"{ego.url}/o/check_api_key"}
    finally:
        server.stop()
        ego.stop()


def test_a_broken_jwks_costs_one_fetch_and_stalls_no_one(tmp_path: Path) -> None:
    """Passports naming made-up keys of a broker whose JWKS errors fetch it once, not once
    each; while another's JWKS hangs, requests naming its keys hold their admission slots
    only a moment, so a request with our own token is answered while it still hangs. The
    hang lasts until the test ends it (no timeout ends its read): requests waiting for the
    fetch itself would hold both slots until then, and ours would wait behind them."""
    failing, hanging = start_broker(), start_broker()
    failing.jwks_status = 500
    hanging.hold = threading.Event()
    brokers = [
        # an hour between fetches: however slow the requests below, none is a refetch
        {"issuer": failing.issuer, "audience": RESOURCE, "jwks_min_refetch_seconds": 3600},
        {"issuer": hanging.issuer, "audience": RESOURCE},
    ]
    # two requests at work at once; others wait for a slot (60 s at most, a bound only)
    env = {"PYSCORE_MAX_CONCURRENT_REQUESTS": "2", "PYSCORE_QUEUE_TIMEOUT_SECONDS": "60"}
    server = controlled_platform(tmp_path, {"passports": {"brokers": brokers}}, env)
    own = mint_tokens(server.data_dir, {"own": "score.READ"})["own"]
    statuses: list[int] = []

    def made_up(broker: Broker, i: int) -> None:
        passport = broker.passport("someone", [], kid=f"made-up-{i}")
        statuses.append(spec(server, "DEMO", passport).status_code)

    try:
        for i in range(20):
            made_up(failing, i)
        assert failing.fetches == 1
        attackers = [threading.Thread(target=made_up, args=(hanging, i)) for i in range(6)]
        for t in attackers:
            t.start()
        assert wait_until(lambda: hanging.held == 1, 60), "the hanging JWKS was never asked"
        r = spec(server, "DEMO", own)
        assert r.status_code == 200, r.text
        assert hanging.held == 1  # answered while the server's read of the JWKS still hangs
        hanging.hold.set()
        for t in attackers:
            t.join(60)
        assert len(statuses) == 26 and set(statuses) <= {401, 503}, statuses
        assert hanging.fetches == 1
    finally:
        server.stop()
        failing.stop()
        hanging.stop()
