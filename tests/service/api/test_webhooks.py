"""The webhooks API: endpoints, a job's own webhook options, the delivery log and redelivery."""
import base64
import dataclasses
import io
import json
import time
import uuid

import pytest
from sqlalchemy import select

from service.app import create_app
from service.core import batch_lifecycle, batches
from service.core.models import BatchStatus, WebhookDelivery
from tests.conftest import TENANT, drive_delivery, finished_job, keyed, make_image, make_key

IDLE_MODEL = "tiny-idle"  # no session worker serves it, so submitted jobs stay queued


@pytest.fixture
def endpoint(client, receiver):
    """A registered endpoint, deleted afterwards so later tests' events do not reach it."""
    body = client.post("/v1/webhooks", json={"url": receiver.url, "secret": receiver.secret,
                                             "events": ["job.succeeded"]}).get_json()
    yield body
    client.delete(f"/v1/webhooks/{body['id']}")


def test_register_list_get_and_delete_an_endpoint(client, receiver):
    response = client.post("/v1/webhooks", json={"url": receiver.url, "events": ["job.failed", "job.succeeded"],
                                                 "description": "ERP"})
    assert response.status_code == 201
    created = response.get_json()
    assert created["secret"].startswith("whsec_") and created["events"] == ["job.succeeded", "job.failed"]
    assert response.headers["Location"] == f"/v1/webhooks/{created['id']}"
    shown = client.get(f"/v1/webhooks/{created['id']}").get_json()
    assert "secret" not in shown and shown["status"] == "active" and shown["url"] == receiver.url
    listed = client.get("/v1/webhooks").get_json()["data"]
    assert created["id"] in [e["id"] for e in listed] and all("secret" not in e for e in listed)
    assert client.delete(f"/v1/webhooks/{created['id']}").get_json()["deleted"] is True
    assert client.get(f"/v1/webhooks/{created['id']}").status_code == 404
    assert created["id"] not in [e["id"] for e in client.get("/v1/webhooks").get_json()["data"]]


@pytest.mark.parametrize(("body", "status", "code"), [
    ({}, 400, "missing_field"),
    ({"url": "ftp://example.com/hook"}, 400, "invalid_webhook_url"),
    ({"url": "http://10.0.0.7/hook"}, 400, "webhook_url_forbidden"),
    ({"url": "http://169.254.169.254/latest/meta-data"}, 400, "webhook_url_forbidden"),
    ({"url": "http://[::1]:8080/hook"}, 400, "webhook_url_forbidden"),
    ({"url": "http://127.0.0.1/hook", "events": ["job.exploded"]}, 400, "invalid_field"),
    ({"url": "http://127.0.0.1/hook", "secret": "hunter2"}, 400, "invalid_field"),
])
def test_bad_endpoints_are_refused_with_stable_codes(client, body, status, code):
    response = client.post("/v1/webhooks", json=body)
    assert (response.status_code, response.get_json()["error"]["code"]) == (status, code)


def test_a_job_carries_its_webhook_url_and_never_shows_the_secret(client, receiver):
    image = base64.b64encode(make_image()).decode()
    response = client.post("/v1/jobs", json={"prompt": "p", "model": IDLE_MODEL, "image": image,
                                             "webhook_url": receiver.url, "webhook_secret": receiver.secret})
    assert response.status_code == 202
    job = response.get_json()
    assert job["webhook"] == {"url": receiver.url} and receiver.secret not in response.get_data(as_text=True)
    multipart = client.post("/v1/jobs", data={"prompt": "p", "model": IDLE_MODEL, "webhook_url": receiver.url,
                                              "webhook_secret": receiver.secret,
                                              "image": (io.BytesIO(make_image()), "a.png")})
    assert multipart.status_code == 202 and multipart.get_json()["webhook"] == {"url": receiver.url}
    assert client.get(f"/v1/jobs/{job['id']}").get_json()["webhook"] == {"url": receiver.url}


