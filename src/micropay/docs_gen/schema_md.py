"""JSON Schema (as FastAPI writes it in OpenAPI 3.1) to Markdown: types, limits, field tables."""

from __future__ import annotations

import json
import re
from typing import Any

REF_PREFIX = "#/components/schemas/"
PATTERN_CHARS_SHOWN = 60
_ALTERNATIVES = re.compile(r"\^\(([A-Za-z0-9_]+(?:\|[A-Za-z0-9_]+)+)\)\$")

__all__ = [
    "PATTERN_CHARS_SHOWN",
    "REF_PREFIX",
    "cell",
    "code",
    "constraints",
    "field_rows",
    "ref_name",
    "schema_anchor",
    "table",
    "type_text",
]


def cell(text: str) -> str:
    """Text safe in a Markdown table cell: pipes escaped, one line."""
    return " ".join(text.replace("|", "\\|").split())


def code(value: object) -> str:
    """Inline code of a value (JSON for non-strings)."""
    text = value if isinstance(value, str) else json.dumps(_plain(value), ensure_ascii=False)
    fence = "``" if "`" in text else "`"
    return f"{fence}{text}{fence}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines.extend("| " + " | ".join(cell(c) or " " for c in row) + " |" for row in rows)
    return lines


def ref_name(ref: str) -> str:
    return ref.removeprefix(REF_PREFIX)


def schema_anchor(name: str) -> str:
    return f"schema-{name.lower()}"


def type_text(schema: dict[str, Any]) -> str:
    """A short type: ``string``, ``integer or null``, ``array of [PurchaseOut](#...)``."""
    if "$ref" in schema:
        name = ref_name(schema["$ref"])
        return f"[{name}](#{schema_anchor(name)})"
    if "const" in schema:
        return f"{code(schema['const'])}"
    if "enum" in schema:
        return "one of " + ", ".join(code(v) for v in schema["enum"])
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            return " or ".join(type_text(s) for s in schema[combinator])
    kind = schema.get("type")
    if kind == "array":
        items = schema.get("items")
        return f"array of {type_text(items)}" if isinstance(items, dict) else "array"
    if kind == "object":
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            return f"object of {type_text(extra)}"
        return "object"
    if isinstance(kind, list):
        return " or ".join(str(k) for k in kind)
    text = str(kind) if kind else "any"
    return f"{text} ({schema['format']})" if "format" in schema else text


def constraints(schema: dict[str, Any]) -> str:
    """The schema's limits and default, as one short line."""
    parts: list[str] = []
    branches = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
    for target in [schema, *branches]:
        parts.extend(_limits(target))
    if "default" in schema:
        parts.append(f"default {code(schema['default'])}")
    return "; ".join(parts)


def _limits(schema: dict[str, Any]) -> list[str]:
    parts: list[str] = []
    bounds = (
        ("minimum", "≥"),
        ("exclusiveMinimum", ">"),
        ("maximum", "≤"),
        ("exclusiveMaximum", "<"),
    )
    parts.extend(f"{sign} {_number(schema[key])}" for key, sign in bounds if key in schema)
    for key, what in (("minLength", "characters"), ("minItems", "items")):
        low, high = schema.get(key), schema.get(key.replace("min", "max"))
        if low is not None or high is not None:
            parts.append(_range(low, high, what))
    if "multipleOf" in schema:
        parts.append(f"multiple of {_number(schema['multipleOf'])}")
    if "pattern" in schema:
        parts.append(_pattern(schema["pattern"]))
    if isinstance(schema.get("items"), dict):
        inner = _limits(schema["items"])
        if inner:
            parts.append("each: " + ", ".join(inner))
    return parts


def _range(low: object, high: object, what: str) -> str:
    if low is not None and high is not None:
        return f"{_number(low)}–{_number(high)} {what}"
    if low is not None:
        return f"at least {_number(low)} {what}"
    return f"at most {_number(high)} {what}"


def _pattern(pattern: str) -> str:
    if len(pattern) <= PATTERN_CHARS_SHOWN:
        return "pattern " + code(pattern)
    choices = _ALTERNATIVES.fullmatch(pattern)
    if choices:  # ^(AED|AFN|...|ZWG)$: a list of words
        words = choices.group(1).split("|")
        first, last = code(words[0]), code(words[-1])
        return f"one of {len(words)} values: {first} … {last} (all in openapi.json)"
    return "pattern " + code(pattern[:PATTERN_CHARS_SHOWN] + "…") + " (in full in openapi.json)"


def _number(value: object) -> str:
    return str(_plain(value))


def _plain(value: object) -> object:
    """Whole floats as ints (pydantic writes ``le=10**10`` as ``10000000000.0``)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def field_rows(schema: dict[str, Any]) -> list[list[str]]:
    """Rows (field, type, required, constraints, description) of an object schema."""
    required = set(schema.get("required", []))
    rows = []
    for name, prop in schema.get("properties", {}).items():
        rows.append(
            [
                code(name),
                type_text(prop),
                "yes" if name in required else "no",
                constraints(prop),
                prop.get("description", ""),
            ]
        )
    return rows
