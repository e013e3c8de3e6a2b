"""The OpenAPI document: every route is in it, its request schemas are the validators' own, its error codes are real."""
import io
import re
from pathlib import Path

import jsonschema

from service.core.errors import ErrorCode
from service.core.images import EXAMPLE_DATA_URL
from tests.conftest import ROOT, TINY, make_image


def test_every_route_and_method_is_documented(app, client):
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"] == "3.1.0"
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            operation = doc["paths"][path][method.lower()]
            assert operation.get("summary"), f"{method} {rule.rule} has no @operation(...)"
            assert "default" not in operation["responses"]


def test_request_schemas_come_from_the_settings_the_validators_use(client, settings):
    doc = client.get("/openapi.json").get_json()
    body = doc["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
    fields = body["application/json"]["schema"]["properties"]
    assert fields["max_tokens"]["maximum"] == settings.max_tokens_limit
    # null reads as absent in JSON (the default applies), so the JSON schema lists it too.
    assert fields["model"]["enum"] == [*sorted(settings.registry), None] and fields["model"]["default"] == TINY
    assert set(fields["preset"]["enum"]) == {*settings.presets, None}
    assert body["multipart/form-data"]["schema"]["properties"]["image"]["format"] == "binary"
    assert body["application/json"]["schema"]["required"] == ["image"]
    # A value past the documented bound is refused by the same definition, in JSON and in a form alike.
    too_many = settings.max_tokens_limit + 1
    json_body = client.post("/v1/jobs", json={"image": EXAMPLE_DATA_URL, "prompt": "p", "max_tokens": too_many})
    form_body = client.post("/v1/jobs", data={"image": (io.BytesIO(make_image()), "a.png"), "prompt": "p",
                                              "max_tokens": str(too_many)}, content_type="multipart/form-data")
    for response in (json_body, form_body):
        assert response.status_code == 400
        assert response.get_json()["error"] == {
            "code": "invalid_field", "details": {"field": "max_tokens"},
            "message": f"'max_tokens' must be between 1 and {settings.max_tokens_limit}."}


def test_answers_document_their_error_codes_with_one_component_each(client):
    doc = client.get("/openapi.json").get_json()
    schemas = doc["components"]["schemas"]
    assert all(f"Error.{code}" in schemas for code in ErrorCode if not code.job)
    post_job = doc["paths"]["/v1/jobs"]["post"]["responses"]
    refs = post_job["400"]["content"]["application/json"]["schema"]["oneOf"]
    codes_400 = {item["$ref"].split("Error.")[1] for item in refs}
    assert {"missing_field", "invalid_image", "unknown_model", "invalid_webhook_url"} <= codes_400
    assert post_job["202"]["links"]["GetJob"]["operationId"] == "jobs.get_job"
    # An actual error body validates against its code's component.
    body = client.get("/v1/jobs/job_nope").get_json()
    resolver_doc = {**doc, "$ref": "#/components/schemas/Error.not_found"}
    jsonschema.validate(body, resolver_doc)


def test_every_error_code_raised_in_the_code_is_a_member_of_the_enum():
    raised = set()
    for path in [*Path(ROOT, "service").rglob("*.py"), *Path(ROOT, "workers").rglob("*.py")]:
        raised |= set(re.findall(r"ApiError\(\s*ErrorCode\.([A-Z0-9_]+)", path.read_text()))
        assert not re.findall(r'ApiError\(\s*\d{3}', path.read_text()), f"a status literal in {path.name}"
    assert len(raised) > 15
    assert raised <= set(ErrorCode.__members__)