@pytest.mark.parametrize(("fields", "code"), [
    ({"webhook_url": "http://192.168.1.10/hook", "webhook_secret": "whsec_" + "A" * 32}, "webhook_url_forbidden"),
    ({"webhook_url": "gopher://127.0.0.1/", "webhook_secret": "whsec_" + "A" * 32}, "invalid_webhook_url"),
    ({"webhook_url": "http://127.0.0.1:9/hook"}, "missing_field"),  # no secret, and the server has no default
    ({"webhook_url": "http://127.0.0.1:9/hook", "webhook_secret": "plain"}, "invalid_field"),
])
def test_bad_job_webhooks_are_refused(client, fields, code):
    body = {"prompt": "p", "model": IDLE_MODEL, "image": base64.b64encode(make_image()).decode(), **fields}
    response = client.post("/v1/jobs", json=body)
    assert (response.status_code, response.get_json()["error"]["code"]) == (400, code)


def test_the_delivery_log_and_redelivery_under_the_same_id(client, db, settings, receiver, endpoint):
    receiver.script(500)
    job_id = finished_job(db, webhook_url=receiver.url, webhook_secret=receiver.secret)
    deliveries = client.get(f"/v1/webhooks/deliveries?job_id={job_id}").get_json()["data"]
    assert sorted(d["endpoint_id"] or "request" for d in deliveries) == sorted([endpoint["id"], "request"])
    for delivery in deliveries:
        drive_delivery(db, settings, delivery["id"])

    logged = {d["id"]: d for d in client.get(f"/v1/webhooks/deliveries?job_id={job_id}").get_json()["data"]}
    assert all(d["status"] == "succeeded" for d in logged.values())
    retried = next(d for d in logged.values() if len(d["log"]) == 2)
    first, second = retried["log"]
    assert (first["status_code"], second["status_code"]) == (500, 200)
    assert first["response_body"] == "ok" and first["latency_ms"] > 0 and first["next_attempt_at"]
    assert "secret" not in retried

    response = client.post(f"/v1/webhooks/deliveries/{retried['id']}/redeliver")
    assert response.status_code == 202 and response.get_json()["status"] == "pending"
    assert drive_delivery(db, settings, retried["id"]).status == "succeeded"
    ids = [d.webhook_id for d in receiver.deliveries if d.webhook_id == retried["id"]]
    assert len(ids) == 3 and all(d.verified for d in receiver.deliveries)
    assert len(client.get(f"/v1/webhooks/deliveries/{retried['id']}").get_json()["log"]) == 3
    assert client.post("/v1/webhooks/deliveries/msg_nope/redeliver").get_json()["error"]["code"] == "not_found"


def test_redelivery_to_a_deleted_endpoint_is_refused(client, db, settings, receiver, endpoint):
    job_id = finished_job(db)
    [delivery] = client.get(f"/v1/webhooks/deliveries?job_id={job_id}").get_json()["data"]
    drive_delivery(db, settings, delivery["id"])
    client.delete(f"/v1/webhooks/{endpoint['id']}")
    response = client.post(f"/v1/webhooks/deliveries/{delivery['id']}/redeliver")
    assert (response.status_code, response.get_json()["error"]["code"]) == (409, "webhook_endpoint_disabled")


def test_a_tenant_may_register_only_so_many_endpoints(settings, receiver):
    capped = create_app(dataclasses.replace(settings, max_webhook_endpoints_per_tenant=2))
    client = keyed(capped.test_client(), make_key(settings, tenant=f"cap-{uuid.uuid4().hex[:8]}"))
    other = keyed(capped.test_client(), make_key(settings, tenant=f"cap-{uuid.uuid4().hex[:8]}"))
    first, second = (client.post("/v1/webhooks", json={"url": receiver.url}).get_json() for _ in range(2))
    refused = client.post("/v1/webhooks", json={"url": receiver.url})
    assert refused.status_code == 409
    assert refused.get_json()["error"]["code"] == "too_many_webhook_endpoints"
    assert refused.get_json()["error"]["details"] == {"limit": 2}
    assert other.post("/v1/webhooks", json={"url": receiver.url}).status_code == 201  # its own count
    client.delete(f"/v1/webhooks/{first['id']}")  # deleted ones do not count
    assert client.post("/v1/webhooks", json={"url": receiver.url}).status_code == 201
    assert second["id"]


