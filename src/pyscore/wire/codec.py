"""Checked decoding of JSON into wire dataclasses, and encoding them back."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, TypeVar

T = TypeVar("T")


class WireError(ValueError):
    """Input that does not follow the contract; str(error) is one line naming the problem."""


def from_wire(kind: type[T], data: Any, what: str) -> T:
    """Decoded JSON as a wire object, checked: unknown fields are ignored (as the original's
    Jackson mappers do); a missing or mistyped field is a one-line WireError."""
    import msgspec

    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        raise WireError(
            f"{what}: the server's answer is not a valid {kind.__name__}: {exc}"
        ) from None


def from_json(kind: Any, content: bytes, what: str) -> Any:
    """JSON bytes decoded straight into `kind` (a wire type, a list of them, a msgspec Struct),
    checked as `from_wire` checks: no dict per object in between, so a listing of a million
    objects costs their objects, not three times that."""
    import msgspec

    try:
        return msgspec.json.decode(content, type=kind)
    except msgspec.ValidationError as exc:
        raise WireError(f"{what}: the server's answer is not valid: {exc}") from None
    except msgspec.DecodeError as exc:
        raise WireError(f"{what}: the server's answer is not JSON: {exc}") from None


def to_wire(obj: Any) -> dict[str, Any]:
    """A wire object as JSON-ready data, leaving out fields that are None (as Score does)."""

    def prune(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: prune(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [prune(v) for v in value]
        return value

    pruned: dict[str, Any] = prune(asdict(obj))
    return pruned
