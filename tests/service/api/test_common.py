"""HTTP-only request shapes: list queries (pagination and filters) and uploads, read with the one error body."""
import base64
import io
import json

import pytest

from service.api.common import PageQuery
from service.api.files import FileList
from service.api.jobs import JobList
from service.api.webhooks import DeliveryList
from service.core.errors import ApiError
from service.core.validation import parse
from tests.conftest import TENANT, TINY, keyed, make_image, make_key


def refused(model, values) -> dict:
    with pytest.raises(ApiError) as caught:
        parse(model, values)
    return caught.value.body()["error"]


def test_a_page_reads_the_query_string_text():
    page = parse(PageQuery, {"limit": "5", "after": "job_1"})
    assert (page.limit, page.cursor, page.after) == (5, None, "job_1")
    assert parse(PageQuery, {"cursor": ""}).cursor is None
    assert refused(PageQuery, {"limit": "0"}) == {
        "code": "invalid_field", "message": "'limit' must be between 1 and 100.", "details": {"field": "limit"}}
    assert refused(PageQuery, {"cursor": "x" * 65})["details"] == {"field": "cursor"}
    assert parse(FileList, {"limit": "10000"}).limit == 10_000
    assert refused(FileList, {"limit": "10001"})["message"] == "'limit' must be between 1 and 10000."


def test_list_filters_refuse_what_is_not_a_value_of_theirs():
    assert refused(JobList, {"status": "done"})["message"] == (
        "'status' must be one of queued, running, succeeded, failed, cancelled.")
    assert parse(DeliveryList, {"job_id": "job_1", "status": "failed"}).status == "failed"


def test_an_upload_must_be_a_file(client):
    no_file = client.post("/v1/files", data={"purpose": "batch"}, content_type="multipart/form-data")
    assert no_file.get_json()["error"] == {"code": "missing_field", "message": "'file' is required (multipart).",
                                           "details": {"field": "file"}}
    as_text = client.post("/v1/files", data={"purpose": "batch", "file": "not a file"},
                          content_type="multipart/form-data")
    assert as_text.get_json()["error"]["code"] == "missing_field"
    no_purpose = client.post("/v1/files", data={"file": (io.BytesIO(b"{}\n"), "in.jsonl")},
                             content_type="multipart/form-data")
    assert no_purpose.get_json()["error"] == {"code": "missing_field", "message": "'purpose' is required.",
                                              "details": {"field": "purpose"}}


# -- bad input never reaches a 5xx: one body reader (json_body) and one field reader (read_json) --------------

IDLE_MODEL = "tiny-idle"  # no session worker serves it: anything that got through would stay queued
IMAGE = "data:image/png;base64," + base64.b64encode(make_image()).decode()
GOOGLE = f"/v1beta/models/{TINY}:generateContent"


