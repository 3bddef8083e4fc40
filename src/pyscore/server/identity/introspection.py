"""Opaque bearers (API keys) checked by asking their issuer: RFC 7662 token introspection,
or Ego's `check_api_key`. Answers are cached for `cache_seconds` (never past the key's own
expiry), so a revoked key stops working within that time; the cache is keyed by a hash of
the key, which itself is never kept."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any, Optional, Union

from pyscore.server.identity import http
from pyscore.server.identity.errors import Refused, Unavailable
from pyscore.server.identity.jwt import ScopeRules, audiences
from pyscore.server.tokencache import Expiring

STYLES = ("rfc7662", "ego")
CACHE_ENTRIES = 10_000
# what an answer calls an access token: RFC 7662's token_type (RFC 6749's "Bearer"; some
# providers write "access_token"), Keycloak's typ, Ory Hydra's token_use
TYPE_FIELDS = ("token_type", "typ", "token_use")
ACCESS_TYPES = ("bearer", "access_token", "urn:ietf:params:oauth:token-type:access_token")


@dataclass(frozen=True)
class Introspected:
    subject: str
    name: str
    scopes: frozenset[str]


Answer = Union[Introspected, Refused]


class Introspector:
    """Settings: `identity.introspection` = {url, style ("rfc7662" or "ego"), client_id,
    client_secret, cache_seconds, audience (rfc7662: required, as for OpenID issuers),
    scope_claim, scope_map, scope_patterns}."""

    def __init__(
        self,
        url: str,
        style: str = "rfc7662",
        client_id: str = "",
        client_secret: str = "",
        cache_seconds: float = 60.0,
        scopes: Optional[ScopeRules] = None,
        issuer: str = "",
        audience: Optional[list[str]] = None,
    ) -> None:
        if style not in STYLES:
            raise ValueError(f"introspection style {style!r}: use one of {', '.join(STYLES)}")
        if not url.startswith(("https://", "http://")):
            raise ValueError(f"introspection url {url!r} must be an http(s) URL")
        self.url, self.style = url, style
        self.auth = (client_id, client_secret) if client_id else None
        self.cache_seconds = cache_seconds
        self.scopes = scopes or ScopeRules()
        self.issuer = issuer or url
        self.audience = audience or []  # rfc7662 answers' `aud` must name one; []: unchecked
        self.cache: Expiring[Answer] = Expiring(CACHE_ENTRIES)
        self.asked = 0  # calls to the issuer (for tests and metrics)

    @classmethod
    def parse(cls, body: dict[str, Any]) -> Introspector:
        style = str(body.get("style", "rfc7662"))
        return cls(
            str(body.get("url", "")),
            style,
            str(body.get("client_id", "")),
            str(body.get("client_secret", "")),
            float(body.get("cache_seconds", 60)),
            ScopeRules.parse(body),
            str(body.get("issuer", "")),
            # Ego's answers name no audience: its API keys are for the whole platform
            audiences(body, "identity introspection") if style == "rfc7662" else None,
        )

    def check(self, key: str) -> Introspected:
        digest = hashlib.sha256(key.encode()).hexdigest()
        now = time.monotonic()
        answer = self.cache.get(digest)
        if answer is None:
            answer, lifetime = self._ask(key, digest)
            self.cache.put(digest, answer, now + lifetime)
        if isinstance(answer, Refused):
            raise answer
        return answer

    def _ask(self, key: str, digest: str) -> tuple[Answer, float]:
        self.asked += 1
        if self.style == "ego":
            # Ego: POST /o/check_api_key?apiKey=..., the resource server's client
            # credentials as Basic auth; 200 with {user_id, scope[], exp} or an error
            status, body = http.request(self.url, params={"apiKey": key}, auth=self.auth)
        else:
            status, body = http.request(
                self.url, form={"token": key, "token_type_hint": "access_token"}, auth=self.auth
            )
        if self.style == "ego" and status in (400, 401, 403, 404):
            refused = Refused(
                "inactive_key", "the API key is not valid (unknown, expired or revoked)"
            )
            return refused, self.cache_seconds
        if status != 200:
            raise Unavailable(f"the token introspection endpoint answered {status}")
        try:
            answer = json.loads(body)
        except ValueError:
            raise Unavailable("the token introspection endpoint answered no JSON") from None
        if not isinstance(answer, dict):
            raise Unavailable("the token introspection endpoint answered no JSON object")
        return self._answer(answer, digest)

    def _answer(self, body: dict[str, Any], digest: str) -> tuple[Answer, float]:
        lifetime = self.cache_seconds
        if self.style == "rfc7662":
            refused = self._refusal(body)
            if refused is not None:
                return refused, lifetime
        exp = body.get("exp")
        if isinstance(exp, (int, float)):
            left = float(exp) - time.time()
            if left <= 0:
                return Refused("expired_token", "the API key has expired"), lifetime
            lifetime = min(lifetime, left)
        # RFC 7662's `sub`, Ego's `user_id`; a client-credentials token names its client
        subject = str(body.get("sub") or body.get("user_id") or body.get("client_id") or "")
        name = str(body.get("username") or body.get("client_id") or subject)
        # no subject: name the key by a fingerprint of it (never the key)
        return (
            Introspected(
                subject or f"key:{digest[:12]}", name, frozenset(self.scopes.scopes(body))
            ),
            lifetime,
        )

    def _refusal(self, body: dict[str, Any]) -> Optional[Refused]:
        """Why an RFC 7662 answer is no bearer for this server, if it is not: inactive, not
        an access token (a provider says `active` of its refresh tokens too), or for
        another audience."""
        if body.get("active") is not True:
            return Refused("inactive_key", "the token is not active (unknown, expired or revoked)")
        said = [str(body[f]).lower() for f in TYPE_FIELDS if f in body]
        if not said or any(t not in ACCESS_TYPES for t in said):
            return Refused(
                "not_access_token",
                "the token is not an access token (its provider calls it "
                f"{', '.join(said)[:100] or 'nothing'})",
            )
        aud = body.get("aud")
        named = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if self.audience and not set(self.audience) & {str(a) for a in named}:
            return Refused("wrong_audience", "the token is not meant for this server (aud)")
        return None
