"""The local store's signed URLs without a web server: a URL is good for exactly the method,
path, expiry, range and download name it was signed for, until it expires and never for longer
than the store's maximum lifetime; keys are named by `kid` and can be rotated."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from pyscore.server.errors import ApiError
from pyscore.server.keys import KeyRing
from pyscore.server.store.local import LocalStore

KEY = bytes(range(32))
LIFETIME = 3600


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path, KEY, max_lifetime=LIFETIME)


def split(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    return parts.path, dict(parse_qsl(parts.query, keep_blank_values=True))


def refused(store: LocalStore, method: str, path: str, query: dict[str, str]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        store.verify(method, path, query)
    assert caught.value.status == 403
    return caught.value


def test_a_get_url_verifies_and_names_no_range(store: LocalStore):
    url = store.url_for_get("obj-1", base_url="http://h:1/", expires_in=60)
    assert url.startswith("http://h:1/store/objects/obj-1?")
    path, query = split(url)
    assert store.verify("GET", path, query) == ""
    assert set(query) == {"Expires", "kid", "sig"}


def test_a_ranged_get_url_returns_its_inclusive_range(store: LocalStore):
    path, query = split(
        store.url_for_get("o", base_url="http://h", expires_in=60, offset=10, length=5)
    )
    assert query["range"] == "10-14"
    assert store.verify("GET", path, query) == "10-14"


def test_a_part_url_is_for_put_with_the_parts_range(store: LocalStore):
    url = store.url_for_part("o", "up1", 3, 100, 50, base_url="http://h", expires_in=60)
    path, query = split(url)
    assert path == "/store/uploads/up1/3"
    assert store.verify("PUT", path, query) == "100-149"
    refused(store, "GET", path, query)


def flip(sig: str) -> str:
    return sig[:-1] + ("1" if sig.endswith("0") else "0")


# Each change to a signed URL, and the message it is refused with.
ALTERATIONS = [
    ("method", lambda m, p, q: ("PUT", p, q), "does not match"),
    ("method case", lambda m, p, q: ("get", p, q), "does not match"),
    ("path", lambda m, p, q: (m, p.replace("obj", "obk"), q), "does not match"),
    ("path suffix", lambda m, p, q: (m, p + "/", q), "does not match"),
    ("path newline", lambda m, p, q: (m, p + "\n", q), "does not match"),
    (
        "expiry +1",
        lambda m, p, q: (m, p, {**q, "Expires": str(int(q["Expires"]) + 1)}),
        "does not match",
    ),
    (
        "expiry -1",
        lambda m, p, q: (m, p, {**q, "Expires": str(int(q["Expires"]) - 1)}),
        "does not match",
    ),
    ("range", lambda m, p, q: (m, p, {**q, "range": "0-98"}), "does not match"),
    (
        "range dropped",
        lambda m, p, q: (m, p, {k: v for k, v in q.items() if k != "range"}),
        "does not match",
    ),
    ("name", lambda m, p, q: (m, p, {**q, "name": "other.bam"}), "does not match"),
    (
        "name dropped",
        lambda m, p, q: (m, p, {k: v for k, v in q.items() if k != "name"}),
        "does not match",
    ),
    ("sig", lambda m, p, q: (m, p, {**q, "sig": flip(q["sig"])}), "does not match"),
    ("sig upper", lambda m, p, q: (m, p, {**q, "sig": q["sig"].upper()}), "does not match"),
    (
        "sig dropped",
        lambda m, p, q: (m, p, {k: v for k, v in q.items() if k != "sig"}),
        "does not match",
    ),
    ("kid", lambda m, p, q: (m, p, {**q, "kid": "k9"}), "unknown or retired key"),
    ("expiry text", lambda m, p, q: (m, p, {**q, "Expires": "soon"}), "malformed"),
    (
        "expiry gone",
        lambda m, p, q: (m, p, {k: v for k, v in q.items() if k != "Expires"}),
        "malformed",
    ),
    ("range text", lambda m, p, q: (m, p, {**q, "range": "0-9-9"}), "malformed"),
    ("range open", lambda m, p, q: (m, p, {**q, "range": "10-"}), "malformed"),
]


@pytest.mark.parametrize(
    ("alter", "says"), [pytest.param(a, s, id=name) for name, a, s in ALTERATIONS]
)
def test_any_altered_field_fails(store: LocalStore, alter, says: str):
    url = store.url_for_get(
        "obj", base_url="http://h", expires_in=60, offset=0, length=100, filename="a.bam"
    )
    path, query = split(url)
    assert store.verify("GET", path, query) == "0-99"
    method, path2, query2 = alter("GET", path, query)
    assert says in refused(store, method, path2, query2).message


def test_an_expired_url_fails(store: LocalStore):
    exp = int(time.time()) - 5
    query = {"Expires": str(exp), "kid": "k0", "sig": LocalStore.sign(KEY, "GET", "/p", exp, "")}
    error = refused(store, "GET", "/p", query)
    assert (error.error_id, error.message) == ("signature.expired", "Signed URL has expired")


def test_a_url_signed_to_outlive_the_maximum_lifetime_fails(store: LocalStore):
    exp = int(time.time()) + LIFETIME + 3600
    query = {"Expires": str(exp), "kid": "k0", "sig": LocalStore.sign(KEY, "GET", "/p", exp, "")}
    assert refused(store, "GET", "/p", query).error_id == "signature.expiry"


@pytest.mark.parametrize("asked", [60, LIFETIME, LIFETIME + 1, 10**9])
def test_the_lifetime_is_capped_at_max_lifetime(store: LocalStore, asked: int):
    before = int(time.time())
    path, query = split(store.url_for_get("o", base_url="http://h", expires_in=asked))
    after = int(time.time())
    assert before + min(asked, LIFETIME) <= int(query["Expires"]) <= after + min(asked, LIFETIME)
    store.verify("GET", path, query)


# Sets of fields that a naive encoding (fields joined by newlines) would sign alike.
@pytest.mark.parametrize(
    ("one", "other"),
    [
        (("GET", "/p", 1, "", "n"), ("GET", "/p", 1, "\nn", "")),
        (("GET", "/p", 1, "0-1", ""), ("GET", "/p", 1, "", "0-1")),
        (("GET", "/p\nGET", 1, "", ""), ("GET\n/p", "GET", 1, "", "")),
        (("GET", "/p", 12, "3-4", ""), ("GET", "/p", 1, "23-4", "")),
        (("GET", '/p","x', 1, "", ""), ("GET", "/p", 1, "x", "")),
    ],
)
def test_the_signed_message_is_canonical(one: tuple, other: tuple):
    assert LocalStore.sign(KEY, *one) != LocalStore.sign(KEY, *other)


def test_a_signature_depends_on_the_key():
    fields = ("GET", "/p", 1, "", "")
    assert LocalStore.sign(KEY, *fields) == LocalStore.sign(KEY, *fields)
    assert LocalStore.sign(KEY, *fields) != LocalStore.sign(KEY[::-1], *fields)


def test_the_pepper_changes_every_signature(tmp_path: Path):
    plain = LocalStore(tmp_path / "a", KeyRing.static(KEY), LIFETIME)
    peppered = LocalStore(tmp_path / "b", KeyRing.static(KEY, pepper="ab" * 16), LIFETIME)
    path, query = split(peppered.url_for_get("o", base_url="http://h", expires_in=60))
    peppered.verify("GET", path, query)
    assert "does not match" in refused(plain, "GET", path, query).message


def ring(*ids: str) -> KeyRing:
    return KeyRing(
        lambda: [{"id": i, "secret": (i * 32)[:64].encode().hex(), "created": 0} for i in ids]
    )


def test_a_rotation_keeps_old_urls_good_until_their_key_is_dropped(tmp_path: Path):
    before = LocalStore(tmp_path, ring("k1"), LIFETIME)
    path, query = split(before.url_for_get("o", base_url="http://h", expires_in=60))
    assert query["kid"] == "k1"
    rotated = LocalStore(tmp_path, ring("k1", "k2"), LIFETIME)
    rotated.verify("GET", path, query)
    assert split(rotated.url_for_get("o", base_url="http://h", expires_in=60))[1]["kid"] == "k2"
    dropped = LocalStore(tmp_path, ring("k2"), LIFETIME)
    assert refused(dropped, "GET", path, query).message.endswith("unknown or retired key")


@pytest.mark.parametrize("object_id", ["..", ".", "a/b", "../x", "", "a b", "x\n", "é"])
def test_ids_that_are_not_plain_names_are_refused(store: LocalStore, object_id: str):
    with pytest.raises(ApiError) as caught:
        store.url_for_get(object_id, base_url="http://h", expires_in=60)
    assert (caught.value.status, caught.value.error_id) == (400, "malformed.id")