@pytest.mark.parametrize(("body", "field"), [
    ({"format": "openai", "events": ["batch.completed", "job.succeeded"]}, "events"),
    ({"format": "xml"}, "format"),
])
def test_bad_endpoint_formats_are_refused(client, receiver, body, field):
    response = client.post("/v1/webhooks", json={"url": receiver.url, **body})
    assert response.status_code == 400 and response.get_json()["error"]["details"]["field"] == field


def test_an_openai_endpoint_gets_openais_batch_events_and_no_job_events(client, db, receiver):
    openai_endpoint = client.post("/v1/webhooks", json={"url": receiver.url, "format": "openai"}).get_json()
    vlq_endpoint = client.post("/v1/webhooks", json={"url": receiver.url}).get_json()
    try:
        assert (openai_endpoint["format"], vlq_endpoint["format"]) == ("openai", "vlq")
        job_id = finished_job(db)
        with db.session() as session:
            batch = batches.create_batch(session, tenant=TENANT, endpoint=batches.RESPONSES_ENDPOINT,
                                         input_file_id=None, completion_window="24h", priority="bulk", metadata=None,
                                         idempotency_key=None)
            session.flush()
            batch_lifecycle.transition(session, batch.id, BatchStatus.VALIDATING, BatchStatus.FAILED)
        with db.session() as session:
            deliveries = session.scalars(select(WebhookDelivery).where(
                WebhookDelivery.subject_id.in_([job_id, batch.id]))).all()
    finally:
        for endpoint in (openai_endpoint, vlq_endpoint):
            client.delete(f"/v1/webhooks/{endpoint['id']}")
    got = {(d.endpoint_id, d.event_type): json.loads(d.body) for d in deliveries}
    assert set(got) == {(vlq_endpoint["id"], "job.succeeded"), (vlq_endpoint["id"], "batch.failed"),
                        (openai_endpoint["id"], "batch.failed")}
    event = got[(openai_endpoint["id"], "batch.failed")]
    assert event == {"object": "event", "id": event["id"], "type": "batch.failed",
                     "created_at": event["created_at"], "data": {"id": batch.id}}
    assert event["id"].startswith("evt_") and abs(event["created_at"] - time.time()) < 60
    ours = got[(vlq_endpoint["id"], "batch.failed")]
    assert ours["type"] == "batch.failed" and ours["data"]["id"] == batch.id and ours["data"]["status"] == "failed"


def test_loopback_receivers_need_the_development_setting(settings, receiver):
    # The receiver listens on 127.0.0.1: refused by default, accepted where `webhook_allow_loopback` is on.
    strict = dataclasses.replace(settings, egress_allow_cidrs=())
    for allowed, status in ((False, 400), (True, 201)):
        app = create_app(dataclasses.replace(strict, webhook_allow_loopback=allowed))
        client = keyed(app.test_client(), make_key(settings, tenant=f"loop-{uuid.uuid4().hex[:8]}"))
        endpoint = client.post("/v1/webhooks", json={"url": receiver.url})
        job = client.post("/v1/jobs", data={"image": (io.BytesIO(make_image()), "a.png"), "prompt": "Hi",
                                            "model": IDLE_MODEL, "webhook_url": receiver.url,
                                            "webhook_secret": receiver.secret})
        assert (endpoint.status_code, job.status_code) == (status, 202 if allowed else 400)
        if not allowed:
            assert endpoint.get_json()["error"]["code"] == job.get_json()["error"]["code"] == "webhook_url_forbidden"
        else:
            client.delete(f"/v1/webhooks/{endpoint.get_json()['id']}")
            client.post(f"/v1/jobs/{job.get_json()['id']}/cancel")
