"""Response shapes: rows read back from a real database render to their documented components, exactly."""
import json
from datetime import timedelta
from typing import Any

import jsonschema
import pytest

from service.core import batch_lifecycle
from service.core.config import load_settings
from service.core.errors import ApiError, ErrorCode
from service.core.models import (
    ApiKey,
    Batch,
    File,
    Job,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    new_id,
    utcnow,
)
from service.core.shapes import (
    COMPONENTS,
    ApiKeyOut,
    BatchOut,
    BatchRequestOutput,
    ChatCompletionChunk,
    ChatCompletionOut,
    FileOut,
    JobOut,
    Page,
    WebhookDeliveryOut,
    WebhookEndpointOut,
    WebhookEvent,
    components,
)
from tests.conftest import TENANT, TINY


@pytest.fixture
def settings(fresh_database_url, tmp_path):
    (tmp_path / "empty.yaml").write_text("{}")
    return load_settings({"database_url": fresh_database_url, "default_model": TINY},
                         environ={"VLQ_CONFIG": str(tmp_path / "empty.yaml")})


def assert_documented(body: Any, component: str) -> None:
    """`body` validates against the generated component (refs to other components resolved)."""
    jsonschema.validate(body, {"$ref": f"#/components/schemas/{component}", "components": {"schemas": components()}})


def _job(**values: Any) -> Job:
    now = utcnow()
    row = dict(id=new_id("job"), tenant=TENANT, status="succeeded", model=TINY, prompt="Describe.", priority="bulk",
               image_sha256="a" * 64, image_format="png", image_width=96, image_height=64, max_tokens=16,
               temperature=0.0, request_sha256="r" * 64, result_text="A red square.", finish_reason="stop",
               prompt_tokens=30, completion_tokens=4, ttft_ms=12.345, inference_ms=80.06, batch_size=2, worker="w1",
               attempts=1, created_at=now - timedelta(seconds=2), started_at=now - timedelta(seconds=1),
               finished_at=now)
    return Job(**{**row, **values})


def _stored(db, *rows):
    """The rows as read back from the database, so its types (floats, aware times, JSON) are what renders."""
    with db.session() as session:
        session.add_all(rows)
        session.flush()
        keys = [(type(row), row.id) for row in rows]
    return [_read(db, model, ident) for model, ident in keys]


def _read(db, model, ident):
    with db.session() as session:
        row = session.get(model, ident)
        session.expunge(row)
        return row


def test_every_component_is_a_valid_schema_without_pydantic_leftovers():
    schemas = components()
    assert set(COMPONENTS) == set(schemas)
    text = json.dumps(schemas)
    assert "$defs" not in text and '"title"' not in text
    for name, schema in schemas.items():
        jsonschema.Draft202012Validator.check_schema(schema)
        for ref in _refs(schema):
            assert ref.removeprefix("#/components/schemas/") in schemas, f"{name} refers to {ref}"


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in _refs(item)]
    return []


def test_a_job_renders_to_the_documented_job(settings, db):
    plain, structured, queued = _stored(
        db, _job(),
        _job(response_schema={"type": "object"}, result_json={"label": "cat", "score": 0.5},
             result_lines=[{"text": "A", "box": [[0, 0], [1, 0], [1, 1], [0, 1]], "confidence": 0.9}],
             metadata_={"k": "v"}, webhook_url="https://example.com/hook", webhook_secret="s", top_p=0.9),
        _job(status="queued", result_text=None, prompt_tokens=None, completion_tokens=None, started_at=None,
             finished_at=None, ttft_ms=None, inference_ms=None, batch_size=None, worker=None, attempts=0))
    for job in (plain, structured, queued):
        assert_documented(JobOut.from_row(job).dump(), "Job")
    shown = JobOut.from_row(plain).dump()
    # No `json` key for a job without a schema, not a null.
    assert shown["result"] == {"text": "A red square.", "finish_reason": "stop"}
    assert shown["seed"] is None
    assert shown["usage"] == {"prompt_tokens": 30, "completion_tokens": 4, "total_tokens": 34}
    assert shown["timings"]["ttft_ms"] == 12.3 and shown["timings"]["queue_ms"] == 1000.0
    assert shown["created_at"].endswith("Z") and shown["webhook"] is None and shown["temperature"] == 0.0
    assert isinstance(shown["max_tokens"], int) and isinstance(shown["temperature"], float)
    rich = JobOut.from_row(structured).dump()
    assert rich["result"]["json"] == {"label": "cat", "score": 0.5} and rich["result"]["lines"][0]["text"] == "A"
    assert rich["webhook"] == {"url": "https://example.com/hook"} and "secret" not in json.dumps(rich)
    waiting = JobOut.from_row(queued).dump()
    assert waiting["result"] is None and waiting["usage"] is None and waiting["started_at"] is None
    # The webhook body carries the same shape.
    event = WebhookEvent(type="job.succeeded", timestamp=utcnow(), data=JobOut.from_row(plain)).dump()
    assert_documented(event, "WebhookEvent")
    assert event["data"] == shown