def _deep(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def _schema_nested(depth: int) -> str:
    """A response_format whose schema nests `depth` levels of "items" (jsonschema recursed out near 120-150)."""
    schema = '{"items":' * depth + "{}" + "}" * depth
    return '{"type": "json_schema", "json_schema": {"name": "x", "schema": ' + schema + "}}"


def _chat(text: str) -> dict:
    return {"model": TINY, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": IMAGE}}, {"type": "text", "text": text}]}]}


def _google(text: str) -> dict:
    return {"contents": [{"role": "user", "parts": [
        {"inline_data": {"mime_type": "image/png", "data": IMAGE.split(",", 1)[1]}}, {"text": text}]}]}


def _job(**fields) -> dict:
    return {"image": IMAGE, "prompt": "Total?", "model": IDLE_MODEL, **fields}


def _with(body: dict, raw_field: str, raw: str) -> str:
    """`body` as JSON text with one more field whose value is `raw` JSON text (deep nesting, 1e400, NaN)."""
    return json.dumps(body)[:-1] + f', "{raw_field}": {raw}}}'


def _error(response) -> tuple[int, str, str | None]:
    """(status, code, field) in whichever error shape the endpoint's family answers."""
    body = response.get_json()
    if response.request.path == "/api/v1/chat":  # numeric codes: 4000 is any bad request
        return response.status_code, str(body["code"]), None
    if response.request.path == GOOGLE:
        return response.status_code, body["error"]["status"], None
    if response.request.path == "/v1/chat/completions":
        return response.status_code, body["error"]["code"], body["error"]["param"]
    return response.status_code, body["error"]["code"], (body["error"].get("details") or {}).get("field")


JSON_CASES = [
    # JSON nested 1,000 deep (past the parser's recursion) and 100 deep (past max_json_depth): the body's fault.
    *[(path, _with(body, "metadata", _deep(depth)), (400, code, field))
      for depth in (1000, 100)
      for path, body, code, field in [
          ("/v1/jobs", _job(), "invalid_json", None),
          ("/v1/batches", {"input_file_id": "file_x", "endpoint": "/v1/chat/completions"}, "invalid_json", None),
          ("/v1/webhooks", {"url": "http://127.0.0.1:9/hook"}, "invalid_json", None),
          ("/v1/keys", {"name": "k"}, "invalid_json", None),
          ("/v1/chat/completions", _chat("Total?"), "invalid_json", None),
          ("/api/v1/chat", {"image": IMAGE, "prompt": "Total?"}, "4000", None),
          (GOOGLE, _google("Total?"), "INVALID_ARGUMENT", None)]],
    ("/v1/jobs", "[" * 1000 + "]" * 1000, (400, "invalid_json", None)),
    ("/v1/jobs", _with(_job(), "response_format", _schema_nested(300)), (400, "invalid_json", None)),
    # A lone surrogate in text: refused where it is, naming the field.
    ("/v1/jobs", json.dumps(_job(prompt="a\ud800b")), (400, "invalid_field", "prompt")),
    ("/v1/jobs", json.dumps(_job(metadata={"note": "\udfff"})), (400, "invalid_field", "metadata.note")),
    ("/v1/jobs", json.dumps(_job(metadata={"k\ud800": 1})), (400, "invalid_field", "metadata")),
    ("/v1/jobs", json.dumps({**_job(), "\ud800": 1}), (400, "invalid_json", None)),
    ("/v1/chat/completions", json.dumps(_chat("a\ud800")), (400, "invalid_field", "messages[0].content[1].text")),
    ("/api/v1/chat", json.dumps({"image": IMAGE, "prompt": "\ud800"}), (400, "4000", None)),
    (GOOGLE, json.dumps(_google("x\ud800")), (400, "INVALID_ARGUMENT", None)),
    ("/v1/webhooks", json.dumps({"url": "http://127.0.0.1:9/hook", "description": "\ud800"}),
     (400, "invalid_field", "description")),
    ("/v1/keys", json.dumps({"name": "k\ud800"}), (400, "invalid_field", "name")),
    # Numbers JSON can spell but nothing can store: 1e400 is infinite; NaN and Infinity are not JSON at all.
    ("/v1/jobs", _with(_job(), "max_tokens", "1e400"), (400, "invalid_field", "max_tokens")),
    ("/v1/chat/completions", _with(_chat("Total?"), "max_tokens", "1e400"), (400, "invalid_field", "max_tokens")),
    ("/v1/jobs", _with(_job(), "metadata", '{"n": -1e400}'), (400, "invalid_field", "metadata.n")),
    ("/v1/jobs", _with(_job(), "temperature", "NaN"), (400, "invalid_json", None)),
]


@pytest.fixture
def admin(app, settings):
    return keyed(app.test_client(), make_key(settings, name="admin", tenant=TENANT, admin=True))


@pytest.mark.parametrize(("path", "text", "expected"), JSON_CASES)
def test_parseable_bad_json_is_a_400_naming_the_body_or_the_field(admin, path, text, expected):
    response = admin.post(path, data=text, content_type="application/json")
    assert _error(response) == expected, response.get_data(as_text=True)[:500]


FORM_CASES = [
    ({"metadata": _deep(1000)}, ("invalid_field", "metadata")),
    ({"metadata": _deep(65)}, ("invalid_field", "metadata")),
    ({"metadata": '{"a": "\\ud800"}'}, ("invalid_field", "metadata")),
    ({"metadata": '{"a": NaN}'}, ("invalid_field", "metadata")),
    *[({"response_format": _schema_nested(depth)}, ("invalid_response_format", "response_format"))
      for depth in (65, 300, 2000)],
    ({"response_format": '{"type": "json_schema", "json_schema": {"name": "x\\udc00"}}'},
     ("invalid_response_format", "response_format")),
    ({"max_tokens": "1e400"}, ("invalid_field", "max_tokens")),
]


@pytest.mark.parametrize(("fields", "expected"), FORM_CASES)
def test_json_text_in_a_form_field_is_checked_as_a_body_is(client, fields, expected):
    data = {"prompt": "Total?", "model": IDLE_MODEL, "image": (io.BytesIO(make_image()), "a.png"), **fields}
    response = client.post("/v1/jobs", data=data, content_type="multipart/form-data")
    error = response.get_json()["error"]
    assert (response.status_code, error["code"], error["details"]["field"]) == (400, *expected), error


# -- Postgres and SQLite refuse the same text: NUL and over-long values are 400s before the database -----------

TEXT_CASES = [
    ("/v1/keys", {"name": "a\x00b"}, "name"),
    ("/v1/keys", {"name": "k" * 101}, "name"),
    ("/v1/keys", {"name": "k", "tenant": "t" * 65}, "tenant"),
    ("/v1/webhooks", {"url": "http://127.0.0.1:9/hook", "description": "a\x00b"}, "description"),
    ("/v1/webhooks", {"url": "http://127.0.0.1:9/hook", "description": "d" * 501}, "description"),
    ("/v1/jobs", _job(prompt="a\x00b"), "prompt"),
    ("/v1/jobs", _job(prompt="p" * 16_001), "prompt"),
    ("/v1/chat/completions", _chat("a\x00b"), "messages[0]"),
]


@pytest.mark.parametrize(("path", "body", "field"), TEXT_CASES)
def test_text_a_database_would_refuse_is_refused_at_validation(admin, path, body, field):
    response = admin.post(path, json=body)
    assert _error(response) == (400, "invalid_field", field), response.get_data(as_text=True)[:500]

