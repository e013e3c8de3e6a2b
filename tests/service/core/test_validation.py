"""Request models: each field type's errors render as the one ApiError, and the schema walker describes the model."""
from typing import Annotated, Any

import pytest
from pydantic import Field

from service.core.errors import ApiError
from service.core.validation import (
    Bool,
    Choice,
    JsonObject,
    Number,
    OptionalNumber,
    RequestModel,
    Text,
    WebhookSecret,
    WebhookUrl,
    combine,
    error_codes,
    object_schema,
    parse,
)
from service.core.webhook_signing import generate_secret


class Sample(RequestModel):
    name: Annotated[str, Text(max_chars=5)]
    code: Annotated[str | None, Text(max_chars=8, pattern="[a-z]+")] = None
    count: Annotated[int, Number(low=1, high=10, integer=True)] = Field(3, description="How many.")
    ratio: Annotated[float, Number(low=0.0, high=2.0)] = 0.0
    top: Annotated[float | None, OptionalNumber(low=0.0, high=1.0, exclusive_low=True)] = None
    flag: Annotated[bool, Bool()] = False
    color: Annotated[str, Choice(choices=["red", "blue"])] = "red"
    model: Annotated[str | None, Choice(choices=["a", "b"], code="unknown_model")] = None
    meta: Annotated[dict[str, Any] | None, JsonObject(max_bytes=20)] = None
    secret: Annotated[str | None, WebhookSecret()] = None
    extra_codes = ("quota_exceeded",)


def error(values: dict[str, Any], model: type[RequestModel] = Sample) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse(model, values)
    return caught.value


@pytest.mark.parametrize(("values", "code", "message", "details"), [
    ({}, "missing_field", "'name' is required.", {"field": "name"}),
    ({"name": None}, "missing_field", "'name' is required.", {"field": "name"}),
    ({"name": "  "}, "missing_field", "'name' is required.", {"field": "name"}),
    ({"name": 5}, "invalid_field", "'name' must be a string.", {"field": "name"}),
    ({"name": "toolong"}, "invalid_field", "'name' is 7 characters; the limit is 5.", {"field": "name"}),
    ({"name": "a\x00"}, "invalid_field", "'name' must not contain NUL characters.", {"field": "name"}),
    ({"name": "n", "code": "AB"}, "invalid_field", "'code' must match [a-z]+.", {"field": "code"}),
    ({"name": "n", "count": "x"}, "invalid_field", "'count' must be a number between 1 and 10.", {"field": "count"}),
    ({"name": "n", "count": True}, "invalid_field", "'count' must be a number between 1 and 10.", {"field": "count"}),
    ({"name": "n", "count": 2.5}, "invalid_field", "'count' must be a whole number.", {"field": "count"}),
    ({"name": "n", "count": 11}, "invalid_field", "'count' must be between 1 and 10.", {"field": "count"}),
    ({"name": "n", "count": ""}, "invalid_field", "'count' must be a number between 1 and 10.", {"field": "count"}),
    ({"name": "n", "ratio": "nan"}, "invalid_field", "'ratio' must be between 0.0 and 2.0.", {"field": "ratio"}),
    ({"name": "n", "top": 0}, "invalid_field", "'top' must be above 0 and at most 1.", {"field": "top"}),
    ({"name": "n", "flag": "yes"}, "invalid_field", "'flag' must be true or false.", {"field": "flag"}),
    ({"name": "n", "flag": 1}, "invalid_field", "'flag' must be true or false.", {"field": "flag"}),
    ({"name": "n", "color": "green"}, "invalid_field", "'color' must be one of red, blue.", {"field": "color"}),
    ({"name": "n", "model": "c"}, "unknown_model", "No model named 'c'.", {"model": "c", "available": ["a", "b"]}),
    ({"name": "n", "meta": "{"}, "invalid_field", "'meta' is not valid JSON.", {"field": "meta"}),
    ({"name": "n", "meta": [1]}, "invalid_field", "'meta' must be a JSON object.", {"field": "meta"}),
    ({"name": "n", "meta": {"k": "x" * 20}}, "invalid_field", "'meta' is larger than 20 bytes as JSON.",
     {"field": "meta"}),
    ({"name": "n", "secret": "nope"}, "invalid_field", "'secret' must look like whsec_<base64>.", {"field": "secret"}),
])
def test_each_bad_value_is_one_api_error_naming_its_field(values, code, message, details):
    refused = error(values)
    assert (refused.status, refused.code, refused.message, refused.details) == (400, code, message, details)


