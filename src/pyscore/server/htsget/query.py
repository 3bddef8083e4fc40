"""An htsget request's parameters (GET query or POST body), checked: format, class, fields,
tags, regions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyscore.server.errors import ApiError

KINDS = {"reads": ("BAM", "CRAM"), "variants": ("VCF", "BCF")}
FIELDS = {"QNAME", "FLAG", "RNAME", "POS", "MAPQ", "CIGAR", "RNEXT", "PNEXT", "TLEN", "SEQ", "QUAL"}


def invalid(kind: str, message: str, status: int = 400) -> ApiError:
    """A refusal in htsget's terms (`kind`: InvalidInput, NotFound, UnsupportedFormat...)."""
    return ApiError(status, kind, message)


@dataclass
class Query:
    fmt: str
    header_only: bool
    regions: list[tuple[str, int | None, int | None]]  # (name or "*", start, end), 0-based


def parse_query(kind: str, params: dict[str, Any], body: bool = False) -> Query:
    fmt = str(params.get("format") or KINDS[kind][0]).upper()
    if fmt not in KINDS[kind]:
        raise invalid("UnsupportedFormat", f"format {fmt} is not one of {KINDS[kind]}")
    klass = params.get("class")
    if klass not in (None, "header"):
        raise invalid("InvalidInput", f"class must be 'header', not {klass!r}")
    for key in ("fields", "tags", "notags"):
        value = params.get(key)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v] if value else []
        if value is not None and not (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            raise invalid("InvalidInput", f"{key} must be a list of strings")
        if key == "fields" and value and not set(value) <= FIELDS:
            raise invalid("InvalidInput", f"unknown fields {sorted(set(value) - FIELDS)}")
        params[key] = value
    if params.get("tags") and params.get("notags") and set(params["tags"]) & set(params["notags"]):
        raise invalid("InvalidInput", "tags and notags overlap")
    regions: list[tuple[str, int | None, int | None]] = []
    raw_regions = params.get("regions") if body else None
    if raw_regions is None and params.get("referenceName") is not None:
        raw_regions = [
            {
                "referenceName": params.get("referenceName"),
                "start": params.get("start"),
                "end": params.get("end"),
            }
        ]
    elif raw_regions is None and (params.get("start") is not None or params.get("end") is not None):
        raise invalid("InvalidInput", "start and end need referenceName")
    if raw_regions is not None and not isinstance(raw_regions, list):
        raise invalid("InvalidInput", "regions must be a list")
    for region in raw_regions or []:
        name = region.get("referenceName") if isinstance(region, dict) else None
        if not isinstance(name, str) or not name:
            raise invalid("InvalidInput", "each region needs a referenceName (a string)")
        start, end = (_coordinate(region.get(k), k) for k in ("start", "end"))
        if name == "*" and (start is not None or end is not None):
            raise invalid("InvalidInput", "start and end cannot be used with referenceName=*")
        if start is not None and end is not None and start > end:
            raise invalid("InvalidRange", f"start {start} is greater than end {end}")
        regions.append((name, start, end))
    if klass == "header" and regions:
        raise invalid("InvalidInput", "class=header cannot be combined with a region")
    return Query(fmt, klass == "header", regions)


def _coordinate(value: Any, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise invalid("InvalidInput", f"{name} must be an integer, not {value!r}") from None
    if not 0 <= number < 2**32:
        raise invalid("InvalidRange", f"{name} {number} is out of range")
    return number
