"""Google's generationConfig read into VLQ's terms: the generation options, and structured output.

`response_mime_type: application/json` with `response_schema` (Google's OpenAPI-style Schema: "OBJECT",
"STRING", `nullable`, `propertyOrdering`) or `response_json_schema` (plain JSON Schema) asks for the same
constrained decoding as OpenAI's `json_schema` response_format (service.core.structured), so it is handed on
in that shape. Field names are accepted in snake_case and camelCase alike, as Google's REST API does.
"""
from __future__ import annotations

from typing import Any

import jsonschema

from service.core.errors import ApiError, ErrorCode
from service.core.structured import check_schema

# Google's Schema fields that mean the same in JSON Schema, under either spelling.
_SAME = {"title": "title", "description": "description", "default": "default", "required": "required",
         "minimum": "minimum", "maximum": "maximum", "pattern": "pattern"}
_COUNTS = {"min_items": "minItems", "max_items": "maxItems", "min_length": "minLength", "max_length": "maxLength",
           "min_properties": "minProperties", "max_properties": "maxProperties"}  # int64: strings in proto JSON
_IGNORED = {"example", "format", "property_ordering"}  # handled (ordering) or no constraint JSON Schema needs here
_TYPES = {"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"}
_STRING_FORMATS = {"date-time", "date", "time"}  # kept; "enum" is the enum itself, numeric formats are sizes
_SCHEMA_FIELD = "generation_config.response_schema"


def field(mapping: dict[str, Any], snake: str) -> Any:
    """A field under its snake_case name or its camelCase one (`max_output_tokens` or `maxOutputTokens`)."""
    head, *rest = snake.split("_")
    return mapping.get(snake, mapping.get(head + "".join(word.title() for word in rest)))


def generation_fields(config: dict[str, Any]) -> dict[str, Any]:
    """generationConfig's options under the job's field names (validated by service.core.jobs)."""
    return {"temperature": config.get("temperature"), "max_tokens": field(config, "max_output_tokens"),
            "top_p": field(config, "top_p"), "seed": config.get("seed"), "response_format": response_format(config)}


def response_format(config: dict[str, Any]) -> dict[str, Any] | None:
    """The OpenAI-shaped response_format generationConfig asks for; None for text."""
    mime = field(config, "response_mime_type")
    google_schema, json_schema = field(config, "response_schema"), field(config, "response_json_schema")
    if mime in (None, "text/plain"):
        if google_schema is not None or json_schema is not None:
            raise _invalid("a response schema needs response_mime_type 'application/json'",
                           "generation_config.response_mime_type")
        return None
    if mime != "application/json":
        raise ApiError(ErrorCode.INVALID_FIELD,
                       f"response_mime_type {mime!r} is not supported; send 'text/plain' or 'application/json'.",
                       {"field": "generation_config.response_mime_type"})
    if google_schema is not None and json_schema is not None:
        raise _invalid("send response_schema or response_json_schema, not both", _SCHEMA_FIELD)
    if json_schema is not None:
        schema, where = json_schema, "generation_config.response_json_schema"
    elif google_schema is not None:
        schema, where = json_schema_of(google_schema), _SCHEMA_FIELD
    else:
        return {"type": "json_object"}
    try:
        check_schema(schema)
    except (jsonschema.SchemaError, TypeError) as exc:
        raise _invalid(f"is not a usable schema: {getattr(exc, 'message', exc)}", where) from None
    return {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}


def json_schema_of(schema: Any, where: str = _SCHEMA_FIELD) -> dict[str, Any]:
    """Google's Schema (the OpenAPI 3.0 subset its API takes) as the JSON Schema it means."""
    if not isinstance(schema, dict):
        raise _invalid("must be an object", where)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        name = _snake(key)
        if name in _SAME:
            out[_SAME[name]] = value
        elif name in _COUNTS:
            out[_COUNTS[name]] = _count(value, f"{where}.{key}")
        elif name == "enum":
            out["enum"] = value
        elif name == "items":
            out["items"] = json_schema_of(value, f"{where}.items")
        elif name == "any_of":
            if not isinstance(value, list) or not value:
                raise _invalid("must be a non-empty list", f"{where}.{key}")
            out["anyOf"] = [json_schema_of(branch, f"{where}.{key}[{index}]") for index, branch in enumerate(value)]
        elif name == "properties":
            if not isinstance(value, dict):
                raise _invalid("must be an object", f"{where}.properties")
            out["properties"] = {prop: json_schema_of(sub, f"{where}.properties.{prop}") for prop, sub in value.items()}
        elif name not in {"type", "nullable", *_IGNORED}:
            raise _invalid(f"has a field Google's Schema does not define: {key!r}", where)
    kind = schema.get("type")
    if kind is not None:
        if not isinstance(kind, str) or kind.upper() not in _TYPES:
            raise _invalid(f"'type' must be one of {', '.join(sorted(_TYPES))}", f"{where}.type")
        out["type"] = kind.lower()
    string_format = schema.get("format")
    if out.get("type") == "string" and string_format in _STRING_FORMATS:
        out["format"] = string_format
    _order(out, field(schema, "property_ordering"), where)
    if schema.get("nullable") is True:
        _nullable(out)
    return out


def _order(out: dict[str, Any], ordering: Any, where: str) -> None:
    """Properties in `propertyOrdering` order (the order the output's keys are generated in), the rest after."""
    if ordering is None or "properties" not in out:
        return
    properties = out["properties"]
    if not isinstance(ordering, list) or set(ordering) - set(properties):
        raise _invalid("'propertyOrdering' must list names of 'properties'", f"{where}.propertyOrdering")
    out["properties"] = {**{name: properties[name] for name in ordering}, **properties}


def _nullable(out: dict[str, Any]) -> None:
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    if isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    elif "anyOf" in out:
        out["anyOf"] = [*out["anyOf"], {"type": "null"}]


def _count(value: Any, where: str) -> int:
    """A count, as a number or as the decimal string proto JSON writes an int64 as."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise _invalid("must be a non-negative integer", where)


def _snake(key: str) -> str:
    return "".join(f"_{char.lower()}" if char.isupper() else char for char in key)


def _invalid(problem: str, where: str) -> ApiError:
    return ApiError(ErrorCode.INVALID_RESPONSE_FORMAT, f"'{where}' {problem}.", {"field": where})
