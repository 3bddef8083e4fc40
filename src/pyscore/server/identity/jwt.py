"""Bearer JWTs from an OpenID provider: signature (the issuer's JWKS), `iss`, `aud`, `exp`,
`nbf`, and scopes read from a configurable claim and mapped onto this server's names."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Optional

import jwt as pyjwt
from jwt import PyJWK
from jwt import exceptions as jwt_errors

from pyscore.server.identity.jwks import KeySet, Refused
from pyscore.server.scopes import is_scope

# asymmetric only: a shared-secret (HS*) or unsigned ("none") token is never accepted
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")


def claim(claims: dict[str, Any], path: str) -> Any:
    """A claim by dotted path (`context.scope`, `realm_access.roles`); None if absent."""
    value: Any = claims
    for step in path.split("."):
        if not isinstance(value, dict) or step not in value:
            return None
        value = value[step]
    return value


def words(value: Any) -> list[str]:
    """A scope claim as a list: a space-separated string (OAuth's `scope`) or a list."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if isinstance(v, (str, int))]
    return []


@dataclass
class ScopeRules:
    """How an identity provider's scopes or roles become ours.

    `claims`: where to read them (dotted paths, each a list or a space-separated string).
    Names already ours (score.READ, PROGRAMDATA-<study>.READ...) are kept unless
    `passthrough` is off; `map` renames (`"genomics-reader": ["score.READ"]`); `patterns`
    are regular expressions whose named groups fill a template
    (`["^study:(?P<study>[\\w-]+):read$", "PROGRAMDATA-{study}.READ"]`). Anything else is
    ignored, so a provider's own scopes (openid, profile, email) grant nothing here."""

    claims: list[str] = field(default_factory=lambda: ["scope"])
    map: dict[str, list[str]] = field(default_factory=dict)
    patterns: list[tuple[re.Pattern[str], str]] = field(default_factory=list)
    passthrough: bool = True

    @classmethod
    def parse(cls, body: dict[str, Any], default_claim: str = "scope") -> ScopeRules:
        claims = body.get("scope_claim", default_claim)
        mapping = {
            str(k): [v] if isinstance(v, str) else [str(x) for x in v]
            for k, v in (body.get("scope_map") or {}).items()
        }
        patterns = [(re.compile(p), str(t)) for p, t in body.get("scope_patterns") or []]
        rules = cls(
            [claims] if isinstance(claims, str) else list(claims),
            mapping,
            patterns,
            bool(body.get("scope_passthrough", True)),
        )
        for target in [*(t for ts in mapping.values() for t in ts)]:
            if not is_scope(target):
                raise ValueError(f"scope_map names {target!r}, which is not a scope of ours")
        return rules

    def scopes(self, claims: dict[str, Any]) -> set[str]:
        theirs = [w for path in self.claims for w in words(claim(claims, path))]
        return self.translate(theirs)

    def translate(self, theirs: Iterable[str]) -> set[str]:
        ours: set[str] = set()
        for name in theirs:
            if self.passthrough and is_scope(name):
                ours.add(name)
            ours.update(self.map.get(name, ()))
            for pattern, template in self.patterns:
                match = pattern.fullmatch(name)
                if match:
                    scope = template.format(**match.groupdict())
                    if is_scope(scope):
                        ours.add(scope)
        return ours


@dataclass
class Issuer:
    """One trusted OpenID provider (settings: `identity.oidc[]`)."""

    issuer: str
    audience: list[str]  # [] ("*" in the settings): not checked
    keys: KeySet
    scopes: ScopeRules
    subject_claim: str = "sub"
    name_claim: str = ""
    leeway: float = 30.0
    algorithms: tuple[str, ...] = ALGORITHMS

    @classmethod
    def parse(cls, body: dict[str, Any]) -> Issuer:
        issuer = str(body.get("issuer", "")).strip()
        jwks_uri = str(body.get("jwks_uri", ""))
        public_key_url = str(body.get("public_key_url", ""))
        if not issuer or (
            not issuer.startswith(("https://", "http://")) and not (jwks_uri or public_key_url)
        ):
            # discovery needs a URL; Ego's issuer is "ego", with its key at public_key_url
            raise ValueError(
                f"identity issuer {issuer!r} must be an http(s) URL, or come with jwks_uri "
                "or public_key_url"
            )
        audience = audiences(body, f"identity issuer {issuer}")
        algorithms = tuple(body.get("algorithms") or ALGORITHMS)
        bad = [a for a in algorithms if a not in ALGORITHMS]
        if bad:
            raise ValueError(f"identity issuer {issuer}: algorithm {bad[0]} is not accepted")
        return cls(
            issuer=issuer,
            audience=audience,
            keys=KeySet(
                issuer,
                jwks_uri,
                float(body.get("jwks_cache_seconds", 3600)),
                float(body.get("jwks_min_refetch_seconds", 30)),
                public_key_url,
            ),
            scopes=ScopeRules.parse(body),
            subject_claim=str(body.get("subject_claim", "sub")),
            name_claim=str(body.get("name_claim", "")),
            leeway=float(body.get("leeway_seconds", 30)),
            algorithms=algorithms,
        )


def audiences(body: dict[str, Any], who: str) -> list[str]:
    """The names this server answers to as `who`'s audience (setting `audience`: one or a
    list; "*": [], not checked). Required: without it a token the issuer minted for any
    other of its services would do here."""
    audience = body.get("audience")
    if not audience:
        raise ValueError(
            f'{who}: set `audience` (this server\'s name; "*" only for an issuer that mints '
            "tokens for this platform alone)"
        )
    if audience == "*":
        return []
    return [audience] if isinstance(audience, str) else [str(a) for a in audience]


def unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a JWT, unchecked: only to choose who should check it."""
    try:
        header = pyjwt.get_unverified_header(token)
        claims = pyjwt.decode(token, options={"verify_signature": False})
    except jwt_errors.PyJWTError:
        raise Refused("invalid_token", "the bearer token is not a well-formed JWT") from None
    return header, claims


def fits(alg: str, key: PyJWK) -> bool:
    """Whether a signature by `alg` can be checked with `key`: RS*/PS* need an RSA key; ES*
    and EdDSA the key's own curve (its `algorithm_name`, read from its type and curve)."""
    if key.key_type == "RSA":
        return alg[:2] in ("RS", "PS")
    return alg == key.algorithm_name


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")


def verify(
    token: str,
    keys: KeySet,
    issuer: str,
    audience: Optional[list[str]],
    leeway: float,
    algorithms: tuple[str, ...] = ALGORITHMS,
    what: str = "token",
) -> dict[str, Any]:
    """The claims of a JWT whose signature, issuer, audience (unless None), expiry and
    not-before all check out; else Refused with a code saying which did not."""
    header, _ = unverified(token)
    alg = header.get("alg")
    if alg not in algorithms:
        raise Refused("bad_algorithm", f"the {what} is signed with {alg!r}, which is not accepted")
    key = keys.key(header.get("kid"))
    if not fits(str(alg), key):
        # else the JWT library fails deep inside (TypeError: a 500, and no refusal recorded)
        raise Refused(
            "bad_algorithm", f"the {what} is signed with {alg!r}, which does not fit its key"
        )
    try:
        return pyjwt.decode(
            token,
            key.key,
            algorithms=[str(alg)],
            audience=audience or None,
            issuer=issuer,
            leeway=leeway,
            options={"require": ["exp", "iss"], "verify_aud": bool(audience)},
        )
    except jwt_errors.ExpiredSignatureError:
        raise Refused("expired_token", f"the {what} has expired") from None
    except jwt_errors.ImmatureSignatureError:
        raise Refused("not_yet_valid", f"the {what} is not valid yet (nbf)") from None
    except jwt_errors.InvalidAudienceError:
        raise Refused("wrong_audience", f"the {what} is not meant for this server (aud)") from None
    except jwt_errors.InvalidIssuerError:
        raise Refused("wrong_issuer", f"the {what} names another issuer") from None
    except jwt_errors.InvalidSignatureError:
        raise Refused("bad_signature", f"the {what}'s signature does not verify") from None
    except jwt_errors.MissingRequiredClaimError as exc:
        raise Refused("invalid_token", f"the {what} lacks the {exc.claim!r} claim") from None
    except jwt_errors.PyJWTError as exc:
        raise Refused("invalid_token", f"the {what} is not valid ({exc})") from None


def check(token: str, issuer: Issuer) -> dict[str, Any]:
    return verify(
        token, issuer.keys, issuer.issuer, issuer.audience, issuer.leeway, issuer.algorithms
    )
