"""Readiness says exactly what is missing (a submit with the broker down: tests/service/adapters/test_broker.py),
and tells the workers' names, PIDs and model states only to callers with a key."""
import dataclasses
import socket
import time

from service.app import create_app
from tests.conftest import TINY, keyed

DEAD_REDIS = "redis://127.0.0.1:1/0"


def test_healthz_answers_without_any_backend(settings):
    app = create_app(dataclasses.replace(settings, redis_url=DEAD_REDIS))
    assert app.test_client().get("/healthz").get_json() == {"status": "ok"}


def test_readyz_reports_redis_missing(settings, api_key):
    app = create_app(dataclasses.replace(settings, redis_url=DEAD_REDIS))
    response = keyed(app.test_client(), api_key).get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "not_ready" and body["missing"] == ["redis"]
    assert body["checks"]["database"] == "ok"
    anonymous = app.test_client().get("/readyz")
    assert anonymous.status_code == 503 and anonymous.get_json() == {"status": "not_ready", "missing": ["redis"]}


def test_readyz_shows_workers_and_pids_only_to_callers_with_a_key(app, client, worker):
    keyed_body = client.get("/readyz").get_json()
    assert keyed_body["status"] == "ready" and TINY in keyed_body["models"]
    mine = next(w for w in keyed_body["workers"] if w["pid"] == worker.process.pid)
    assert mine["host"] == socket.gethostname()

    anonymous = app.test_client().get("/readyz")
    assert anonymous.status_code == 200 and anonymous.get_json() == {"status": "ready", "missing": []}
    text = anonymous.get_data(as_text=True)
    assert str(worker.process.pid) not in text and socket.gethostname() not in text
    # A key sent to /readyz is checked as anywhere: a wrong one is the usual 401, not a quiet anonymous answer.
    wrong = app.test_client().get("/readyz", headers={"Authorization": "Bearer vlq_sk_" + "E" * 43})
    assert wrong.status_code == 401 and wrong.get_json()["error"]["code"] == "unauthorized"


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
