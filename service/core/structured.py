"""JSON-schema-constrained output: the `response_format` parser, and the grammar handed to the engine.

OpenVINO GenAI's `json_schema` grammar lets a model pad with unlimited whitespace, so a weak (or random)
model can fill its whole token budget with spaces and get cut off mid-object. For the schemas that fall
in a common subset (objects, bounded strings and arrays, numbers, enums, nulls), `compile_schema` turns
the schema into a whitespace-free regex instead, and reports how many tokens the longest possible output
can take: with that as max_tokens, the output always parses and validates, whatever the model.
Other schemas go to the engine as `json_schema` and are checked after generation.
"""
from __future__ import annotations

import functools
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, ClassVar

import jsonschema

from service.core import json_input
from service.core.errors import ApiError, ErrorCode
from service.core.validation import Spec, read_json

log = logging.getLogger(__name__)

# String characters: printable ASCII and Latin-1/Latin Extended-A (at most 2 UTF-8 bytes each), no quote,
# backslash or control characters, so a string's length in the regex is its JSON length, and escapes never occur.
_STRING_CHARS = '[ !#-\\[\\]-~\u00a0-\u017f]'
_BYTES_PER_CHAR = 2
_NUMBER_DIGITS = 9  # integer digits of a number, so a number is never unbounded
_DEFAULT_MAX_LENGTH = 256
_DEFAULT_MAX_ITEMS = 32
# An array's regex holds its item's twice, so nesting doubles it at every level: past this size a schema is left
# to the engine's json_schema grammar instead (a 60-level array schema would otherwise need 2^60 characters).
_MAX_REGEX_CHARS = 1024 * 1024


@dataclass(frozen=True)
class Grammar:
    """A compiled schema: a regex the output must match, and the tokens its longest match can take."""

    regex: str
    max_tokens: int


def check_schema(schema: Any) -> None:
    """Raise jsonschema.SchemaError (or TypeError) unless `schema` is a usable JSON Schema object."""
    if not isinstance(schema, dict):
        raise TypeError("a JSON Schema must be an object")
    jsonschema.Draft202012Validator.check_schema(schema)
    # A schema in the regex subset reaches the engine as our own regex (tested against the engine); any other
    # goes as a JSON schema, whose grammar the engine builds inside a step every running request shares.
    if compile_schema(schema) is None:
        problem = _engine_refusal(_canonical(schema))
        if problem is not None:
            raise jsonschema.SchemaError(f"the engine cannot build a grammar for it: {problem}")


