"""response_format parsing and the schema -> regex compiler (no database)."""
import json
import re

import pytest

from service.core.errors import ApiError
from service.core.presets import BUILTIN_PRESETS, build_presets
from service.core.structured import compile_schema, parse_response_format, validation_error

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["total", "vendor", "items"],
          "properties": {"total": {"type": ["number", "null"], "minimum": 0},
                         "vendor": {"type": "string", "maxLength": 20},
                         "label": {"enum": ["a", "b c"]},
                         "items": {"type": "array", "maxItems": 3, "items": {"type": "integer"}}}}


def test_openai_json_schema_shape_gives_the_schema():
    value = {"type": "json_schema", "json_schema": {"name": "invoice", "schema": SCHEMA, "strict": True}}
    assert parse_response_format(value) == SCHEMA
    assert parse_response_format(json.dumps(value)) == SCHEMA  # multipart sends it as a string


def test_json_object_and_text_shapes():
    assert parse_response_format({"type": "json_object"}) == {"type": "object"}
    assert parse_response_format({"type": "text"}) is None
    assert parse_response_format(None) is None


@pytest.mark.parametrize("value", [
    {"type": "xml"},
    {"type": "json_schema"},
    {"type": "json_schema", "json_schema": {"schema": SCHEMA}},
    {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}},
    "{not json",
    ["json_object"],
])
def test_invalid_response_formats_are_refused(value):
    with pytest.raises(ApiError) as caught:
        parse_response_format(value)
    assert caught.value.code == "invalid_response_format" and caught.value.status == 400


def test_the_compiled_regex_accepts_compact_valid_json_and_bounds_its_length():
    grammar = compile_schema(SCHEMA)
    instance = {"total": 12.5, "vendor": "Café Zürich", "label": "b c", "items": [1, 20, 300]}
    compact = json.dumps(instance, separators=(",", ":"), ensure_ascii=False)
    assert re.fullmatch(grammar.regex, compact)
    assert not re.fullmatch(grammar.regex, json.dumps(instance))  # no free whitespace
    assert not re.fullmatch(grammar.regex, compact.replace("Café Zürich", "x" * 21))  # maxLength holds
    assert len(compact.encode()) < grammar.max_tokens
    assert validation_error(instance, SCHEMA) is None


def test_schemas_outside_the_subset_are_left_to_the_json_schema_grammar():
    assert compile_schema({"type": "string", "pattern": "^a+$"}) is None
    assert compile_schema({"type": "object"}) is None  # free-form object


def test_builtin_extraction_presets_compile_within_the_token_limit():
    presets = build_presets({}, {"rapidocr": None}, max_tokens_limit=4096)
    for name in ("receipt", "invoice", "moderate"):
        grammar = compile_schema(presets[name].output_schema())
        assert grammar is not None and presets[name].max_tokens == grammar.max_tokens <= 4096
    assert set(BUILTIN_PRESETS) == {"ocr", "receipt", "invoice", "describe", "moderate"}


@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": {"a": {"$ref": "#/definitions/nope"}}, "required": ["a"]},
    {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}},
])
def test_a_schema_the_engine_grammar_library_refuses_is_invalid(schema):
    with pytest.raises(ApiError) as refused:
        parse_response_format({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    assert (refused.value.status, refused.value.code) == (400, "invalid_response_format")
    assert "grammar" in refused.value.message and "/cpp/" not in refused.value.message


def test_references_that_resolve_compile_at_submit():
    schema = {"type": "object", "$defs": {"n": {"type": "integer"}}, "properties": {"a": {"$ref": "#/$defs/n"}}}
    assert parse_response_format({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}) == schema


def test_nested_arrays_are_left_to_the_engine_grammar_before_their_regex_doubles_out_of_memory():
    """An array's regex holds its item's twice: 60 nested levels would need 2^60 characters, so past a bound the
    schema is compiled by the engine's grammar library instead, and within max_json_depth that is accepted."""
    schema: dict = {"type": "string", "maxLength": 4}
    for _ in range(60):
        schema = {"type": "array", "items": schema}
    assert compile_schema(schema) is None
    assert parse_response_format({"type": "json_schema", "json_schema": {"name": "deep", "schema": schema}}) == schema
    shallow = {"type": "array", "items": {"type": "array", "items": {"type": "string", "maxLength": 4}}}
    assert compile_schema(shallow) is not None


@pytest.mark.parametrize("depth", [65, 300, 5000])
def test_a_response_format_nested_past_the_json_depth_limit_is_refused_before_jsonschema(depth):
    text = '{"type": "json_schema", "json_schema": {"name": "x", "schema": ' + '{"items":' * depth + "{}"
    text += "}" * depth + "}}"
    with pytest.raises(ApiError) as caught:
        parse_response_format(text)
    assert caught.value.body()["error"]["code"] == "invalid_response_format"
    assert "nests deeper than 64 levels" in caught.value.message