def test_a_batch_its_file_and_its_output_lines_render_to_their_components(settings, db):
    now = utcnow()
    batch = Batch(id=new_id("batch"), tenant=TENANT, status="in_progress", endpoint="/v1/chat/completions",
                  input_file_id=None, completion_window="24h", priority="bulk", metadata_=None, errors=None,
                  created_at=now, expires_at=now + timedelta(hours=24), in_progress_at=now, model="tiny-random",
                  # The counts the job state machine keeps on the row (tests/service/core/test_batch_lifecycle.py)
                  request_total=2, request_completed=1, request_failed=1, request_cancelled=0, input_tokens=30,
                  output_tokens=5)
    file = File(id=new_id("file"), tenant=TENANT, filename="in.jsonl", purpose="batch", bytes=10, sha256="f" * 64,
                created_at=now)
    batch, file = _stored(db, batch, file)
    done, failed = _stored(db, _job(batch_id=batch.id, custom_id="a"),
                           _job(batch_id=batch.id, custom_id="b", status="failed", result_text=None,
                                error_code="inference_error", error_message="it broke"))
    with db.session() as session:
        shown = batch_lifecycle.render(session.get(Batch, batch.id)).dump()
    assert_documented(shown, "Batch")
    assert shown["request_counts"] == {"total": 2, "completed": 1, "failed": 1, "cancelled": 0}
    assert shown["usage"] == {"input_tokens": 30, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 5,
                              "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 35}
    assert shown["model"] == "tiny-random"
    assert shown["created_at"] == int(now.timestamp()) and shown["completed_at"] is None and shown["webhook"] is None
    assert_documented(FileOut.from_row(file).dump(), "File")
    assert FileOut.from_row(file).dump()["created_at"] == int(now.timestamp())
    listed = Page[Any](data=[BatchOut.from_row(batch)], has_more=False, next_cursor=None,
                       first_id=batch.id, last_id=batch.id).dump()
    assert_documented(listed, "BatchList")
    assert listed["data"] == [shown]
    line, error_line = BatchRequestOutput.of(done).dump(), BatchRequestOutput.of(failed).dump()
    assert_documented(line, "BatchRequestOutput")
    assert_documented(error_line, "BatchRequestOutput")
    assert line["response"]["body"]["choices"][0]["message"]["content"] == "A red square." and line["error"] is None
    assert error_line == {"id": f"batch_req_{failed.id}", "custom_id": "b", "response": None,
                          "error": {"code": "inference_error", "message": "it broke"}}
    assert_documented(ChatCompletionOut.of(done).dump(), "ChatCompletion")
    chunk = ChatCompletionChunk.of(done, {"content": "A"}).dump()
    assert "usage" not in chunk and ChatCompletionChunk.of(done, {}, with_usage=True).dump()["usage"] is None
    assert_documented(chunk, "ChatCompletionChunk")


def test_secrets_show_only_in_the_answer_that_created_them(settings, db):
    now = utcnow()
    key, endpoint = _stored(
        db, ApiKey(id=new_id("key"), name="ci", tenant=TENANT, key_hash="h" * 64, prefix="vlq_abc", admin=False,
                   rate_limit_rps=2.5, max_queued_jobs=None, created_at=now),
        WebhookEndpoint(id=new_id("we"), tenant=TENANT, url="https://example.com/h", secret="whsec_x",
                        events=["job.failed"], description=None, status="active", created_at=now))
    assert "key" not in ApiKeyOut.from_row(key).dump()
    created = ApiKeyOut.from_row(key, secret="vlq_abc_secret").dump()
    assert created["key"] == "vlq_abc_secret" and created["rate_limit_rps"] == 2.5 and created["last_used_at"] is None
    assert "secret" not in WebhookEndpointOut.from_row(endpoint).dump()
    assert WebhookEndpointOut.from_row(endpoint, with_secret=True).dump()["secret"] == "whsec_x"
    for body in (ApiKeyOut.from_row(key).dump(), created):
        assert_documented(body, "ApiKey")
    for with_secret in (False, True):
        assert_documented(WebhookEndpointOut.from_row(endpoint, with_secret=with_secret).dump(), "WebhookEndpoint")


def test_a_delivery_shows_its_next_attempt_only_while_pending(settings, db):
    now = utcnow()
    job, = _stored(db, _job())
    delivery, = _stored(db, WebhookDelivery(
        id=new_id("msg"), tenant=TENANT, event_type="job.succeeded", subject_id=job.id, target="request",
        url="https://example.com/h", secret="s", body="{}", status="pending", attempts=1,
        next_attempt_at=now + timedelta(seconds=5), created_at=now))
    attempt, = _stored(db, WebhookAttempt(delivery_id=delivery.id, attempt=1, status_code=500, latency_ms=12.345,
                                          response_body="no", next_attempt_at=delivery.next_attempt_at,
                                          created_at=now))
    shown = WebhookDeliveryOut.from_row(delivery, [attempt]).dump()
    assert_documented(shown, "WebhookDelivery")
    assert shown["next_attempt_at"] is not None and shown["log"][0]["latency_ms"] == 12.3
    delivery.status = "failed"
    assert WebhookDeliveryOut.from_row(delivery, []).dump()["next_attempt_at"] is None


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_error_body_is_the_documented_error(code):
    assert_documented(ApiError(code, "Something.", {"field": "x"}).body(), "Error")
    assert_documented(ApiError(code, "Something.").body(), "Error")
