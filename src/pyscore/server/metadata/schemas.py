"""Analysis types: the bundled schemas, registering new versions, and validating a
payload against its type, as Song does."""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

from jsonschema import Draft7Validator
from jsonschema.exceptions import SchemaError
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


def seed_analysis_types(session: Session) -> None:
    """Register the bundled analysis types (version 1) unless present."""
    for name in BUNDLED_TYPES:
        if session.get(AnalysisType, (name, 1)) is None:
            register_analysis_type(session, name, _bundled(name))


def render(schema: dict, base: str = "analysis_base") -> dict:
    """Song's rendering: the type's properties and required list merged into a base (the
    submission's, or an update's)."""
    rendered = _bundled(base)
    rendered["properties"] = {**rendered["properties"], **schema.get("properties", {})}
    base_required = rendered["required"]
    rendered["required"] = [
        *base_required,
        *(r for r in schema.get("required", []) if r not in base_required),
    ]
    return rendered


def violations(schema: dict, document: object, validator: Any = Draft7Validator) -> None:
    """400 schema.violation naming (up to 10 of) the places where `document` breaks
    `schema`, as Song's validation does; nothing when it does not."""
    problems = sorted(validator(schema).iter_errors(document), key=lambda e: list(e.absolute_path))
    if problems:
        raise bad_request(
            "schema.violation",
            "; ".join(
                f"#/{'/'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in problems[:10]
            ),
        )


def registration_schema() -> dict:
    """The meta-schema an analysis type's schema must satisfy to be registered (Song's
    `GET /schemas/registration`)."""
    return _bundled("analysis_type_registration")


REGISTRATION = "registration"  # a path of its own, so never a type's name


def check_type_name(name: object) -> str:
    if not isinstance(name, str) or not re.fullmatch(r"[a-zA-Z0-9._-]+", name):
        raise bad_request(
            "malformed.parameter",
            f"The analysisType name {name!r} does not match the regex: [a-zA-Z0-9._-]+",
        )
    if name == REGISTRATION:
        raise bad_request(
            "illegal.analysis.type.name", f"Cannot register an analysisType named '{name}'"
        )
    return name


def check_registration(schema: object) -> dict:
    """Song's rules for a schema to register: the meta-schema (400 schema.violation), then a
    valid JSON schema once rendered (400 malformed.json.schema)."""
    if not isinstance(schema, dict):
        raise bad_request("schema.violation", "The schema must be a JSON object")
    problems = sorted(
        Draft7Validator(registration_schema()).iter_errors(schema),
        key=lambda e: list(e.absolute_path),
    )
    if problems:
        raise bad_request(
            "schema.violation",
            "; ".join(
                f"#/{'/'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in problems[:10]
            ),
        )
    try:
        Draft7Validator.check_schema(render(schema))
    except SchemaError as exc:
        raise bad_request("malformed.json.schema", f"Invalid JSON schema: {exc.message}") from None
    return schema


def register_analysis_type(
    session: Session, name: str, schema: dict, options: dict | None = None
) -> AnalysisType:
    """A new version of `name` (1 for a new type). Without fileTypes of its own, a version
    keeps the latest's, as Song does."""
    check_type_name(name)
    schema = dict(check_registration(schema))
    file_types = schema.pop("fileTypes", None) or schema.pop("file_types", None)
    schema.pop("file_types", None)
    options = dict(options or {})
    if file_types:
        options.setdefault("fileTypes", file_types)
    latest = session.scalar(
        select(AnalysisType)
        .where(AnalysisType.name == name)
        .order_by(AnalysisType.version.desc())
        .limit(1)
    )
    if latest is not None and not options.get("fileTypes"):
        options["fileTypes"] = latest.options.get("fileTypes", [])
    row = AnalysisType(
        name=name,
        version=(latest.version if latest else 0) + 1,
        schema=schema,
        options=options,
        created_at=utcnow(),
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


SORTS = {"version": (AnalysisType.created_at, AnalysisType.version), "name": (AnalysisType.name,)}


def list_analysis_types(
    session: Session,
    names: list[str] | None = None,
    versions: list[int] | None = None,
    *,
    hide_schema: bool = False,
    unrendered_only: bool = False,
    offset: int = 0,
    limit: int = 20,
    sort: list[str] | None = None,
    sort_order: str | None = None,
) -> dict:
    """Song's ListAnalysisTypes: every version, filtered by names and versions, sorted by
    `sort` (version: the order of registration, as Song's ids; name), all in `sort_order`
    (DESC by default), `offset` elements skipped; PageDTO {limit, offset, count, resultSet}."""
    if versions and min(versions) < 1:
        raise bad_request("malformed.parameter", "The requested versions must be greater than 0")
    for name, value in (("offset", offset), ("limit", limit)):
        if not 0 <= value < 2**31:
            raise bad_request(
                "malformed.parameter", f"The parameter '{name}' must be within 0..2^31-1"
            )
    order = (sort_order or "DESC").upper()
    if order not in ("ASC", "DESC"):
        raise bad_request(
            "malformed.parameter", f"The sortOrder value '{sort_order}' is not one of [ASC, DESC]"
        )
    columns = []
    for word in sort or ["version"]:
        if word not in SORTS:
            raise bad_request(
                "malformed.parameter", f"The sort variable '{word}' is not one of [version, name]"
            )
        columns += [c.asc() if order == "ASC" else c.desc() for c in SORTS[word]]
    where = []
    if names:
        where.append(AnalysisType.name.in_(names))
    if versions:
        where.append(AnalysisType.version.in_(versions))
    count = session.scalar(select(func.count()).select_from(AnalysisType).where(*where)) or 0
    rows = session.scalars(
        select(AnalysisType)
        .where(*where)
        .order_by(*columns, AnalysisType.name, AnalysisType.version)
        .offset(offset)
        .limit(limit)
    )
    return {
        "limit": limit,
        "offset": offset,
        "count": count,
        "resultSet": [
            analysis_type_json(r, with_schema=not hide_schema, unrendered=unrendered_only)
            for r in rows
        ],
    }


def latest_analysis_types(session: Session) -> list[dict]:
    """The latest version of every type, with its schema (the legacy `/schema/list`)."""
    newest: dict[str, AnalysisType] = {}
    for r in session.scalars(
        select(AnalysisType).order_by(AnalysisType.name, AnalysisType.version)
    ):
        newest[r.name] = r
    return [analysis_type_json(r) for r in newest.values()]
