"""An issuer's signing keys: found by OpenID discovery, cached, and refetched when a token
names a key we have not seen (key rotation), at most once per `min_refetch` seconds so a
flood of tokens with made-up key ids cannot make us hammer the issuer."""

from __future__ import annotations

import threading
import time
from typing import Optional

from jwt import PyJWK
from jwt.exceptions import PyJWKError

from pyscore.server.identity import http
from pyscore.server.identity.errors import Refused, Unavailable

__all__ = ["KeySet", "Refused", "Unavailable"]
DISCOVERY = "/.well-known/openid-configuration"


class KeySet:
    """The JWKS of one issuer. `jwks_uri` empty: read from the issuer's discovery document
    (whose `issuer` must be this issuer, as OpenID Connect Discovery requires). Or
    `public_key_url`: one PEM public key, as Ego serves it (`/oauth/token/public_key`)."""

    def __init__(
        self,
        issuer: str,
        jwks_uri: str = "",
        ttl: float = 3600.0,
        min_refetch: float = 30.0,
        public_key_url: str = "",
    ) -> None:
        self.issuer, self.jwks_uri = issuer, jwks_uri
        self.public_key_url = public_key_url
        self.ttl, self.min_refetch = ttl, min_refetch
        self.keys: dict[str, PyJWK] = {}
        self.fetched = float("-inf")  # monotonic time of the last fetch
        self.fetches = 0
        self.lock = threading.Lock()

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

    def _fetch(self) -> None:
        if self.public_key_url:
            self.keys = {"": _pem_key(self.public_key_url)}
            self.fetched = time.monotonic()
            self.fetches += 1
            return
        body = http.get_json(self._uri(), "the signing keys (JWKS)")
        keys: dict[str, PyJWK] = {}
        for jwk in body.get("keys") or []:
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            try:
                key = PyJWK(jwk)
            except PyJWKError:
                continue  # a key type or curve we cannot use: others may do
            keys[str(jwk.get("kid", ""))] = key
        self.keys = keys
        self.fetched = time.monotonic()
        self.fetches += 1

    def key(self, kid: Optional[str]) -> PyJWK:
        """The key a token's header names (a token without `kid`: the only key)."""
        with self.lock:
            now = time.monotonic()
            if now - self.fetched > self.ttl:
                self._fetch()
            found = self._find(kid)
            if found is None and now - self.fetched >= self.min_refetch:
                self._fetch()  # rotated: the issuer may have published a new key
                found = self._find(kid)
            if found is None:
                raise Refused(
                    "unknown_key", f"the token is signed with a key {self.issuer} does not list"
                )
            return found

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
