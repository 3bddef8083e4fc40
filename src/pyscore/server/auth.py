"""Tokens and the one access decision.

Tokens are random secrets shown once and stored as SHA-256 hashes (they carry 256 bits of
entropy, so a slow password hash would buy nothing). Scope names and what each allows are
`scopes.py`'s; this module resolves a bearer into a `Principal` (our tokens, else
`identity/`) and records each decision in the audit trail.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pyscore.server import audit
from pyscore.server.db import as_utc, utcnow
from pyscore.server.errors import ApiError, forbidden, unauthorized
from pyscore.server.identity.errors import Refused, Unavailable
from pyscore.server.scopes import (
    ADMIN,
    READ_ALL,
    Action,
    Principal,
    missing,
    normal_scopes,
    study_scope,
    validate_scopes,
)
from pyscore.server.tables import Token

__all__ = [
    "Action",
    "Principal",
    "authorize",
    "can",
    "create_token",
    "expired_at",
    "hash_token",
    "principal_for",
    "readable_studies",
    "study_scope",
    "validate_scopes",
]


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(
    session: Session, user: str, scopes: list[str], expires_in: timedelta | None = None
) -> tuple[Token, str]:
    """Store a new token; return its record and the secret, which is never stored."""
    secret = secrets.token_urlsafe(32)
    now = utcnow()
    token = Token(
        token_id=secrets.token_hex(6),
        token_hash=hash_token(secret),
        user=user,
        scopes=validate_scopes(scopes),
        created_at=now,
        expires_at=now + expires_in if expires_in else None,
    )
    session.add(token)
    return token, secret


def principal_for(
    session: Session, authorization: str | None, external: Callable[[str], Any] | None = None
) -> Principal | None:
    """The caller behind an Authorization header; None for anonymous. Bad tokens raise 401.

    A bearer that is not one of our tokens goes to `external` (identity.Identity.resolve,
    when identity providers are configured): it returns an identity.External or None, or
    raises identity.Refused (401) or identity.Unavailable (503)."""
    if not authorization:
        audit.identified(audit.ANONYMOUS)
        return None
    scheme, _, secret = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise _refused("no_token", "Authorization header must be 'Bearer <token>'")
    secret = secret.strip()
    # ours are token_urlsafe (no '.'): a JWT is another issuer's, not worth a query
    ours = external is None or "." not in secret
    token = (
        session.scalar(select(Token).where(Token.token_hash == hash_token(secret)))
        if ours
        else None
    )
    if token is None:
        found = _external(external, secret) if external is not None else None
        if found is None:
            raise _refused("invalid_token", "Invalid access token")
        return found
    if token.revoked_at is not None:
        raise _refused("revoked_token", "Access token has been revoked")
    expires = as_utc(token.expires_at)
    if expires is not None and expires <= utcnow():
        raise _refused("expired_token", "Access token has expired")
    audit.identified(token.token_id, token.user)
    return Principal(token.token_id, token.user, normal_scopes(token.scopes))


def _refused(code: str, message: str) -> ApiError:
    audit.token_refused(code, message)
    return unauthorized(message)


def _external(resolve: Callable[[str], Any], secret: str) -> Principal | None:
    try:
        found = resolve(secret)
    except Refused as exc:
        raise _refused(exc.code, f"Invalid access token: {exc.message}") from None
    except Unavailable as exc:
        audit.token_refused("identity_unavailable", str(exc))
        raise ApiError(
            503, "identity.unavailable", f"The identity provider cannot be asked now: {exc}"
        ) from None
    if found is None:
        return None
    audit.identified(found.subject, found.name, found.issuer)
    return Principal(found.subject, found.name, normal_scopes(found.scopes), found.issuer)


def authorize(
    principal: Principal | None,
    action: Action,
    study_id: str | None = None,
    access: str | None = None,
    what: str = "access this resource",
    anonymous_forbidden: bool = False,
    *,
    object_id: str | None = None,
    event: str | None = None,
) -> None:
    """The only place that says yes or no to a request. Returns quietly or raises 401/403.

    READ of an `open` file needs nothing; otherwise the caller's scopes decide, by the
    rule of `scopes.missing` (score.ADMIN satisfies everything). A caller without a token
    gets 401, or with `anonymous_forbidden` 403 like any caller lacking the scope (the
    original Score's `/download/{id}` answers so).

    The audit trail (audit.py) records every refusal, and the grants of routes that name
    their `event` (download, htsget, upload.initiate...), except grants of open files.
    """
    refusal = _decide(principal, action, study_id, access, what, anonymous_forbidden)
    if refusal is not None:
        code = "missing_scope" if principal is not None else "no_token"
        audit.decided(event or "", False, study_id, object_id, refusal.message, code)
        raise refusal
    if event is not None and not (action is Action.READ and access == "open"):
        audit.decided(event, True, study_id, object_id)


def _decide(
    principal: Principal | None,
    action: Action,
    study_id: str | None,
    access: str | None,
    what: str,
    anonymous_forbidden: bool,
) -> ApiError | None:
    if action is Action.READ and access == "open":
        return None
    if principal is None:
        if anonymous_forbidden and action is not Action.ADMIN:
            needed = missing(frozenset(), action, study_id)
            return forbidden(str(needed), f"{what} (no access token was sent)")
        return unauthorized(f"A valid access token is required to {what}")
    needed = missing(principal.scopes, action, study_id)
    return None if needed is None else forbidden(needed, what)


def can(
    principal: Principal | None,
    action: Action,
    study_id: str | None = None,
    access: str | None = None,
) -> bool:
    """Whether `authorize` would say yes (asked by pages that show what a caller may do;
    not recorded in the audit trail)."""
    return _decide(principal, action, study_id, access, "", False) is None


def readable_studies(principal: Principal | None, studies: list[str]) -> set[str] | None:
    """The studies whose controlled files a caller may read: None means all of them.
    (Open files are readable by anyone; this answers for the rest, as `authorize` would.)"""
    if principal is None:
        return set()
    if {READ_ALL.upper(), ADMIN.upper()} & principal.scopes:
        return None
    return {s for s in studies if study_scope(s, Action.READ) in principal.scopes}


def expired_at(token: Token, now: datetime | None = None) -> bool:
    expires = as_utc(token.expires_at)
    return expires is not None and expires <= (now or utcnow())
