"""OpenAI's newer Batch features through the official openai SDK, against the live service and a real worker:
files that expire, a /v1/responses batch with input_image parts (a data URL and an uploaded file's id), its output
file in the Responses shape, OpenAI's `batch.completed` webhook verified by the SDK, and POST /v1/responses."""
import json
import time

import openai
import pytest
from openai.types.responses import Response
from openai.types.webhooks import BatchCompletedWebhookEvent
from sqlalchemy import update

from service.core.models import File, utcnow
from tests.conftest import TINY, data_url, make_image

HOUR = 3600
SCHEMA = {"type": "object", "properties": {"total": {"type": "integer"}}, "required": ["total"],
          "additionalProperties": False}


@pytest.fixture
def sdk(live_server, worker, api_key):
    return openai.OpenAI(base_url=f"{live_server}/v1", api_key=api_key, max_retries=0)


@pytest.fixture
def openai_endpoint(client, receiver):
    """An endpoint registered for OpenAI's batch events, signed with the receiver's secret; deleted afterwards."""
    endpoint = client.post("/v1/webhooks", json={"url": receiver.url, "secret": receiver.secret, "format": "openai",
                                                 "events": ["batch.completed"]})
    assert endpoint.status_code == 201, endpoint.get_json()
    assert endpoint.get_json()["format"] == "openai"
    yield endpoint.get_json()
    client.delete(f"/v1/webhooks/{endpoint.get_json()['id']}")


def _line(custom_id, content, **body):
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/responses", "body": {
        "model": TINY, "max_output_tokens": 6, "temperature": 0,
        "input": [{"role": "user", "content": content}], **body}}


def _wait(sdk, batch):
    deadline = time.monotonic() + 120
    while batch.status not in ("completed", "failed", "cancelled", "expired") and time.monotonic() < deadline:
        time.sleep(0.2)
        batch = sdk.batches.retrieve(batch.id)
    return batch


