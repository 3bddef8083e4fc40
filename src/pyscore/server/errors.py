"""The server's refusals as plain exceptions: domain code raises them, the HTTP edge
(`web/errors.py`) renders them in each API's shape. No web framework here."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator


class ApiError(Exception):
    """An answer other than success: HTTP status, Song errorId, one-line message."""

    def __init__(self, status: int, error_id: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_id = error_id
        self.message = message


def unauthorized(message: str = "A valid access token is required") -> ApiError:
    return ApiError(401, "unauthorized.token", message)


def forbidden(scope: str, what: str) -> ApiError:
    """A caller lacking a scope: Song's FORBIDDEN_TOKEN."""
    return ApiError(403, "forbidden.token", f"Token missing required scope {scope} to {what}")


def not_found(error_id: str, message: str) -> ApiError:
    return ApiError(404, error_id, message)


def bad_request(error_id: str, message: str) -> ApiError:
    return ApiError(400, error_id, message)


def conflict(error_id: str, message: str) -> ApiError:
    return ApiError(409, error_id, message)


def repeats(keys: Iterable[Hashable]) -> Iterator[bool]:
    """Whether each key of a batch came before in it: a repeat is refused (`repeated`), so a
    batch costs the work of its distinct items only."""
    seen: set[Hashable] = set()
    for key in keys:
        yield key in seen
        seen.add(key)


def repeated(object_id: str, what: str = "") -> ApiError:
    return bad_request(
        "batch.repeated",
        f"Object '{object_id}'{what} is named more than once in this batch; "
        "only its first mention is answered",
    )


RETRY_AFTER = 5  # seconds a client is asked to wait while a dependency is away


class Unavailable(ApiError):
    """A dependency (the database, the object store, its disk) cannot serve this request
    now: 503 with Retry-After, a state that passes without the caller changing anything.
    `dependency` names it for the log line and the metric."""

    def __init__(self, dependency: str, message: str, retry_after: int = RETRY_AFTER) -> None:
        super().__init__(503, f"{dependency.replace('_', '.')}.unavailable", message)
        self.dependency = dependency
        self.retry_after = retry_after
