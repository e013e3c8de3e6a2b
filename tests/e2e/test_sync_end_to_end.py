"""The synchronous endpoints when nothing can answer in time, in each family's own shape, produced for real:
no worker, a model that failed to load, one still loading, a full queue, a timeout, a client gone, Redis down.
"""
import dataclasses
import re
import time

import openai
import pytest
import redis

from service.adapters import presence
from service.app import create_app
from tests.conftest import BROKEN, REDIS_URL, STUCK, TINY, data_url, keyed, make_image, release_stuck_model, serve

BUSY = "tiny-sync"  # served by this module's one-slot worker, kept busy
IDLE = "tiny-idle"  # in the registry and exported, but no worker ever serves it


def _call(http, url: str, family: str, model: str, **options):
    """One request in `family`'s documented client style; returns (HTTP status, body)."""
    image = make_image(color=(7, 99, 201))
    if family == "openai":
        body = {"model": model, "max_tokens": 8, **options, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(image)}}, {"type": "text", "text": "Total?"}]}]}
        response = http.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    elif family == "simple":
        response = http.post(f"{url}/api/v1/chat", timeout=60,
                                 json={"image": data_url(image), "prompt": "Total?", "model": model, **options})
    else:
        response = http.post(f"{url}/v1/models/{model}:generateContent", timeout=60, json={
            "contents": [{"role": "user", "parts": [
                {"inline_data": {"mime_type": "image/png", "data": data_url(image).split(",")[1]}},
                {"text": "Total?"}]}], "generation_config": {"max_output_tokens": 8, **options}})
    return response.status_code, response.json()


def _assert_refused(http, url: str, model: str, openai_code: str, simple_code: int, status: int = 503,
                    google_status: str = "UNAVAILABLE") -> None:
    code, body = _call(http, url, "openai", model)
    assert code == status and body["error"]["code"] == openai_code, body
    assert body["error"]["type"] == "server_error" and body["error"]["message"]
    code, body = _call(http, url, "simple", model)
    assert code == status and body["code"] == simple_code and body["data"] is None, body
    code, body = _call(http, url, "google", model)
    assert code == status and body["error"]["status"] == google_status and body["error"]["code"] == status, body


def test_no_worker_for_the_model_is_a_503_in_every_family(http, live_server):
    _assert_refused(http, live_server, IDLE, "no_worker", 4004)


def test_a_model_whose_worker_failed_to_load_it_is_a_503_naming_why(http, live_server, start_worker):
    process = start_worker(BROKEN)
    _wait_model_state(process, BROKEN, "unavailable")
    _assert_refused(http, live_server, BROKEN, "model_unavailable", 4004)
    code, body = _call(http, live_server, "openai", BROKEN)
    assert "failed to load" in body["error"]["message"]
    process.stop()


def test_a_model_still_loading_is_a_503_and_the_model_list_says_so(http, live_server, start_worker, config_file):
    process = start_worker(STUCK)
    try:
        _wait_model_state(process, STUCK, "loading")
        _assert_refused(http, live_server, STUCK, "model_loading", 4004)
        assert http.get(f"{live_server}/v1/models/{STUCK}", timeout=10).json()["status"] == "loading"
    finally:
        release_stuck_model(config_file)
        _wait_model_state(process, STUCK, "unavailable")
        process.stop()


def test_with_redis_down_every_family_answers_503_or_its_internal_error_code(http, settings):
    app = create_app(dataclasses.replace(settings, redis_url="redis://127.0.0.1:1/0"))
    with serve(app) as url:
        _assert_refused(http, url, TINY, "broker_unavailable", 5000)
        assert http.get(f"{url}/health", timeout=10).status_code == 503
        health = http.get(f"{url}/api/v1/health", timeout=10)
        assert health.status_code == 503 and health.json()["status"] == "unavailable"  # as /health says


# -- a busy model: one engine slot, two long jobs in the worker and one waiting in the queue ------------------

@pytest.fixture(scope="module")
def busy_worker(client_app, start_worker, api_key):
    """The one-slot worker, and the long jobs it was given (all cancelled at the end)."""
    process = start_worker(BUSY, VLQ_BATCH_SIZE="1")  # one slot, so the worker holds two jobs and runs one
    process.wait_live(BUSY)
    blockers: list[str] = []
    yield blockers
    client = keyed(client_app.test_client(), api_key)
    for job_id in blockers:
        client.post(f"/v1/jobs/{job_id}/cancel")
    process.stop()


@pytest.fixture
def busy(busy_worker, client):
    """Before each test: the worker holds two long jobs and three more wait in the queue. On a quiet machine a
    4,000-token job on the tiny model takes a second or two (one queued job was gone before a test's third call), so
    they are topped up for every test."""
    _keep_busy(client, busy_worker, queued=3)