def test_a_responses_batch_with_expiring_files_ends_with_openais_signed_webhook(sdk, db, receiver, openai_endpoint):
    image_file = sdk.files.create(file=("receipt.png", make_image(color=(90, 20, 160))), purpose="vision",
                                  expires_after={"anchor": "created_at", "seconds": HOUR})
    assert image_file.expires_at == image_file.created_at + HOUR
    lines = [
        _line("data-url", [{"type": "input_text", "text": "What is the total?"},
                           {"type": "input_image", "image_url": data_url(make_image(color=(12, 34, 56)))}],
              instructions="Answer in one word."),
        _line("file-id", [{"type": "input_image", "file_id": image_file.id},
                          {"type": "input_text", "text": "What colour is it?"}]),
        _line("json", [{"type": "input_text", "text": "The total?"},
                       {"type": "input_image", "image_url": data_url(make_image(color=(200, 200, 0)))}],
              max_output_tokens=64, text={"format": {"type": "json_schema", "name": "receipt", "schema": SCHEMA,
                                                     "strict": True}}),
        _line("no-image", [{"type": "input_text", "text": "Nothing to look at"}]),
    ]
    uploaded = sdk.files.create(file=("input.jsonl", "\n".join(json.dumps(line) for line in lines).encode()),
                                purpose="batch", expires_after={"anchor": "created_at", "seconds": 2 * HOUR})
    assert uploaded.expires_at == uploaded.created_at + 2 * HOUR

    batch = sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/responses", completion_window="24h",
                               output_expires_after={"anchor": "created_at", "seconds": 24 * HOUR})
    batch = _wait(sdk, batch)
    assert batch.status == "completed", batch.errors
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (4, 3, 1)

    output_file = sdk.files.retrieve(batch.output_file_id)
    assert output_file.expires_at == output_file.created_at + 24 * HOUR
    assert sdk.files.retrieve(batch.error_file_id).expires_at == sdk.files.retrieve(batch.error_file_id).created_at \
        + 24 * HOUR
    output = {json.loads(line)["custom_id"]: json.loads(line)
              for line in sdk.files.content(batch.output_file_id).text.splitlines()}
    assert sorted(output) == ["data-url", "file-id", "json"]
    for line in output.values():
        assert line["response"]["status_code"] == 200 and line["error"] is None
        response = Response.model_validate(line["response"]["body"])  # the SDK's own model, validated
        assert response.object == "response" and response.model == TINY and response.status in ("completed",
                                                                                                 "incomplete")
        assert response.output[0].type == "message" and response.output[0].content[0].type == "output_text"
        assert response.usage.input_tokens > 0 and 1 <= response.usage.output_tokens <= response.max_output_tokens
    assert output["data-url"]["response"]["body"]["instructions"] == "Answer in one word."
    answer = Response.model_validate(output["json"]["response"]["body"])
    assert answer.status == "completed" and isinstance(json.loads(answer.output_text)["total"], int)
    assert answer.text is None and output["data-url"]["response"]["body"]["text"] == {"format": {"type": "text"}}
    [error] = [json.loads(line) for line in sdk.files.content(batch.error_file_id).text.splitlines()]
    assert error["custom_id"] == "no-image" and error["error"]["code"] == "invalid_field"

    deadline = time.monotonic() + 60
    events = []
    while not events and time.monotonic() < deadline:
        events = [d for d in receiver.deliveries if d.payload and d.payload.get("data", {}).get("id") == batch.id]
        time.sleep(0.05)
    [delivery] = events
    event = sdk.webhooks.unwrap(delivery.body, delivery.headers, secret=receiver.secret)  # verifies the signature
    assert isinstance(event, BatchCompletedWebhookEvent) and event.data.id == batch.id
    assert event.object == "event" and event.id.startswith("evt_") and event.created_at >= batch.created_at
    assert set(json.loads(delivery.body)) == {"object", "id", "type", "created_at", "data"}
    with pytest.raises(openai.InvalidWebhookSignatureError):
        sdk.webhooks.unwrap(delivery.body + b" ", delivery.headers, secret=receiver.secret)

    # An hour later the image file has expired: gone for the SDK as a deleted file is, before retention runs.
    with db.session() as session:
        session.execute(update(File).where(File.id == image_file.id).values(expires_at=utcnow()))
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve(image_file.id)
    assert image_file.id not in [file.id for file in sdk.files.list(limit=10000)]


def test_responses_create_answers_one_image_whole_and_streamed(sdk, client):
    content = [{"type": "input_text", "text": "What is in the picture?"},
               {"type": "input_image", "image_url": data_url(make_image(color=(77, 3, 150)))}]
    response = sdk.responses.create(model=TINY, input=[{"role": "user", "content": content}],
                                    instructions="Be brief.", max_output_tokens=8, temperature=0)
    assert response.object == "response" and response.status in ("completed", "incomplete")
    assert response.max_output_tokens == 8 and 1 <= response.usage.output_tokens <= 8
    job = client.get(f"/v1/jobs/{response.id.removeprefix('resp_')}").get_json()
    assert job["status"] == "succeeded" and job["priority"] == "interactive" and job["max_tokens"] == 8
    assert response.output_text == job["result"]["text"]
    assert job["messages"][0] == {"role": "system", "content": "Be brief."}
    assert (response.status == "incomplete") == (response.incomplete_details is not None)

    # Streamed: OpenAI's events, in order; the last is response.completed, or response.incomplete when cut off.
    events = list(sdk.responses.create(model=TINY, input=[{"role": "user", "content": content}], max_output_tokens=8,
                                       temperature=0.7, top_p=0.9, stream=True))
    kinds = [event.type for event in events]
    assert kinds[:3] == ["response.created", "response.output_item.added", "response.content_part.added"]
    assert kinds[-4:-1] == ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    final = events[-1].response
    assert kinds[-1] == f"response.{final.status}" and final.id != response.id
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas == final.output_text == events[-4].text
    assert client.get(f"/v1/jobs/{final.id.removeprefix('resp_')}").get_json()["result"]["text"] == final.output_text