def _canonical(schema: dict[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


# xgrammar's messages start with a time and a build path: "[01:39:52] /project/cpp/x.cc:4950: Cannot find ..."
_LIBRARY_PREFIX = re.compile(r"^\[[^\]]*\]\s*\S+:\d+:\s*(Check failed:\s*)?")


@functools.lru_cache(maxsize=1024)
def _engine_refusal(schema: str) -> str | None:
    """Why the engine's grammar library (xgrammar, which OpenVINO GenAI links) refuses this JSON schema, or None.

    The engine builds the grammar inside a step shared by every request in flight, so a schema it refuses must
    be caught here, at submit. Cached: presets and repeated response formats compile once per process.
    """
    import xgrammar  # imported on first use: it loads torch, which an API process needs for nothing else

    try:
        xgrammar.Grammar.from_json_schema(schema, any_whitespace=True)
    except Exception as exc:  # xgrammar raises RuntimeError or ValueError, with build paths in the text
        log.info("the grammar library refused a schema: %s", exc)
        message = _LIBRARY_PREFIX.sub("", str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        return (message or type(exc).__name__)[:300]
    return None


def validation_error(instance: Any, schema: dict[str, Any]) -> str | None:
    """Why `instance` does not validate against `schema`, or None if it does."""
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(instance))
    return None if error is None else error.message


def parse_response_format(value: Any, max_depth: int = json_input.MAX_DEPTH) -> dict[str, Any] | None:
    """The JSON schema an OpenAI-shaped `response_format` asks for; None for `{"type": "text"}` or absent.

    `{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}` or `{"type": "json_object"}`.
    A JSON string (as multipart forms send it) is accepted too. Checked as a JSON body is (depth first: jsonschema
    recurses per level, and a schema ~120 levels deep would exhaust Python's stack inside it).
    """
    if value is None or value == "":
        return None
    value = read_json(value, "response_format", max_depth, _invalid)
    if not isinstance(value, dict):
        raise _invalid("must be an object")
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind != "json_schema":
        raise _invalid("'type' must be json_schema, json_object or text")
    spec = value.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
        raise _invalid("'json_schema' must be an object with a 'name'")
    schema = spec.get("schema", {"type": "object"})
    try:
        check_schema(schema)
    except (jsonschema.SchemaError, TypeError) as exc:
        raise _invalid(f"'json_schema.schema' is not a valid JSON Schema: {getattr(exc, 'message', exc)}") from None
    return schema


def compile_schema(schema: dict[str, Any]) -> Grammar | None:
    """A whitespace-free regex for `schema` and its token bound, or None if the schema is outside the subset."""
    try:
        regex, max_bytes = _compile(schema)
    except _Unsupported:
        return None
    # Every token decodes to at least one byte; one more for the end-of-sequence token.
    return Grammar(regex=regex, max_tokens=max_bytes + 1)


class _Unsupported(Exception):
    pass


def _compile(schema: dict[str, Any]) -> tuple[str, int]:
    if not isinstance(schema, dict):
        raise _Unsupported
    if "enum" in schema or "const" in schema:
        values = schema["enum"] if "enum" in schema else [schema["const"]]
        return _alternatives([_literal(value) for value in values])
    if "anyOf" in schema:
        return _bounded(_alternatives([_compile(branch) for branch in schema["anyOf"]]))
    kind = schema.get("type")
    if isinstance(kind, list):
        return _bounded(_alternatives([_compile({**schema, "type": one}) for one in kind]))
    compilers = {"object": _object, "array": _array, "string": _string, "number": _number,
                 "integer": _number, "boolean": lambda _: ("(true|false)", 5), "null": lambda _: ("null", 4)}
    if kind not in compilers:
        raise _Unsupported
    return _bounded(compilers[kind](schema))


def _bounded(compiled: tuple[str, int]) -> tuple[str, int]:
    if len(compiled[0]) > _MAX_REGEX_CHARS:
        raise _Unsupported
    return compiled


def _object(schema: dict[str, Any]) -> tuple[str, int]:
    # Every listed property is emitted, in order: valid whether or not it is required.
    properties = schema.get("properties", {})
    if not properties and schema.get("additionalProperties", True) is not False:
        raise _Unsupported  # a free-form object: leave it to the json_schema grammar
    parts, size = [], 2
    for index, (name, sub) in enumerate(properties.items()):
        key = json.dumps(name) + ":"
        value, value_size = _compile(sub)
        parts.append(("," if index else "") + re.escape(key) + value)
        size += len(key.encode()) + value_size + (1 if index else 0)
    return "\\{" + "".join(parts) + "\\}", size


def _array(schema: dict[str, Any]) -> tuple[str, int]:
    item, item_size = _compile(schema.get("items", {}))
    low, high = schema.get("minItems", 0), schema.get("maxItems", _DEFAULT_MAX_ITEMS)
    if high < 1:
        return "\\[\\]", 2
    rest = f"(,{item}){{{max(low - 1, 0)},{high - 1}}}"
    body = f"{item}{rest}" if low >= 1 else f"({item}{rest})?"
    return f"\\[{body}\\]", 2 + high * (item_size + 1)


def _string(schema: dict[str, Any]) -> tuple[str, int]:
    if {"pattern", "format"} & set(schema):
        raise _Unsupported
    low, high = schema.get("minLength", 0), schema.get("maxLength", _DEFAULT_MAX_LENGTH)
    return f'"{_STRING_CHARS}{{{low},{high}}}"', 2 + high * _BYTES_PER_CHAR


def _number(schema: dict[str, Any]) -> tuple[str, int]:
    low, high = schema.get("minimum"), schema.get("maximum")
    if {"exclusiveMinimum", "exclusiveMaximum", "multipleOf"} & set(schema):
        raise _Unsupported
    fraction = "" if schema.get("type") == "integer" else "(\\.[0-9]{1,4})?"
    if (low, high) == (0, 1):
        return ("(0|1)" if not fraction else "(0(\\.[0-9]{1,4})?|1(\\.0{1,4})?)"), 6
    if high is not None or (low is not None and low != 0):
        raise _Unsupported
    sign = "" if low == 0 else "-?"
    return f"{sign}(0|[1-9][0-9]{{0,{_NUMBER_DIGITS - 1}}}){fraction}", 1 + _NUMBER_DIGITS + 5


def _literal(value: Any) -> tuple[str, int]:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return re.escape(text), len(text.encode())


def _alternatives(options: list[tuple[str, int]]) -> tuple[str, int]:
    if not options:
        raise _Unsupported
    return "(" + "|".join(regex for regex, _ in options) + ")", max(size for _, size in options)


def _invalid(problem: str) -> ApiError:
    return ApiError(ErrorCode.INVALID_RESPONSE_FORMAT, f"'response_format' {problem}.", {"field": "response_format"})


@dataclass(frozen=True, kw_only=True)
class ResponseFormat(Spec):
    """The `response_format` field: read as the JSON schema it asks for (None for plain text)."""

    max_depth: int = json_input.MAX_DEPTH
    codes: ClassVar[tuple[str, ...]] = ("invalid_response_format",)
    blank: ClassVar[bool] = True

    def read(self, value: Any, name: str) -> dict[str, Any] | None:
        return parse_response_format(value, self.max_depth)

    def schema(self, required: bool) -> dict[str, Any]:
        return {"oneOf": [
            {"type": "object", "required": ["type"], "properties": {"type": {"enum": ["text", "json_object"]}}},
            {"type": "object", "required": ["type", "json_schema"], "properties": {
                "type": {"const": "json_schema"},
                "json_schema": {"type": "object", "required": ["name"], "properties": {
                    "name": {"type": "string", "minLength": 1}, "schema": {"type": "object"},
                    "strict": {"type": "boolean"}}}}},
        ]}

    def form_schema(self, required: bool) -> dict[str, Any]:
        return {"type": "string", "contentMediaType": "application/json"}
