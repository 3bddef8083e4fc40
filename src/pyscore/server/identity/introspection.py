"""Opaque bearers (API keys) checked by asking their issuer: RFC 7662 token introspection,
or Ego's `check_api_key`. Answers are cached for `cache_seconds` (never past the key's own
expiry), so a revoked key stops working within that time; the cache is keyed by a hash of
the key, which itself is never kept."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
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
    scope_claim, scope_map, scope_patterns}. `clock` (time.monotonic) times the cache: a
    test moves it rather than waiting."""

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
        clock: Callable[[], float] = time.monotonic,
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
        self.cache: Expiring[Answer] = Expiring(CACHE_ENTRIES, clock)
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
        now = self.cache.clock()
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
            # credentials as Basic auth
            status, body = http.request(self.url, params={"apiKey": key}, auth=self.auth)
            return self._ego(status, body)
        status, body = http.request(
            self.url, form={"token": key, "token_type_hint": "access_token"}, auth=self.auth
        )
        if status != 200:
            raise Unavailable(f"the token introspection endpoint answered {status}")
        return self._rfc7662(_json(body), digest)

    def _rfc7662(self, body: dict[str, Any], digest: str) -> tuple[Answer, float]:
        lifetime = self.cache_seconds
        refused = self._refusal(body)
        if refused is not None:
            return refused, lifetime
        exp = _number(body.get("exp"))  # RFC 7662: when it expires, seconds since the epoch
        if exp is not None:
            left = exp - time.time()
            if left <= 0:
                return Refused("expired_token", "the token has expired"), lifetime
            lifetime = min(lifetime, left)
        # a client-credentials token names its client (the token's, not ours)
        subject = str(body.get("sub") or body.get("client_id") or "")
        name = str(body.get("username") or body.get("client_id") or subject)
        # no subject: name the key by a fingerprint of it (never the key)
        scopes = frozenset(self.scopes.scopes(body))
        return Introspected(subject or f"key:{digest[:12]}", name, scopes), lifetime

    def _ego(self, status: int, raw: bytes) -> tuple[Answer, float]:
        """Ego's answer as its code writes it (overture-stack/ego ApiKeyController and
        TokenService.checkApiKey): 207 Multi-Status with ApiKeyScopeResponse {user_id (the
        key owner's UUID), exp (ApiKey.getSecondsUntilExpiry: seconds left, 0 when spent),
        scope[]}, or 401 {"error": ...}. Egos before May 2022 also wrote `client_id`: the
        application that asked, i.e. this server, never the key's user. Refused as the
        original Score's ApiKeyIntrospector refuses: an error, exp 0, revoked, not valid."""
        lifetime = self.cache_seconds
        inactive = Refused("inactive_key", "the API key is not valid (unknown, expired or revoked)")
        if status in (400, 401, 403, 404):
            return inactive, lifetime
        if status not in (200, 207):
            raise Unavailable(f"Ego's check_api_key answered {status}")
        body = _json(raw)
        if "error" in body or body.get("revoked") is True or body.get("valid") is False:
            return inactive, lifetime
        exp = _number(body.get("exp"))
        if exp is not None:
            if exp <= 0:
                return Refused("expired_token", "the API key has expired"), lifetime
            lifetime = min(lifetime, exp)
        user = body.get("user_id")
        if not isinstance(user, str) or not user:
            raise Unavailable("Ego's check_api_key answer names no user_id")
        return Introspected(user, user, frozenset(self.scopes.scopes(body))), lifetime

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


def _json(body: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(body)
    except ValueError:
        raise Unavailable("the token introspection endpoint answered no JSON") from None
    if not isinstance(answer, dict):
        raise Unavailable("the token introspection endpoint answered no JSON object")
    return answer


def _number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
