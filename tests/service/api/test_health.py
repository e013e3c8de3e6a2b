"""Readiness says exactly what is missing (a submit with the broker down: tests/service/adapters/test_broker.py)."""
import dataclasses
import time

from service.app import create_app

DEAD_REDIS = "redis://127.0.0.1:1/0"


def test_healthz_answers_without_any_backend(settings):
    app = create_app(dataclasses.replace(settings, redis_url=DEAD_REDIS))
    assert app.test_client().get("/healthz").get_json() == {"status": "ok"}


def test_readyz_reports_redis_missing(settings):
    response = create_app(dataclasses.replace(settings, redis_url=DEAD_REDIS)).test_client().get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "not_ready" and body["missing"] == ["redis"]
    assert body["checks"]["database"] == "ok"


def test_a_worker_without_its_model_stays_up_and_says_why(client, start_worker):
    # qwen3-vl-2b is in the registry but not exported here (no hub access): the worker must explain.
    process = start_worker("qwen3-vl-2b,tiny-victim")
    process.wait_live("tiny-victim")
    workers = client.get("/readyz").get_json()["workers"]
    info = next(w for w in workers if w["pid"] == process.process.pid)
    unavailable = info["models"]["qwen3-vl-2b"]
    assert unavailable["status"] == "unavailable"
    assert "vlq model export qwen3-vl-2b" in unavailable["reason"]
    process.stop()


def test_a_worker_with_no_model_at_all_stays_up(client, start_worker):
    process = start_worker("qwen3-vl-2b")
    deadline = time.monotonic() + 60
    info = None
    while time.monotonic() < deadline and info is None:
        workers = client.get("/readyz").get_json()["workers"]
        info = next((w for w in workers if w["pid"] == process.process.pid
                     and w["models"]["qwen3-vl-2b"]["status"] == "unavailable"), None)
        time.sleep(0.2)
    assert info is not None, process.log()
    time.sleep(1)
    assert process.process.poll() is None  # still running, consuming only its idle queue
    process.stop()
