"""Bearers of the identity providers an institution already runs, beside our own tokens:
JWT access tokens of a real OpenID provider (oidc-provider), API keys checked by token
introspection at that provider, and GA4GH passports whose visas a broker signed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import jwt
import pytest

from tests.api import bearer, mint_tokens
from tests.conftest import SERVER, Server, init_server, run
from tests.identity import RESOURCE, Broker, Provider, start_broker, start_provider
from tests.publish import publish_many, random_file

DEMO_VISA = "https://dac.test/datasets/DEMO"
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
def platform(tmp_path_factory: pytest.TempPathFactory, provider: Provider, broker: Broker):
    """Controlled files in studies DEMO and OTHER, served with the trusted provider (JWTs,
    and introspection of its opaque tokens) and the broker (passports) configured."""
    root = tmp_path_factory.mktemp("identity")
    server = init_server(root / "data")
    files = [random_file(root / "demo.bam", 300_000, seed=3), random_file(root / "other.bam", 1000)]
    published = publish_many(server.data_dir, [("DEMO", files[:1]), ("OTHER", files[1:])])
    server.objects = {"DEMO": published[0][1][0], "OTHER": published[1][1][0]}  # type: ignore[attr-defined]
    server.files = {"DEMO": files[0], "OTHER": files[1]}  # type: ignore[attr-defined]
    identity = {
        "oidc": [{"issuer": provider.trusted, "audience": RESOURCE, "leeway_seconds": 0}],
        "introspection": {
            "url": f"{provider.trusted}/token/introspection",
            "client_id": "pyscore",
            "client_secret": "pyscore-secret",
            "cache_seconds": CACHE_SECONDS,
        },
        "passports": {
            "brokers": [{"issuer": broker.issuer}],
            "studies": {DEMO_VISA: "DEMO"},
            "leeway_seconds": 0,
        },
    }
    server.start(env={"PYSCORE_IDENTITY": json.dumps(identity)})
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
    deadline = time.monotonic() + 60  # written in the background; bounded, not timed
    while True:
        trail = run(
            SERVER,
            "audit",
            "--data-dir",
            str(platform.data_dir),
            "--format",
            "json",
            "--subject",
            "researcher",
            "--object",
            object_id,
            check=True,
        ).stdout
        if trail or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert trail, "the grant never reached the audit trail"
    first = json.loads(trail.splitlines()[0])
    assert (first["outcome"], first["issuer"], first["study_id"]) == (
        "granted",
        provider.trusted,
        "DEMO",
    )
    assert token not in trail


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
    key = provider.token("PROGRAMDATA-DEMO.READ", resource=None)  # opaque: introspected
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
