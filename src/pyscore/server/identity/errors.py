"""Why a bearer was not accepted."""

from __future__ import annotations


class Refused(Exception):
    """A bearer this server will not accept: 401, with a short `code` for metrics and the
    audit trail and a one-line `message` for the caller."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class Unavailable(Exception):
    """The identity provider could not be asked (down, slow, or answering nonsense): 503,
    as the caller's token may well be good."""
