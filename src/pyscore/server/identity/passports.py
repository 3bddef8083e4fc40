"""GA4GH Passports: visas of type ControlledAccessGrants, each a JWT signed by a visa issuer
this server trusts (checked against that issuer's JWKS), grant READ of the study their
`value` names. A passport comes either as the bearer itself (a JWT from a trusted broker
whose `ga4gh_passport_v1` claim lists visa JWTs) or inside an OpenID access token's
`ga4gh_passport_v1` claim.

Settings `identity.passports`: {brokers: [{issuer, jwks_uri?, audience}], visa_issuers:
[{issuer, jwks_uri?}], studies: {"<visa value>": "<study id>"}, patterns: ["<regular
expression with a (?P<study>...) group>"], leeway_seconds}. A visa counts only in a
passport with a subject (`sub`), and only if it names that subject. A visa with `conditions`
is not honoured (conditions are not evaluated here), nor one whose `by` is not in
`accepted_by` when that list is set. A visa that does not verify grants nothing and refuses
nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

from pyscore.server.identity.jwks import KeySet, Refused, Unavailable
from pyscore.server.identity.jwt import audiences, unverified, verify

CLAIM = "ga4gh_passport_v1"
VISA = "ga4gh_visa_v1"
GRANTS = "ControlledAccessGrants"
MAX_VISAS = 200


@dataclass
class Trusted:
    issuer: str
    keys: KeySet
    audience: list[str] = field(default_factory=list)  # a broker's; []: not checked


@dataclass
class Passports:
    brokers: dict[str, Trusted]
    visa_issuers: dict[str, Trusted]
    studies: dict[str, str] = field(default_factory=dict)
    patterns: list[re.Pattern[str]] = field(default_factory=list)
    accepted_by: list[str] = field(default_factory=list)
    leeway: float = 30.0

    @classmethod
    def parse(cls, body: dict[str, Any]) -> Passports:
        def trusted(entries: list[dict[str, Any]], what: str) -> dict[str, Trusted]:
            out = {}
            for e in entries:
                issuer = str(e.get("issuer", "")).strip()
                if not issuer.startswith(("https://", "http://")):
                    raise ValueError(f"passport {what} {issuer!r} must be an http(s) URL")
                out[issuer] = Trusted(
                    issuer,
                    KeySet(
                        issuer,
                        str(e.get("jwks_uri", "")),
                        float(e.get("jwks_cache_seconds", 3600)),
                        float(e.get("jwks_min_refetch_seconds", 30)),
                    ),
                    # a passport is a bearer, so it must be for us; a visa travels in one
                    audiences(e, f"passport {what} {issuer}") if what == "broker" else [],
                )
            return out

        brokers = trusted(body.get("brokers") or [], "broker")
        # visa issuers default to the brokers themselves (one key cache an issuer, not two)
        visa_issuers = (
            trusted(body["visa_issuers"], "visa issuer") if body.get("visa_issuers") else brokers
        )
        patterns = [re.compile(p) for p in body.get("patterns") or []]
        for p in patterns:
            if "study" not in p.groupindex:
                raise ValueError(f"passport pattern {p.pattern!r} needs a (?P<study>...) group")
        return cls(
            brokers,
            visa_issuers,
            {str(k): str(v) for k, v in (body.get("studies") or {}).items()},
            patterns,
            [str(x) for x in body.get("accepted_by") or []],
            float(body.get("leeway_seconds", 30)),
        )

    def study_of(self, value: str) -> Optional[str]:
        if value in self.studies:
            return self.studies[value]
        for p in self.patterns:
            match = p.fullmatch(value)
            if match:
                return match["study"]
        return None

    def passport(self, token: str, issuer: str) -> tuple[dict[str, Any], set[str]]:
        """A passport JWT from broker `issuer`: its claims and the scopes its visas grant."""
        broker = self.brokers[issuer]
        claims = verify(token, broker.keys, issuer, broker.audience, self.leeway, what="passport")
        return claims, self.scopes(claims)

    def scopes(self, claims: dict[str, Any]) -> set[str]:
        """PROGRAMDATA-<study>.READ for each verified ControlledAccessGrants visa among the
        claims' `ga4gh_passport_v1` that names a study configured here."""
        visas, holder = claims.get(CLAIM), claims.get("sub")
        # a visa is about one person, who must be the holder: without a subject, no holder
        if not isinstance(visas, list) or not isinstance(holder, str) or not holder:
            return set()
        scopes = set()
        for visa in visas[:MAX_VISAS]:
            if not isinstance(visa, str):
                continue
            study = self.visa_study(visa, holder)
            if study is not None:
                scopes.add(f"PROGRAMDATA-{study}.READ")
        return scopes

    def visa_study(self, visa: str, holder: str) -> Optional[str]:
        try:
            _, unchecked = unverified(visa)
            trusted = self.visa_issuers.get(str(unchecked.get("iss", "")))
            if trusted is None:
                return None
            claims = verify(visa, trusted.keys, trusted.issuer, None, self.leeway, what="visa")
        except (Refused, Unavailable):
            return None
        body = claims.get(VISA)
        if not isinstance(body, dict) or body.get("type") != GRANTS:
            return None
        if body.get("conditions"):
            return None
        if self.accepted_by and body.get("by") not in self.accepted_by:
            return None
        if claims.get("sub") != holder:
            return None
        value = body.get("value")
        return self.study_of(value) if isinstance(value, str) else None
