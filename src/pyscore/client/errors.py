"""Client-side errors: each maps to one line on stderr and one exit code.

Exit codes (documented in `score-client --help`):
0 ok; 1 some files failed; 2 usage / bad input (a wrong setting too); 3 auth or permission;
4 integrity (MD5/size); 5 server unreachable.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_INTEGRITY = 4
EXIT_UNREACHABLE = 5


class ScoreError(Exception):
    """An error the user can act on; str(error) is the one line we print."""

    exit_code = EXIT_FAILED
    status: int | None = None  # the HTTP status a server refused with, if that was the cause


class UsageError(ScoreError):
    exit_code = EXIT_USAGE


class SettingError(UsageError):
    """A setting that cannot work (a service URL refused on first contact, one without a
    scheme, one whose path is not the service's): the whole run stops with it, at once."""


class AuthError(ScoreError):
    exit_code = EXIT_AUTH
    scope: str | None = None  # the scope a 403 said was missing, when it said


class NotFoundError(ScoreError):
    exit_code = EXIT_FAILED


class NotPublishedError(ScoreError):
    """The file exists but its analysis is not published: not the user's mistake in typing."""

    exit_code = EXIT_FAILED


class IntegrityError(ScoreError):
    exit_code = EXIT_INTEGRITY


class UnreachableError(ScoreError):
    exit_code = EXIT_UNREACHABLE


class ServerError(ScoreError):
    """The server answered, but with an error that is not the user's fault (5xx)."""

    exit_code = EXIT_FAILED


class DiskFullError(ScoreError):
    exit_code = EXIT_FAILED