def _keep_busy(client, blockers: list[str], queued: int) -> None:
    """Submit long jobs until at least `queued` of them wait in the busy model's queue behind the worker's two."""
    queue = redis.Redis.from_url(REDIS_URL)
    deadline = time.monotonic() + 30
    while queue.llen(f"vlq.{BUSY}.interactive") < queued and time.monotonic() < deadline:
        blockers.append(client.post("/v1/jobs", json={
            "image": data_url(make_image(color=(len(blockers) % 256, 1, 1))), "prompt": "Go on.", "model": BUSY,
            "max_tokens": 4000, "ignore_eos": True, "no_cache": True}).get_json()["id"])
        time.sleep(0.3)  # time for the worker to take it, if it has room
    assert queue.llen(f"vlq.{BUSY}.interactive") >= queued, "the worker should hold two jobs and leave some queued"


@pytest.fixture(scope="module")
def client_app(settings):
    return create_app(settings)


def test_a_full_queue_is_refused_with_503_overloaded(http, busy, settings):
    with serve(create_app(dataclasses.replace(settings, sync_max_queue_depth=1))) as url:
        _assert_refused(http, url, BUSY, "overloaded", 5000)


def test_no_answer_in_time_is_504_or_5001_and_the_job_is_cancelled(http, busy, settings, client_app, api_key):
    with serve(create_app(dataclasses.replace(settings, sync_timeout_s=0.5))) as url:
        code, body = _call(http, url, "openai", BUSY)
        assert code == 504 and body["error"]["code"] == "sync_timeout", body
        job_id = re.search(r"job_\w+", body["error"]["message"]).group(0)
        job = keyed(client_app.test_client(), api_key).get(f"/v1/jobs/{job_id}").get_json()
        assert job["status"] == "cancelled" and job["priority"] == "interactive"

        code, body = _call(http, url, "simple", BUSY, max_tokens=64)
        assert code == 504 and body["code"] == 5001, body
        code, body = _call(http, url, "google", BUSY)
        assert code == 504 and body["error"]["status"] == "DEADLINE_EXCEEDED", body


def test_a_stream_that_times_out_ends_with_an_error_event_the_sdk_raises(busy, settings, api_key):
    with serve(create_app(dataclasses.replace(settings, sync_timeout_s=0.5))) as url:
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0)
        content = [{"type": "image_url", "image_url": {"url": data_url(make_image())}}, {"type": "text", "text": "Hi"}]
        stream = sdk.chat.completions.create(model=BUSY, max_tokens=8, stream=True,
                                             messages=[{"role": "user", "content": content}])
        with pytest.raises(openai.APIError, match="No answer within"):
            list(stream)


# -- streaming: a client that goes away ---------------------------------------------------------------------

def test_a_client_that_disconnects_mid_stream_gets_its_job_cancelled(http, live_server, worker, client):
    body = {"model": TINY, "max_tokens": 4000, "ignore_eos": True, "stream": True, "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(make_image())}},
                                     {"type": "text", "text": "Write a long story."}]}]}
    with http.post(f"{live_server}/v1/chat/completions", json=body, stream=True, timeout=60) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith(b"data: "))
        job_id = re.search(rb'"id":"chatcmpl-(job_\w+)"', first).group(1).decode()
        next(line for line in lines if b'"content":"' in line and b'"content":""' not in line)  # it is generating
    job = _wait_job_status(client, job_id, "cancelled")
    assert job["usage"]["completion_tokens"] < 4000


def test_a_client_that_leaves_while_its_stream_waits_in_the_queue_gets_its_job_cancelled(
        http, busy_worker, live_server, client):
    # Enough long jobs ahead that this one cannot start before the stream's next keep-alive (2 s) finds the client
    # gone: each takes a second or more even on a fast machine, and eight leave room for a machine that is faster still.
    _keep_busy(client, busy_worker, queued=8)
    body = {"model": BUSY, "max_tokens": 8, "stream": True, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(make_image())}}, {"type": "text", "text": "Hi"}]}]}
    with http.post(f"{live_server}/v1/chat/completions", json=body, stream=True, timeout=60) as response:
        first = next(line for line in response.iter_lines() if line.startswith(b"data: "))
        job_id = re.search(rb'"id":"chatcmpl-(job_\w+)"', first).group(1).decode()
        assert client.get(f"/v1/jobs/{job_id}").get_json()["status"] == "queued"
    _wait_job_status(client, job_id, "cancelled")  # found out by the keep-alives the stream sends while it waits


def _wait_job_status(client, job_id: str, status: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    job = client.get(f"/v1/jobs/{job_id}").get_json()
    while job["status"] != status and time.monotonic() < deadline:
        time.sleep(0.1)
        job = client.get(f"/v1/jobs/{job_id}").get_json()
    assert job["status"] == status, job
    return job


def _wait_model_state(process, model: str, state: str, timeout: float = 300) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for info in presence.live_workers(client).values():
            if info.get("pid") == process.process.pid and info["models"].get(model, {}).get("status") == state:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{model} never became {state}:\n{process.log()}")
