"""HTTP request -> database -> Redis -> real worker process running the tiny Qwen3-VL -> result."""
import base64
import io
import os
import signal
import time

from service.adapters.db import Database
from service.core import lifecycle
from tests.conftest import TINY, make_image, wait_for_status


def test_submit_then_poll_returns_the_result_with_engine_stats(client, worker):
    response = client.post("/v1/jobs", data={
        "image": (io.BytesIO(make_image("JPEG", size=(160, 120))), "receipt.jpg"),
        "prompt": "What is the total?", "max_tokens": "12", "ignore_eos": "true", "metadata": '{"ref": "A-1"}',
    })
    assert response.status_code == 202
    job = wait_for_status(client, response.get_json()["id"], {"succeeded", "failed"})
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["text"] is not None
    assert job["usage"]["completion_tokens"] == 12  # EOS ignored: exactly max_tokens
    assert job["usage"]["prompt_tokens"] > 12  # the image's tokens are part of the prompt
    assert job["usage"]["total_tokens"] == job["usage"]["prompt_tokens"] + 12
    timings = job["timings"]
    assert 0 < timings["ttft_ms"] <= timings["inference_ms"]
    assert timings["queue_ms"] >= 0 and timings["total_ms"] >= timings["queue_ms"]
    assert job["worker"] == worker.name and job["attempts"] == 1 and job["batch_size"] >= 1
    assert job["metadata"] == {"ref": "A-1"}
    assert job["started_at"] and job["finished_at"] and job["error"] is None


def test_a_preset_with_max_pixels_shows_the_model_a_smaller_image(client, worker, settings):
    image = make_image("PNG", size=(256, 256))
    thumbnail, full = (
        wait_for_status(client, client.post("/v1/jobs", data={
            "image": (io.BytesIO(image), "photo.png"), "max_tokens": "4", **fields}).get_json()["id"],
            {"succeeded", "failed"})
        for fields in ({"preset": "thumbnail"}, {"prompt": settings.presets["thumbnail"].prompt})
    )
    assert thumbnail["status"] == full["status"] == "succeeded"
    assert full["cached"] is False  # same prompt and image, but the model saw another image
    # 64x64 pixels is 2x2 image tokens, the model's 128x128 is 4x4; the prompts are otherwise the same.
    assert full["usage"]["prompt_tokens"] - thumbnail["usage"]["prompt_tokens"] == 16 - 4


def test_a_batch_of_jobs_runs_together_in_the_engine(client, worker):
    ids = [client.post("/v1/jobs", json={
        "image": base64.b64encode(make_image(color=(i, 0, 0))).decode(), "prompt": "Describe it.",
        "max_tokens": 64, "ignore_eos": True,
    }).get_json()["id"] for i in range(8)]
    jobs = [wait_for_status(client, job_id, {"succeeded", "failed"}) for job_id in ids]
    assert all(job["status"] == "succeeded" for job in jobs)
    assert max(job["batch_size"] for job in jobs) > 1  # they shared engine steps, up to batch_size=4
    assert max(job["batch_size"] for job in jobs) <= 4


def test_cancel_a_running_job_stops_its_generation(client, worker, settings):
    job_id = client.post("/v1/jobs", json={
        "image": base64.b64encode(make_image()).decode(), "prompt": "Go on forever.",
        "max_tokens": 4000, "ignore_eos": True,
    }).get_json()["id"]
    wait_for_status(client, job_id, {"running"})
    response = client.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 202
    job = wait_for_status(client, job_id, {"cancelled", "succeeded", "failed"})
    assert job["status"] == "cancelled"
    assert job["usage"]["completion_tokens"] < 4000  # stopped part-way; the partial output is kept
    with Database(settings.database_url).session() as session:
        types = [event.type for event in lifecycle.events(session, job_id)]
    assert types == ["job.queued", "job.running", "job.cancelled"]


def test_interactive_jobs_go_before_waiting_bulk_jobs(client, start_worker):
    # No worker serves tiny-priority yet, so these wait in its queues.
    image = base64.b64encode(make_image()).decode()
    submit = lambda priority: client.post("/v1/jobs", json={  # noqa: E731
        "image": image, "prompt": priority, "model": "tiny-priority", "priority": priority, "max_tokens": 4,
    }).get_json()["id"]
    bulk = [submit("bulk") for _ in range(4)]
    interactive = submit("interactive")
    process = start_worker("tiny-priority", VLQ_BATCH_SIZE="1")  # one slot: strictly one job at a time
    process.wait_live("tiny-priority")
    jobs = {job_id: wait_for_status(client, job_id, {"succeeded", "failed"}) for job_id in [*bulk, interactive]}
    order = sorted(jobs, key=lambda job_id: jobs[job_id]["started_at"])
    assert order[0] == interactive
    process.stop()


def test_a_job_survives_its_worker_being_killed_mid_generation(client, start_worker, settings):
    victim = start_worker("tiny-victim")
    victim.wait_live("tiny-victim")
    job_id = client.post("/v1/jobs", json={
        "image": base64.b64encode(make_image()).decode(), "prompt": "Long answer.", "model": "tiny-victim",
        "max_tokens": 3000, "ignore_eos": True,
    }).get_json()["id"]
    running = wait_for_status(client, job_id, {"running", "succeeded"}, timeout=30)
    assert running["status"] == "running" and running["worker"] == victim.name
    os.kill(victim.process.pid, signal.SIGKILL)
    victim.process.wait()

    rescuer = start_worker("tiny-victim")
    rescuer.wait_live("tiny-victim")
    job = wait_for_status(client, job_id, {"succeeded", "failed", "cancelled"}, timeout=90)
    assert job["status"] == "succeeded" and job["attempts"] == 2 and job["worker"] == rescuer.name
    assert job["usage"]["completion_tokens"] == 3000
    time.sleep(2 * settings.sweep_interval_s)  # give a wrongful second ending the chance to happen
    with Database(settings.database_url).session() as session:
        types = [event.type for event in lifecycle.events(session, job_id)]
    assert types == ["job.queued", "job.running", "job.queued", "job.running", "job.succeeded"]
    rescuer.stop()


def test_readyz_lists_live_models_once_a_worker_is_up(client, worker):
    body = client.get("/readyz").get_json()
    assert body["status"] == "ready" and TINY in body["models"]
    assert body["checks"] == {"database": "ok", "redis": "ok", "storage": "ok"}
    assert client.get("/healthz").get_json() == {"status": "ok"}
