"""Bearers this server did not mint: OpenID Connect JWTs, opaque API keys checked by
introspection (RFC 7662 or Ego's check_api_key), and GA4GH passports.

`Identity.resolve(bearer)` says who a bearer is (an `External`: subject, display name,
issuer, scopes in this server's names), None when no configured provider claims it (the
caller then answers "invalid token"), or raises `Refused` (401: expired, wrong audience,
untrusted issuer...) or `Unavailable` (503: the provider could not be asked).

Which provider: a JWT goes by its `iss` claim, to the OpenID issuer or passport broker of
that name (a JWT of any other issuer is refused, never sent to introspection); anything
else is an API key, for introspection.
Settings (`identity` in server.json, or PYSCORE_IDENTITY as JSON):

    {"oidc": [{"issuer": "https://login.example.org/realms/genomics",
               "audience": "pyscore", "scope_claim": "scope"}],
     "introspection": {"url": "https://ego.example.org/o/check_api_key", "style": "ego",
                       "client_id": "score", "client_secret": "...", "cache_seconds": 60},
     "passports": {"brokers": [{"issuer": "https://broker.example.org", "audience": "pyscore"}],
                   "studies": {"https://dac.example.org/datasets/PACA-CA": "PACA-CA"}}}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from pyscore.server.identity.errors import Refused, Unavailable
from pyscore.server.identity.introspection import Introspector
from pyscore.server.identity.jwt import Issuer, check, claim, looks_like_jwt, unverified
from pyscore.server.identity.passports import CLAIM, Passports

__all__ = ["External", "Identity", "Refused", "Unavailable"]


@dataclass(frozen=True)
class External:
    subject: str
    name: str
    issuer: str
    scopes: frozenset[str]


class Identity:
    def __init__(
        self,
        issuers: Optional[list[Issuer]] = None,
        introspector: Optional[Introspector] = None,
        passports: Optional[Passports] = None,
    ) -> None:
        self.issuers = {i.issuer: i for i in issuers or []}
        self.introspector = introspector
        self.passports = passports

    @classmethod
    def from_settings(cls, config: dict[str, Any]) -> Identity:
        """From the `identity` setting; ValueError names what is wrong in it."""
        unknown = set(config) - {"oidc", "introspection", "passports"}
        if unknown:
            raise ValueError(f"identity settings: unknown key(s) {sorted(unknown)}")
        oidc = config.get("oidc") or []
        if isinstance(oidc, dict):
            oidc = [oidc]
        introspection = config.get("introspection")
        passports = config.get("passports")
        return cls(
            [Issuer.parse(body) for body in oidc],
            Introspector.parse(introspection) if introspection else None,
            Passports.parse(passports) if passports else None,
        )

    @property
    def configured(self) -> bool:
        return bool(self.issuers or self.introspector or self.passports)

    def resolve(self, bearer: str) -> Optional[External]:
        if looks_like_jwt(bearer):
            return self._jwt(bearer)
        if self.introspector is not None:
            got = self.introspector.check(bearer)
            return External(got.subject, got.name, self.introspector.issuer, got.scopes)
        return None

    def _jwt(self, token: str) -> Optional[External]:
        _, claims = unverified(token)
        iss = str(claims.get("iss", ""))
        issuer = self.issuers.get(iss)
        if issuer is not None:
            verified = check(token, issuer)
            scopes = issuer.scopes.scopes(verified)
            if self.passports is not None and CLAIM in verified:
                scopes |= self.passports.scopes(verified)
            subject = str(claim(verified, issuer.subject_claim) or verified.get("sub") or "")
            name = str(claim(verified, issuer.name_claim) or "") if issuer.name_claim else ""
            name = name or str(verified.get("client_id") or subject)
            return External(subject or "unknown", name, iss, frozenset(scopes))
        if self.passports is not None and iss in self.passports.brokers:
            verified, scopes = self.passports.passport(token, iss)
            subject = str(verified.get("sub") or "unknown")
            return External(subject, subject, iss, frozenset(scopes))
        if not self.configured:
            return None
        raise Refused(
            "untrusted_issuer", "the token comes from an issuer this server does not trust"
        )
