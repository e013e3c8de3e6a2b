"""Readiness says exactly what is missing; a dead broker means a clear 503, and nothing stored."""
import base64
import dataclasses
import time

from service.app import create_app
from service.db import Database
from service.models import Job
from tests.conftest import keyed, make_image

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


def test_submit_with_the_broker_down_is_a_503_and_stores_no_job(settings, api_key):
    client = keyed(create_app(dataclasses.replace(settings, redis_url=DEAD_REDIS)).test_client(), api_key)
    with Database(settings.database_url).session() as session:
        before = session.query(Job).count()
    started = time.monotonic()
    response = client.post("/v1/jobs", json={"prompt": "x", "image": base64.b64encode(make_image()).decode()})
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "broker_unavailable"
    assert response.headers["Retry-After"]
    assert time.monotonic() - started < 15  # fails fast instead of hanging the client
    with Database(settings.database_url).session() as session:
        assert session.query(Job).count() == before


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
