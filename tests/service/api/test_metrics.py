"""GET /metrics: queue depth, jobs by state, latency histograms, tokens and webhook outcomes, summed over workers."""
import base64
import time

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TINY, make_image, wait_for_status

UNSERVED = "qwen3-vl-2b"  # in the registry, exported nowhere in the tests: its jobs wait in the queue


def _samples(client) -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.get_data(as_text=True)) for sample in family.samples}


def _value(samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_a_finished_job_shows_in_latency_histograms_tokens_and_states(client, worker, receiver):
    before = _samples(client)
    response = client.post("/v1/jobs", json={
        "image": base64.b64encode(make_image()).decode(), "prompt": "Count.", "max_tokens": 6, "ignore_eos": True,
        "webhook_url": receiver.url, "webhook_secret": receiver.secret})
    job = wait_for_status(client, response.get_json()["id"], {"succeeded", "failed"})
    assert job["status"] == "succeeded", job["error"]
    receiver.wait_for(1)
    deadline = time.monotonic() + 20  # the outcome is counted just after the delivery's row is written
    while _value(after := _samples(client), "vlq_webhook_deliveries_total", outcome="succeeded") <= _value(
            before, "vlq_webhook_deliveries_total", outcome="succeeded") and time.monotonic() < deadline:
        time.sleep(0.1)

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert grew("vlq_generated_tokens_total", model=TINY) >= 6
    assert grew("vlq_prompt_tokens_total", model=TINY) >= job["usage"]["prompt_tokens"]
    assert grew("vlq_jobs_finished_total", model=TINY, status="succeeded") >= 1
    for histogram in ("vlq_job_queue_wait_seconds", "vlq_job_ttft_seconds", "vlq_job_inference_seconds",
                      "vlq_job_total_seconds"):
        assert grew(f"{histogram}_count", model=TINY) >= 1, histogram
        assert _value(after, f"{histogram}_bucket", model=TINY, le="+Inf") == _value(after, f"{histogram}_count",
                                                                                      model=TINY)
    assert grew("vlq_job_total_seconds_sum", model=TINY) >= job["timings"]["total_ms"] / 1000 * 0.99
    assert grew("vlq_webhook_deliveries_total", outcome="succeeded") >= 1
    assert _value(after, "vlq_jobs", model=TINY, state="succeeded") >= 1
    assert _value(after, "vlq_workers") >= 1


def test_queue_depth_counts_waiting_tasks_per_model_and_priority(client, worker):
    before = _samples(client)
    job_ids = [client.post("/v1/jobs", json={"image": base64.b64encode(make_image(color=(i, 1, 2))).decode(),
                                             "prompt": "Wait.", "model": UNSERVED, "priority": "bulk",
                                             "max_tokens": 1}).get_json()["id"] for i in range(2)]
    after = _samples(client)
    for job_id in job_ids:
        client.post(f"/v1/jobs/{job_id}/cancel")
    assert _value(after, "vlq_queue_depth", model=UNSERVED, priority="bulk") - _value(
        before, "vlq_queue_depth", model=UNSERVED, priority="bulk") == 2
    assert ("vlq_queue_depth", frozenset({"model": UNSERVED, "priority": "interactive"}.items())) in after
    assert _value(after, "vlq_jobs", model=UNSERVED, state="queued") - _value(
        before, "vlq_jobs", model=UNSERVED, state="queued") == 2
