"""HTTP request -> worker runs the job -> its terminal event is delivered, signed, by a worker to a real receiver."""
import base64
import io
import os
import signal
import time

from tests.conftest import make_image, wait_for_status


def _wait_delivered(client, job_id, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deliveries = client.get(f"/v1/webhooks/deliveries?job_id={job_id}").get_json()["data"]
        if deliveries and all(d["status"] != "pending" for d in deliveries):
            return deliveries
        time.sleep(0.1)
    raise TimeoutError(f"deliveries of {job_id} still pending: {deliveries}")


def test_a_finished_job_is_delivered_signed_with_its_full_result(client, worker, receiver):
    receiver.script(503)  # one retry, made by the worker
    job_id = client.post("/v1/jobs", json={
        "image": base64.b64encode(make_image()).decode(), "prompt": "What is it?", "max_tokens": 4,
        "metadata": {"ticket": 7}, "webhook_url": receiver.url, "webhook_secret": receiver.secret,
    }).get_json()["id"]
    job = wait_for_status(client, job_id, {"succeeded", "failed"})
    [delivery] = _wait_delivered(client, job_id)
    assert delivery["status"] == "succeeded" and [a["status_code"] for a in delivery["log"]] == [503, 200]
    assert [d.webhook_id for d in receiver.deliveries] == [delivery["id"]] * 2
    assert all(d.verified for d in receiver.deliveries)
    payload = receiver.deliveries[-1].payload
    assert payload["type"] == "job.succeeded" and payload["data"]["result"] == job["result"]
    assert payload["data"]["usage"] == job["usage"] and payload["data"]["metadata"] == {"ticket": 7}


def test_a_delivery_survives_its_worker_being_killed_mid_request(client, start_worker, receiver, settings):
    # Its own webhook queue, so the first attempt is certainly the victim's.
    queue = {"VLQ_WEBHOOK_QUEUE": "vlq.webhooks.victim"}
    victim = start_worker("tiny-victim", **queue)
    victim.wait_live("tiny-victim")
    receiver.script("stall")
    job_id = client.post("/v1/jobs", json={
        "image": base64.b64encode(make_image()).decode(), "prompt": "p", "model": "tiny-victim", "max_tokens": 2,
        "webhook_url": receiver.url, "webhook_secret": receiver.secret,
    }).get_json()["id"]
    assert wait_for_status(client, job_id, {"succeeded", "failed"})["status"] == "succeeded"
    assert receiver.stalled.wait(30), "the delivery never reached the receiver"
    os.kill(victim.process.pid, signal.SIGKILL)
    victim.process.wait()
    receiver.release()

    rescuer = start_worker("tiny-victim", **queue)
    rescuer.wait_live("tiny-victim")
    [delivery] = _wait_delivered(client, job_id, timeout=settings.webhook_lease_s + 30)
    assert delivery["status"] == "succeeded"
    assert {d.webhook_id for d in receiver.deliveries} == {delivery["id"]}  # duplicates share one id
    assert len(receiver.deliveries) >= 2 and all(d.verified for d in receiver.deliveries)
    assert sum(1 for d in receiver.deliveries if d.answered == 200) == 1
    assert client.get(f"/v1/jobs/{job_id}").get_json()["status"] == "succeeded"  # untouched by the webhook
    rescuer.stop()


def test_a_registered_endpoint_receives_the_batch_summary_when_it_completes(client, worker, receiver):
    endpoint = client.post("/v1/webhooks", json={"url": receiver.url, "events": ["batch.completed"]}).get_json()
    receiver.secret = endpoint["secret"]
    batch = client.post("/v1/batches", data={"prompt": "Total?", "max_tokens": "2", "images": [
        (io.BytesIO(make_image()), "a.png"), (io.BytesIO(b"junk"), "b.png")]}).get_json()
    try:
        [delivery] = receiver.wait_for(1, timeout=60)
    finally:
        client.delete(f"/v1/webhooks/{endpoint['id']}")
    assert delivery.verified
    assert delivery.payload["type"] == "batch.completed" and delivery.payload["data"]["id"] == batch["id"]
    assert delivery.payload["data"]["request_counts"] == {"total": 2, "completed": 1, "failed": 1, "cancelled": 0}


def test_a_batch_carrying_its_own_webhook_url_is_told_when_it_ends(client, worker, receiver):
    batch = client.post("/v1/batches", data={
        "prompt": "Total?", "max_tokens": "2", "webhook_url": receiver.url, "webhook_secret": receiver.secret,
        "images": [(io.BytesIO(make_image()), "a.png")]}).get_json()
    assert batch["webhook"] == {"url": receiver.url} and "webhook_secret" not in batch
    [delivery] = receiver.wait_for(1, timeout=60)
    assert delivery.verified and delivery.payload["type"] == "batch.completed"
    assert delivery.payload["data"]["id"] == batch["id"] and delivery.payload["data"]["status"] == "completed"
