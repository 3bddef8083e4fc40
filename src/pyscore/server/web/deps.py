"""The FastAPI dependencies every protocol's routes share: the platform, a database session,
the caller, and the URL signer. Routes import these; nothing here imports a route."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Optional

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from pyscore.server.auth import Principal, principal_for
from pyscore.server.objects import Signer
from pyscore.server.platform import Platform


def platform(request: Request) -> Platform:
    return request.app.state.platform


PlatformDep = Annotated[Platform, Depends(platform)]


def session(p: PlatformDep) -> Iterator[Session]:
    with p.db.session() as s:
        yield s


# scope="function": commit before the response goes out, so a client that got an answer sees
# its write on the very next request (FastAPI's default would commit after sending).
SessionDep = Annotated[Session, Depends(session, scope="function")]


def principal(request: Request, s: SessionDep, p: PlatformDep) -> Principal | None:
    external = p.identity.resolve if p.identity.configured else None
    return principal_for(s, request.headers.get("authorization"), external)


PrincipalDep = Annotated[Optional[Principal], Depends(principal)]


def base_url(request: Request) -> str:
    """Where clients reach this server: `public_url`, else this request's scheme and Host
    (checked by edge.HostCheck against the names of the listening address)."""
    public = request.app.state.platform.settings.public_url
    return (public or str(request.base_url)).rstrip("/")


def signer(request: Request, p: PlatformDep) -> Signer:
    return Signer(
        p.store,
        base_url(request),
        p.settings.download_expiry_seconds,
        p.settings.upload_expiry_seconds,
    )


SignerDep = Annotated[Signer, Depends(signer)]
