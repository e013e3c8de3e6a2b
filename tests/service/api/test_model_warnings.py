"""A job, batch or synchronous request for a model no live worker serves: accepted with a warning that says why and
what fixes it (or, synchronously, refused at once), and /readyz naming every such model. Presence is written as
workers write it (service.adapters.presence), for models no real worker in the session serves."""
import io
import json
import zipfile

import pytest
import redis

from service.adapters import presence
from tests.conftest import REDIS_URL, data_url, make_image

NOBODY = "tiny-idle"  # no worker ever serves it
BROKEN = "tiny-unit"  # the fake worker below reports it unavailable, as a worker without its export does
REASON = "model 'tiny-unit' is not exported at /m/tiny-unit-fp16: run `vlq model build-tiny` (offline, under a minute)"


@pytest.fixture
def fake_worker():
    """A live worker, as presence shows it, that has BROKEN unavailable and `tiny-drain` loading."""
    client = redis.Redis.from_url(REDIS_URL)
    presence.announce(client, "fake-worker", {"pid": 0, "models": {
        BROKEN: {"status": "unavailable", "reason": REASON}, "tiny-drain": {"status": "loading"}}}, ttl_s=60)
    yield
    presence.withdraw(client, "fake-worker")


def _submit(client, model, **fields):
    return client.post("/v1/jobs", data={"image": (io.BytesIO(make_image()), "r.png"), "prompt": "Total?",
                                         "model": model, **fields})


def test_a_job_nobody_serves_is_accepted_with_a_warning_and_a_header(client):
    response = _submit(client, NOBODY)
    assert response.status_code == 202
    job = response.get_json()
    assert job["status"] == "queued"
    [warning] = job["warnings"]
    assert warning["code"] == "no_worker" and warning["model"] == NOBODY
    assert "`vlq worker`" in warning["message"] and "queue_timeout_s.interactive" in warning["message"]
    assert response.headers["VLQ-Warning"].startswith("no_worker: No live worker serves the model 'tiny-idle'")
    again = client.get(f"/v1/jobs/{job['id']}")
    assert again.get_json()["warnings"] == [warning] and again.headers["VLQ-Warning"]
    listed = client.get("/v1/jobs?status=queued&limit=100").get_json()["data"]
    assert next(item for item in listed if item["id"] == job["id"])["warnings"] == [warning]
    client.post(f"/v1/jobs/{job['id']}/cancel")
    ended = client.get(f"/v1/jobs/{job['id']}")
    assert ended.get_json()["warnings"] == [] and "VLQ-Warning" not in ended.headers


def test_a_model_no_worker_can_load_warns_with_the_workers_reason(client, fake_worker):
    response = _submit(client, BROKEN, priority="bulk")
    [warning] = response.get_json()["warnings"]
    assert warning["code"] == "model_unavailable" and "`vlq model build-tiny`" in warning["message"]
    assert "queue_timeout_s.bulk" in warning["message"]
    loading = _submit(client, "tiny-drain").get_json()["warnings"]
    assert [item["code"] for item in loading] == ["model_loading"]
    for job in (response.get_json(), _submit(client, "tiny-drain").get_json()):
        client.post(f"/v1/jobs/{job['id']}/cancel")


def test_a_served_model_has_no_warning(client, worker):
    response = _submit(client, "tiny-random")
    assert response.get_json()["warnings"] == [] and "VLQ-Warning" not in response.headers


def test_a_native_batch_warns_at_once(client):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("a.png", make_image())
    response = client.post("/v1/batches", data={"prompt": "Total?", "model": NOBODY,
                                                "archive": (io.BytesIO(archive.getvalue()), "a.zip")})
    assert response.status_code == 200, response.get_json()
    batch = response.get_json()
    assert [item["code"] for item in batch["warnings"]] == ["no_worker"]
    assert "queue_timeout_s.bulk" in batch["warnings"][0]["message"]
    assert response.headers["VLQ-Warning"].startswith("no_worker:")
    client.post(f"/v1/batches/{batch['id']}/cancel")


def test_readyz_names_each_configured_model_no_live_worker_serves(client, fake_worker):
    unserved = {item["model"]: item for item in client.get("/readyz").get_json()["unserved"]}
    assert unserved[BROKEN]["code"] == "model_unavailable" and REASON in unserved[BROKEN]["message"]
    assert unserved["tiny-drain"]["code"] == "model_loading"
    assert unserved[NOBODY]["code"] == "no_worker"


def test_a_sync_request_for_a_model_no_worker_can_load_is_refused_without_retry_after(client, fake_worker):
    body = {"model": BROKEN, "max_tokens": 4, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(make_image())}}, {"type": "text", "text": "Total?"}]}]}
    refused = client.post("/v1/chat/completions", json=body)
    assert refused.status_code == 503 and refused.get_json()["error"]["code"] == "model_unavailable"
    assert "Retry-After" not in refused.headers and refused.headers["x-should-retry"] == "false"
    assert "`vlq model build-tiny`" in refused.get_json()["error"]["message"]
    # A model a worker is loading, or that no worker mentions (one may be starting): worth retrying.
    for model, code in (("tiny-drain", "model_loading"), (NOBODY, "no_worker")):
        waiting = client.post("/v1/chat/completions", json={**body, "model": model})
        assert waiting.get_json()["error"]["code"] == code and waiting.headers["Retry-After"] == "5"


def _ingested_batch(client, app, models):
    """An OpenAI batch with one line for each of `models`, ingested here (no worker needs to take its ingest)."""
    from service.api.context import get_wiring
    from service.core import batches

    lines = [json.dumps({"custom_id": f"line-{index}", "method": "POST", "url": "/v1/chat/completions",
                         "body": {"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": [
                             {"type": "text", "text": "Total?"},
                             {"type": "image_url", "image_url": {"url": data_url(make_image())}}]}]}})
             for index, model in enumerate(models)]
    file = client.post("/v1/files", data={"purpose": "batch",
                                          "file": (io.BytesIO("\n".join(lines).encode()), "in.jsonl")}).get_json()
    batch = client.post("/v1/batches", json={"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                                             "completion_window": "24h"}).get_json()
    wiring = get_wiring(app)
    batches.ingest(wiring.db, wiring.blobs, wiring.broker, wiring.settings, batch["id"], give_up=lambda: True)
    return batch["id"]  # ingested here, or by a session worker that took its task first


def test_an_ingested_batch_warns_for_each_model_its_waiting_items_ask_for(client, app):
    one = _ingested_batch(client, app, [NOBODY, NOBODY])  # one model: read from the batch's row
    mixed = _ingested_batch(client, app, [NOBODY, "tiny-drain"])  # several: read from its queued items
    for batch_id, expected in ((one, [NOBODY]), (mixed, sorted([NOBODY, "tiny-drain"]))):
        response = client.get(f"/v1/batches/{batch_id}")
        assert response.get_json()["status"] == "in_progress"
        assert [(item["code"], item["model"]) for item in response.get_json()["warnings"]] == \
            [("no_worker", model) for model in expected]
        client.post(f"/v1/batches/{batch_id}/cancel")
        assert client.get(f"/v1/batches/{batch_id}").get_json()["warnings"] == []
