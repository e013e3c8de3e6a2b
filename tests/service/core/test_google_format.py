"""Google's generationConfig and Schema read into VLQ's terms (service.core.google_format)."""
import pytest

from service.core.errors import ApiError
from service.core.google_format import generation_fields, json_schema_of, response_format
from service.core.structured import compile_schema


def test_google_schema_becomes_json_schema_in_property_order():
    google = {"type": "OBJECT", "title": "Receipt", "required": ["total", "items"],
              "properties": {"vendor": {"type": "STRING", "nullable": True, "maxLength": "40"},
                             "items": {"type": "ARRAY", "items": {"type": "STRING"}, "max_items": 3},
                             "total": {"type": "NUMBER", "format": "double", "minimum": 0},
                             "kind": {"type": "STRING", "format": "enum", "enum": ["food", "fuel"]}},
              "propertyOrdering": ["total", "vendor", "items", "kind"]}
    schema = json_schema_of(google)
    assert schema == {
        "type": "object", "title": "Receipt", "required": ["total", "items"],
        "properties": {"total": {"type": "number", "minimum": 0},
                       "vendor": {"type": ["string", "null"], "maxLength": 40},
                       "items": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
                       "kind": {"type": "string", "enum": ["food", "fuel"]}}}
    assert list(schema["properties"]) == ["total", "vendor", "items", "kind"]
    assert compile_schema(schema) is not None  # inside the whitespace-free regex subset, as OpenAI's schemas are


def test_the_sdks_snake_case_ordering_nullable_enums_and_any_of():
    schema = json_schema_of({"type": "object", "property_ordering": ["b", "a"],
                             "properties": {"a": {"type": "STRING", "enum": ["x"], "nullable": True},
                                            "b": {"anyOf": [{"type": "INTEGER"}, {"type": "BOOLEAN"}],
                                                  "nullable": True}}})
    assert list(schema["properties"]) == ["b", "a"]
    assert schema["properties"]["a"] == {"type": ["string", "null"], "enum": ["x", None]}
    assert schema["properties"]["b"] == {"anyOf": [{"type": "integer"}, {"type": "boolean"}, {"type": "null"}]}


def test_response_format_follows_the_mime_type():
    schema = {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}}
    assert response_format({}) is None
    assert response_format({"response_mime_type": "text/plain"}) is None
    assert response_format({"responseMimeType": "application/json"}) == {"type": "json_object"}
    asked = response_format({"responseMimeType": "application/json", "responseSchema": schema})
    assert asked == {"type": "json_schema", "json_schema": {
        "name": "response", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}}
    plain = {"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}
    asked = response_format({"response_mime_type": "application/json", "response_json_schema": plain})
    assert asked["json_schema"]["schema"] == plain  # JSON Schema already: handed on as it is


def test_generation_fields_use_the_job_names():
    fields = generation_fields({"temperature": 0.5, "topP": 0.9, "maxOutputTokens": 7, "seed": 3})
    assert fields == {"temperature": 0.5, "top_p": 0.9, "max_tokens": 7, "seed": 3, "response_format": None}


@pytest.mark.parametrize(
    ("config", "code", "field"),
    [
        ({"response_mime_type": "text/x.enum"}, "invalid_field", "generation_config.response_mime_type"),
        ({"response_schema": {"type": "STRING"}}, "invalid_response_format", "generation_config.response_mime_type"),
        ({"response_mime_type": "application/json", "response_schema": {"type": "WORD"}}, "invalid_response_format",
         "generation_config.response_schema.type"),
        ({"response_mime_type": "application/json", "response_schema": {"type": "OBJECT", "oneOf": []}},
         "invalid_response_format", "generation_config.response_schema"),
        ({"response_mime_type": "application/json", "response_schema": {"type": "ARRAY", "maxItems": "-1"}},
         "invalid_response_format", "generation_config.response_schema.maxItems"),
        ({"response_mime_type": "application/json", "response_schema": {
            "type": "OBJECT", "properties": {"a": {"type": "STRING"}}, "propertyOrdering": ["z"]}},
         "invalid_response_format", "generation_config.response_schema.propertyOrdering"),
        ({"response_mime_type": "application/json", "response_schema": "OBJECT"}, "invalid_response_format",
         "generation_config.response_schema"),
        ({"response_mime_type": "application/json", "response_json_schema": {"type": 5}}, "invalid_response_format",
         "generation_config.response_json_schema"),
        ({"response_mime_type": "application/json", "response_json_schema": {}, "response_schema": {}},
         "invalid_response_format", "generation_config.response_schema"),
    ],
    ids=["mime", "schema-without-json", "type", "unknown-key", "count", "ordering", "not-object", "bad-json-schema",
         "both"],
)
def test_bad_configs_are_refused_naming_the_field(config, code, field):
    with pytest.raises(ApiError) as caught:
        response_format(config)
    assert (caught.value.status, caught.value.code, caught.value.details["field"]) == (400, code, field)
