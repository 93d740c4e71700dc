"""The JSON schema of ``edgetl.json`` and a small validator for it (standard library only).

``edgetl_bundle.schema.json`` beside this module is a JSON Schema (draft 2020-12) that other tools can use
as is. The runtime must stay light (no ``jsonschema`` package on a device), so :func:`schema_errors`
implements the keywords that schema uses: ``type``, ``enum``, ``required``, ``properties``,
``additionalProperties: false``, ``items``, ``minItems``/``maxItems``, ``minLength``, ``minimum``/
``maximum``/``exclusiveMinimum`` and local ``$ref``. An unknown keyword in the schema is a programming
error, not silently ignored.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_FILE = Path(__file__).with_name("edgetl_bundle.schema.json")
_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}
_ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description"}
_KEYWORDS = {"type", "enum", "required", "properties", "additionalProperties", "items", "minItems", "maxItems",
             "minLength", "minimum", "maximum", "exclusiveMinimum", "$ref"} | _ANNOTATIONS


@cache
def bundle_schema() -> dict[str, Any]:
    """The parsed schema of ``edgetl.json``."""
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def schema_errors(value: Any, schema: dict[str, Any] | None = None, path: str = "") -> list[str]:
    """Every way ``value`` breaks ``schema`` (default: the bundle schema), as ``"where: what"`` lines.

    An empty list means valid. Paths read like ``inputs[0].dtype``.
    """
    root = schema if schema is not None else bundle_schema()
    return _check(value, root, path, root)


def _check(value: Any, schema: dict[str, Any], path: str, root: dict[str, Any]) -> list[str]:
    unknown = set(schema) - _KEYWORDS
    if unknown:
        raise ValueError(f"schema keyword(s) {sorted(unknown)} are not implemented")
    if "$ref" in schema:
        return _check(value, _resolve(schema["$ref"], root), path, root)
    where = path or "the manifest"
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](value) for t in types):
            return [f"{where} must be {' or '.join(types)}, got {_show(value)}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where} must be one of {', '.join(map(json.dumps, schema['enum']))}, got {_show(value)}"]
    errors = _check_bounds(value, schema, where)
    if isinstance(value, dict):
        errors += _check_object(value, schema, path, root)
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += _check(item, schema["items"], f"{path}[{i}]", root)
    return errors


def _check_object(value: dict[str, Any], schema: dict[str, Any], path: str, root: dict[str, Any]) -> list[str]:
    prefix = f"{path}." if path else ""
    errors = [f"{prefix}{key} is missing" for key in schema.get("required", []) if key not in value]
    properties = schema.get("properties", {})
    if schema.get("additionalProperties") is False:
        errors += [f"{prefix}{key} is not a known key" for key in value if key not in properties]
    for key, sub in properties.items():
        if key in value:
            errors += _check(value[key], sub, f"{prefix}{key}", root)
    return errors


def _check_bounds(value: Any, schema: dict[str, Any], where: str) -> list[str]:
    errors = []
    if isinstance(value, (list, str)):
        size, unit = len(value), "items" if isinstance(value, list) else "characters"
        if size < schema.get("minItems", schema.get("minLength", 0)):
            errors.append(f"{where} needs at least {schema.get('minItems', schema.get('minLength'))} {unit}")
        if "maxItems" in schema and size > schema["maxItems"]:
            errors.append(f"{where} may have at most {schema['maxItems']} {unit}")
    if _TYPES["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{where} must be >= {schema['minimum']}, got {value}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{where} must be <= {schema['maximum']}, got {value}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            errors.append(f"{where} must be > {schema['exclusiveMinimum']}, got {value}")
    return errors


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    if not ref.startswith("#/"):
        raise ValueError(f"only local $ref are supported, got {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."