def test_the_first_bad_field_in_the_models_order_is_the_one_reported():
    assert error({"count": 0, "flag": "x"}).details == {"field": "name"}
    assert error({"name": "n", "flag": "x", "count": 0}).details == {"field": "count"}


def test_null_and_form_text_read_as_json_values_do():
    read = parse(Sample, {"name": "n", "code": "", "count": None, "ratio": "1.5", "top": "", "flag": "TRUE",
                          "color": None, "meta": '{"a": 1}', "secret": ""})
    assert (read.code, read.count, read.ratio, read.top, read.flag, read.color, read.meta, read.secret) == (
        None, 3, 1.5, None, True, "red", {"a": 1}, None)
    secret = generate_secret()
    read = parse(Sample, {"name": "n", "count": "7", "flag": False, "top": 1, "secret": secret, "ignored": 1})
    assert (read.count, read.flag, read.top, read.secret) == (7, False, 1.0, secret)


def test_webhook_urls_are_judged_by_the_egress_guard():
    class Hook(RequestModel):
        url: Annotated[str, WebhookUrl()]

    assert error({}, Hook).body() == {"error": {"code": "missing_field", "message": "'url' is required.",
                                                "details": {"field": "url"}}}
    assert error({"url": ""}, Hook).code == "missing_field"  # empty reads as absent
    assert error({"url": "x" * 2049}, Hook).message == "'url' must be an http(s) URL of at most 2048 characters."
    forbidden = error({"url": "http://127.0.0.1/hook"}, Hook)
    assert forbidden.code == "webhook_url_forbidden"
    assert forbidden.details == {"field": "url", "reason": "forbidden_address"}
    assert error({"url": "ftp://example.com/hook"}, Hook).code == "invalid_webhook_url"


def test_the_schema_is_the_models_own_in_json_and_in_a_form():
    body = object_schema(Sample)
    assert body["required"] == ["name"]
    props = body["properties"]
    assert props["name"] == {"type": "string", "maxLength": 5, "minLength": 1}
    assert props["code"] == {"type": ["string", "null"], "maxLength": 8, "pattern": "^(?:[a-z]+)?$"}
    assert props["count"] == {"type": ["integer", "null"], "minimum": 1, "maximum": 10, "default": 3,
                              "description": "How many."}
    assert props["model"] == {"type": ["string", "null"], "enum": ["a", "b", None]}
    assert props["meta"] == {"type": ["object", "null"]}
    form = object_schema(Sample, form=True)["properties"]
    assert form["flag"]["type"] == "string" and form["flag"]["default"] == "false"
    assert form["meta"] == {"type": "string", "contentMediaType": "application/json"}
    assert form["count"]["type"] == "integer"


def test_codes_are_the_fields_then_the_extra_ones_and_combine_keeps_the_order_given():
    assert error_codes(Sample) == ("missing_field", "invalid_field", "unknown_model", "quota_exceeded")

    class First(RequestModel):
        a: Annotated[str, Text(max_chars=1)]

    class Second(RequestModel):
        b: Annotated[bool, Bool()] = False
        extra_codes = ("broker_unavailable",)

    both = combine("Both", First, Second)
    assert list(both.model_fields) == ["a", "b"]
    assert error_codes(both) == ("missing_field", "invalid_field", "broker_unavailable")
    assert parse(both, {"a": "x", "b": "1"}).b is True
