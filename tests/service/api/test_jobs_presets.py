"""Presets, response_format and the dedup cache through the jobs API; no worker consumes these jobs' queue."""
import base64

import pytest

from service.adapters.db import Database
from service.core import lifecycle
from service.core.models import Job, JobStatus
from tests.conftest import make_image

IDLE_MODEL = "tiny-idle"  # no worker serves it in this session, so jobs stay queued
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["total"],
          "properties": {"total": {"type": "number"}}}


def _body(image: bytes, **fields):
    return {"model": IDLE_MODEL, "image": base64.b64encode(image).decode(), **fields}


def _row(settings, job_id):
    with Database(settings.database_url).session() as session:
        job = session.get(Job, job_id)
        session.expunge(job)
        return job


def test_a_preset_fills_prompt_schema_and_budget(client, settings):
    job = client.post("/v1/jobs", json=_body(make_image(), preset="receipt")).get_json()
    preset = settings.presets["receipt"]
    assert (job["preset"], job["prompt"], job["max_tokens"]) == ("receipt", preset.prompt, preset.max_tokens)
    assert _row(settings, job["id"]).response_schema == preset.output_schema()


def test_explicit_fields_override_the_preset(client, settings):
    job = client.post("/v1/jobs", json=_body(make_image(), preset="describe", prompt="Name the colour.",
                                             max_tokens=5)).get_json()
    assert (job["prompt"], job["max_tokens"], job["preset"]) == ("Name the colour.", 5, "describe")


def test_response_format_in_the_openai_shape_sets_the_schema(client, settings):
    response_format = {"type": "json_schema", "json_schema": {"name": "total", "schema": SCHEMA, "strict": True}}
    job = client.post("/v1/jobs", json=_body(make_image(), prompt="Total?", response_format=response_format))
    assert job.status_code == 202
    assert _row(settings, job.get_json()["id"]).response_schema == SCHEMA


@pytest.mark.parametrize(("fields", "code"), [
    ({"preset": "sonnet"}, "unknown_preset"),
    ({"prompt": "x", "response_format": {"type": "yaml"}}, "invalid_response_format"),
    ({"preset": "ocr", "response_format": {"type": "json_object"}}, "invalid_field"),
    ({"preset": "ocr", "ground_with_ocr": True}, "invalid_field"),
])
def test_bad_preset_requests_get_a_clear_error(client, fields, code):
    response = client.post("/v1/jobs", json=_body(make_image(), **{"model": None, **fields}))
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == code


def _succeed(settings, job_id, text):
    """Play the worker's part: claim the job and finish it with `text`."""
    with Database(settings.database_url).session() as session:
        job = lifecycle.claim(session, job_id, "test-worker")
        lifecycle.finish(session, job, JobStatus.SUCCEEDED, result_text=text, finish_reason="stop", prompt_tokens=30,
                         completion_tokens=4, inference_ms=12.0, batch_size=1)
        session.commit()


def test_an_identical_request_is_answered_from_the_cache(client, settings):
    body = _body(make_image(color=(9, 9, 9)), prompt="What is the total?", max_tokens=8)
    first = client.post("/v1/jobs", json=body).get_json()
    _succeed(settings, first["id"], "42.00")

    hit = client.post("/v1/jobs", json=body)
    assert hit.status_code == 202
    job = hit.get_json()
    assert job["status"] == "succeeded" and job["cached"] is True and job["cache_of"] == first["id"]
    assert job["result"] == {"text": "42.00", "finish_reason": "stop"}  # the copy keeps how the text ended
    assert job["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}  # free
    assert job["timings"]["inference_ms"] == 0 and job["worker"] is None
    with Database(settings.database_url).session() as session:
        assert [e.type for e in lifecycle.events(session, job["id"])] == ["job.queued", "job.succeeded"]


@pytest.mark.parametrize(("shade", "change"), enumerate([{"no_cache": True}, {"temperature": 0.7}, {"max_tokens": 9},
                                                         {"prompt": "Other?"}]))
def test_the_cache_is_bypassed_or_missed(client, settings, shade, change):
    body = _body(make_image(color=(8, 8, shade)), prompt="What is the total?", max_tokens=8)
    first = client.post("/v1/jobs", json=body).get_json()
    _succeed(settings, first["id"], "7")
    job = client.post("/v1/jobs", json={**body, **change}).get_json()
    assert job["status"] == "queued" and job["cached"] is False


POISONED = {"type": "object", "properties": {"a": {"$ref": "#/definitions/nope"}}, "required": ["a"]}


def test_a_schema_the_engine_cannot_compile_is_refused_at_submit(client):
    response_format = {"type": "json_schema", "json_schema": {"name": "poison", "schema": POISONED}}
    response = client.post("/v1/jobs", json=_body(make_image(), prompt="x", response_format=response_format))
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_response_format"
    assert "#/definitions/nope" in error["message"] and ".cc" not in error["message"]  # no library build paths
