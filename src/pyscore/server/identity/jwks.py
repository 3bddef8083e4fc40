"""An issuer's signing keys: found by OpenID discovery, cached, and refetched when a token
names a key we have not seen (key rotation).

Bounded, so that tokens naming made-up keys, or an issuer whose keys error or hang, cost
little and stall no one: one fetch at a time per issuer, in a thread of its own (never
inside a request: a request waits for it at most `wait` seconds, and not at all once that
much of the fetch has passed); no fetch within `min_refetch` seconds of the last good one,
nor after a failure within a back-off that doubles with each failure in a row (from
`min_refetch` up to MAX_BACKOFF); and keys past their `ttl` keep verifying until a refresh
succeeds. Requests with our own tokens never touch any of this."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Optional

from jwt import PyJWK
from jwt.exceptions import PyJWKError

from pyscore.server.identity import http
from pyscore.server.identity.errors import Refused, Unavailable

__all__ = ["KeySet", "Refused", "Unavailable"]
DISCOVERY = "/.well-known/openid-configuration"
WAIT = 2.0  # seconds a request waits for keys being fetched (an issuer answers in far less)
MAX_BACKOFF = 600.0


class KeySet:
    """The JWKS of one issuer. `jwks_uri` empty: read from the issuer's discovery document
    (whose `issuer` must be this issuer, as OpenID Connect Discovery requires). Or
    `public_key_url`: one PEM public key, as Ego serves it (`/oauth/token/public_key`).
    `clock` (time.monotonic) times the ttl, refetch limits and back-off: a test moves it
    rather than waiting for them."""

    def __init__(
        self,
        issuer: str,
        jwks_uri: str = "",
        ttl: float = 3600.0,
        min_refetch: float = 30.0,
        public_key_url: str = "",
        wait: float = WAIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer, self.jwks_uri = issuer, jwks_uri
        self.public_key_url = public_key_url
        self.ttl, self.min_refetch, self.wait = ttl, min_refetch, wait
        self.clock = clock
        self.keys: dict[str, PyJWK] = {}
        self.fetched = float("-inf")  # when (on `clock`) the last good fetch ended
        self.fetches = 0  # fetches begun
        self.failures = 0  # fetches failed in a row
        self.error = ""  # why the last fetch failed, if it did
        self._next = float("-inf")  # no fetch begins before this
        self._running: Optional[threading.Event] = None  # set when the fetch under way ends
        self._began = float("-inf")
        self._lock = threading.Lock()  # guards the fields above; never held while fetching

    def key(self, kid: Optional[str]) -> PyJWK:
        """The key a token's header names (a token without `kid`: the only key). Refused if
        the issuer does not list it; Unavailable if its keys cannot be had now."""
        with self._lock:
            now = self.clock()
            found = self._find(kid)
            if found is not None:
                if now - self.fetched > self.ttl:
                    self._begin(now)  # refreshed behind us; the cached key serves meanwhile
                return found
            running = self._begin(now)  # rotated? the issuer may list a new key
            left = self._began + self.wait - now
        if running is not None and left > 0:
            running.wait(left)
        with self._lock:
            found = self._find(kid)
            if found is not None:
                return found
            if self._running is not None:
                raise Unavailable(f"the signing keys of {self.issuer} are still being fetched")
            if self.error:
                raise Unavailable(self.error)
        raise Refused("unknown_key", f"the token is signed with a key {self.issuer} does not list")

    def _begin(self, now: float) -> Optional[threading.Event]:
        """The fetch under way, or a new one if one may begin now (under the lock)."""
        if self._running is None and now >= self._next:
            self._running, self._began = threading.Event(), now
            self.fetches += 1
            thread = threading.Thread(
                target=self._fetch, args=(self._running,), name="jwks fetch", daemon=True
            )
            thread.start()
        return self._running

    def _fetch(self, done: threading.Event) -> None:
        keys: Optional[dict[str, PyJWK]] = None
        try:
            keys = self._read()
        except Unavailable as exc:
            error = str(exc)
        except Exception as exc:  # a thread of its own: whatever went wrong, say so and end
            error = f"cannot read the signing keys of {self.issuer}: {exc!r}"[:500]
        with self._lock:
            now = self.clock()
            if keys is None:
                self.failures += 1
                self.error = error
                backoff = max(self.min_refetch, 1.0) * 2 ** min(self.failures - 1, 16)
                self._next = now + min(backoff, MAX_BACKOFF)
            else:
                self.keys, self.fetched, self.failures, self.error = keys, now, 0, ""
                self._next = now + self.min_refetch
            self._running = None
        done.set()

    def _uri(self) -> str:
        if not self.jwks_uri:
            doc = http.get_json(self.issuer.rstrip("/") + DISCOVERY, "the OpenID configuration")
            if doc.get("issuer", "").rstrip("/") != self.issuer.rstrip("/"):
                raise Unavailable(
                    f"the OpenID configuration of {self.issuer} names another issuer "
                    f"({str(doc.get('issuer'))[:200]!r})"
                )
            uri = doc.get("jwks_uri")
            if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
                raise Unavailable(f"the OpenID configuration of {self.issuer} has no jwks_uri")
            self.jwks_uri = uri
        return self.jwks_uri

    def _read(self) -> dict[str, PyJWK]:
        if self.public_key_url:
            return {"": _pem_key(self.public_key_url)}
        listed = http.get_json(self._uri(), "the signing keys (JWKS)").get("keys")
        if not isinstance(listed, list):
            raise Unavailable(f"the signing keys (JWKS) of {self.issuer} list no keys")
        keys: dict[str, PyJWK] = {}
        for jwk in listed:
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            try:
                key = PyJWK(jwk)
            except PyJWKError:
                continue  # a key type or curve we cannot use: others may do
            keys[str(jwk.get("kid", ""))] = key
        return keys

    def _find(self, kid: Optional[str]) -> Optional[PyJWK]:
        if kid is None or self.public_key_url:  # a PEM key has no id: it is the one
            return next(iter(self.keys.values())) if len(self.keys) == 1 else None
        return self.keys.get(kid)


def _pem_key(url: str) -> PyJWK:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    from jwt.algorithms import RSAAlgorithm

    status, body = http.request(url)
    if status != 200:
        raise Unavailable(f"the public key at {url} answered {status}")
    try:
        key = load_pem_public_key(body)
        if not isinstance(key, RSAPublicKey):
            raise ValueError("not an RSA public key")
        return PyJWK(RSAAlgorithm.to_jwk(key, as_dict=True), algorithm="RS256")
    except (ValueError, TypeError, PyJWKError) as exc:
        raise Unavailable(f"cannot read the public key at {url}: {exc}") from None
