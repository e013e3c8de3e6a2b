"""Tenant isolation: another tenant's id is a 404 and lists never show it, for every resource; webhook events go
only to the owning tenant's endpoints; idempotency keys and cached results are never shared across tenants."""
import base64
import io
import json

import pytest
from sqlalchemy import select

from service.core import lifecycle
from service.core.models import Job, JobStatus, WebhookDelivery
from tests.conftest import finished_job, keyed, make_image, make_key

IDLE_MODEL = "tiny-priority"  # no session worker serves it, so submitted jobs stay queued


@pytest.fixture(scope="module")
def globex_key(settings):
    return make_key(settings, name="globex", tenant="globex", rate_limit_rps=0, max_queued_jobs=0)


@pytest.fixture
def other(app, globex_key):
    """A client of another tenant, `globex`; `client` is `acme`."""
    return keyed(app.test_client(), globex_key)


def _job_body(**fields):
    return {"prompt": "Total?", "model": IDLE_MODEL, "image": base64.b64encode(make_image()).decode(), **fields}


def _listed(client, path, **query):
    return [row["id"] for row in client.get(path, query_string={"limit": 100, **query}).get_json()["data"]]


def _is_404(response):
    return response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"


def test_jobs_of_another_tenant_are_not_found(client, other):
    job_id = client.post("/v1/jobs", json=_job_body()).get_json()["id"]
    assert _is_404(other.get(f"/v1/jobs/{job_id}"))
    assert _is_404(other.post(f"/v1/jobs/{job_id}/cancel"))
    assert job_id not in _listed(other, "/v1/jobs") and job_id not in _listed(other, "/v1/jobs", status="queued")
    assert client.get(f"/v1/jobs/{job_id}").get_json()["status"] == "queued"  # the cancel did not touch it
    assert job_id in _listed(client, "/v1/jobs")


def test_an_idempotency_key_is_per_tenant(client, other):
    headers = {"Idempotency-Key": "order-7"}
    mine = client.post("/v1/jobs", json=_job_body(), headers=headers)
    theirs = other.post("/v1/jobs", json=_job_body(prompt="Something else"), headers=headers)
    assert mine.status_code == theirs.status_code == 202  # not a 409, nor a replay of the other's job
    assert mine.get_json()["id"] != theirs.get_json()["id"] and "Idempotent-Replayed" not in theirs.headers
    again = other.post("/v1/jobs", json=_job_body(prompt="Something else"), headers=headers)
    assert again.headers["Idempotent-Replayed"] == "true" and again.get_json()["id"] == theirs.get_json()["id"]


def test_cached_results_are_never_shared_across_tenants(client, other, db):
    body = _job_body(image=base64.b64encode(make_image(color=(9, 8, 7))).decode(), prompt="Cache me")
    first = client.post("/v1/jobs", json=body).get_json()["id"]
    with db.session() as session:
        lifecycle.claim(session, first, "test-worker")
    with db.session() as session:
        assert lifecycle.finish(session, session.get(Job, first), JobStatus.SUCCEEDED, result_text="42",
                                prompt_tokens=3, completion_tokens=1)
    assert client.post("/v1/jobs", json=body).get_json()["cache_of"] == first
    theirs = other.post("/v1/jobs", json=body).get_json()
    assert (theirs["status"], theirs["cached"], theirs["cache_of"]) == ("queued", False, None)


def test_files_of_another_tenant_are_not_found(client, other):
    lines = json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}).encode()
    file_id = client.post("/v1/files", data={"purpose": "batch", "file": (io.BytesIO(lines), "in.jsonl")}
                          ).get_json()["id"]
    assert _is_404(other.get(f"/v1/files/{file_id}"))
    assert _is_404(other.get(f"/v1/files/{file_id}/content"))
    assert _is_404(other.delete(f"/v1/files/{file_id}"))
    assert file_id not in _listed(other, "/v1/files")
    # Nor can a batch read it: the answer is the one for a file that does not exist.
    response = other.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"})
    assert response.status_code == 400 and response.get_json()["error"]["details"]["field"] == "input_file_id"
    assert client.get(f"/v1/files/{file_id}/content").get_data() == lines
    assert file_id in _listed(client, "/v1/files")


def test_batches_of_another_tenant_are_not_found(client, other):
    batch = client.post("/v1/batches", data={"prompt": "Total?", "model": IDLE_MODEL,
                                             "images": [(io.BytesIO(make_image()), "a.png")]}).get_json()
    assert _is_404(other.get(f"/v1/batches/{batch['id']}"))
    assert _is_404(other.get(f"/v1/batches/{batch['id']}/results"))
    assert _is_404(other.post(f"/v1/batches/{batch['id']}/cancel"))
    assert batch["id"] not in _listed(other, "/v1/batches")
    [item] = [json.loads(line) for line in client.get(f"/v1/batches/{batch['id']}/results").get_data().splitlines()]
    assert _is_404(other.get(f"/v1/jobs/{item['job_id']}"))  # nor its items
    assert client.get(f"/v1/batches/{batch['id']}").get_json()["status"] == "in_progress"
    assert batch["id"] in _listed(client, "/v1/batches")
    client.post(f"/v1/batches/{batch['id']}/cancel")


def test_webhook_endpoints_and_deliveries_stay_in_their_tenant(client, other, db, receiver):
    mine = client.post("/v1/webhooks", json={"url": receiver.url, "secret": receiver.secret}).get_json()
    theirs = other.post("/v1/webhooks", json={"url": receiver.url, "secret": receiver.secret}).get_json()
    try:
        assert _is_404(other.get(f"/v1/webhooks/{mine['id']}"))
        assert _is_404(other.delete(f"/v1/webhooks/{mine['id']}"))
        assert mine["id"] not in _listed(other, "/v1/webhooks") and theirs["id"] not in _listed(client, "/v1/webhooks")

        # Events of acme's job, and of acme's batch and its items, reach acme's endpoint and never globex's.
        job_id = finished_job(db)
        batch = client.post("/v1/batches", data={"prompt": "Total?", "model": IDLE_MODEL,
                                                 "images": [(io.BytesIO(make_image()), "a.png")]}).get_json()
        client.post(f"/v1/batches/{batch['id']}/cancel")
        with db.session() as session:
            deliveries = session.scalars(select(WebhookDelivery).where(
                WebhookDelivery.endpoint_id.in_([mine["id"], theirs["id"]]))).all()
        assert {(d.endpoint_id, d.event_type) for d in deliveries} >= {
            (mine["id"], "job.succeeded"), (mine["id"], "batch.cancelled"), (mine["id"], "job.cancelled")}
        assert all(d.endpoint_id == mine["id"] and d.tenant == "acme" for d in deliveries)

        [delivery] = [d for d in client.get("/v1/webhooks/deliveries", query_string={"job_id": job_id}
                                            ).get_json()["data"] if d["endpoint_id"] == mine["id"]]
        assert other.get("/v1/webhooks/deliveries", query_string={"job_id": job_id}).get_json()["data"] == []
        assert delivery["id"] not in _listed(other, "/v1/webhooks/deliveries")
        assert _is_404(other.get(f"/v1/webhooks/deliveries/{delivery['id']}"))
        assert _is_404(other.post(f"/v1/webhooks/deliveries/{delivery['id']}/redeliver"))
    finally:
        client.delete(f"/v1/webhooks/{mine['id']}")
        other.delete(f"/v1/webhooks/{theirs['id']}")
