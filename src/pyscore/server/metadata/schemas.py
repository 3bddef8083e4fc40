"""Analysis types: the bundled schemas, registering new versions, and validating a
payload against its type, as Song does."""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

from jsonschema import Draft7Validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pyscore.server.db import utcnow
from pyscore.server.errors import bad_request, not_found
from pyscore.server.metadata.song_json import local_time
from pyscore.server.tables import (
    AnalysisType,
)


def _bundled(name: str) -> dict:
    return json.loads(
        resources.files("pyscore.server").joinpath(f"schemas/{name}.json").read_text()
    )


BUNDLED_TYPES = ("sequencingRead", "variantCall", "sequencing_alignment", "variant_calling")


def base_schema() -> dict:
    return _bundled("analysis_base")


def seed_analysis_types(session: Session) -> None:
    """Register the bundled analysis types (version 1) unless present."""
    for name in BUNDLED_TYPES:
        if session.get(AnalysisType, (name, 1)) is None:
            register_analysis_type(session, name, _bundled(name))


def render(schema: dict) -> dict:
    """Song's rendering: the type's properties and required list merged into the base."""
    rendered = base_schema()
    rendered["properties"] = {**rendered["properties"], **schema.get("properties", {})}
    base_required = rendered["required"]
    rendered["required"] = [
        *base_required,
        *(r for r in schema.get("required", []) if r not in base_required),
    ]
    return rendered


RESERVED = {
    "studyId",
    "analysisState",
    "analysisType",
    "analysisTypeId",
    "samples",
    "files",
    "analysisId",
}


def register_analysis_type(
    session: Session, name: str, schema: dict, options: dict | None = None
) -> AnalysisType:
    if not name or not re.fullmatch(r"[a-zA-Z0-9._-]+", name):
        raise bad_request("malformed.parameter", f"Invalid analysis type name {name!r}")
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        raise bad_request(
            "schema.violation",
            "An analysis type schema must be a JSON object schema with type 'object'",
        )
    clash = RESERVED & set(schema.get("properties", {}))
    if clash:
        raise bad_request(
            "schema.violation", f"An analysis type may not redefine the base fields {sorted(clash)}"
        )
    schema = dict(schema)
    file_types = schema.pop("fileTypes", None) or schema.pop("file_types", None)
    options = dict(options or {})
    if file_types:
        options.setdefault("fileTypes", file_types)
    try:
        Draft7Validator.check_schema(render(schema))
    except Exception as exc:
        raise bad_request("schema.violation", f"Invalid analysis type schema: {exc}") from None
    latest = (
        session.scalar(select(func.max(AnalysisType.version)).where(AnalysisType.name == name)) or 0
    )
    row = AnalysisType(
        name=name, version=latest + 1, schema=schema, options=options, created_at=utcnow()
    )
    session.add(row)
    session.flush()
    return row


def get_analysis_type(session: Session, name: str, version: int | None = None) -> AnalysisType:
    query = select(AnalysisType).where(AnalysisType.name == name)
    if version is not None:
        query = query.where(AnalysisType.version == version)
    row = session.scalar(query.order_by(AnalysisType.version.desc()).limit(1))
    if row is None:
        what = f"{name}" + (f" version {version}" if version is not None else "")
        raise not_found("analysis.type.not.found", f"The analysis type '{what}' does not exist")
    return row


def analysis_type_json(
    row: AnalysisType, with_schema: bool = True, unrendered: bool = False
) -> dict:
    options = {
        "fileTypes": row.options.get("fileTypes", []),
        "externalValidations": row.options.get("externalValidations", []),
    }
    body: dict[str, Any] = {
        "name": row.name,
        "version": row.version,
        "createdAt": local_time(row.created_at),
        "options": options,
        **options,
    }
    if with_schema:
        body["schema"] = row.schema if unrendered else render(row.schema)
    return body


def list_analysis_types(
    session: Session,
    names: list[str] | None = None,
    hide_schema: bool = True,
    latest_only: bool = True,
) -> list[dict]:
    rows = session.scalars(
        select(AnalysisType).order_by(AnalysisType.name, AnalysisType.version)
    ).all()
    if names:
        rows = [r for r in rows if r.name in names]
    if latest_only:
        newest: dict[str, AnalysisType] = {}
        for r in rows:
            newest[r.name] = r
        rows = list(newest.values())
    return [analysis_type_json(r, with_schema=not hide_schema) for r in rows]
