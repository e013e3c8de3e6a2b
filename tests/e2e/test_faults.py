"""Faults lose nothing: a Redis restart, a Postgres cut and worker stops, with real worker and beat processes.

Everything runs on private backends (tests/e2e/faults.py): a Redis this module kills, and Postgres behind a proxy it
cuts. The API is the real app in this process, so its answers during an outage are checked one by one.
"""
import base64
import signal
import time

import pytest
import redis

from service.adapters.db import Database
from service.app import create_app
from service.core import lifecycle
from tests.conftest import TINY, keyed, make_image, make_key, wait_for_status
from tests.e2e.faults import FaultyStack

ENDED = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = FaultyStack(tmp_path_factory.mktemp("faults"))
    try:
        stack.start("beat")
        stack.worker = stack.start_worker(TINY)
        yield stack
    finally:
        stack.close()


@pytest.fixture(scope="module")
def api(stack):
    app = create_app(stack.settings)
    yield keyed(app.test_client(), make_key(stack.settings, rate_limit_rps=0, max_queued_jobs=0))
    app.extensions["vlq"].db.dispose()


def _submit(api, max_tokens, model=TINY):
    return api.post("/v1/jobs", json={"image": base64.b64encode(make_image()).decode(), "prompt": "Go on.",
                                      "model": model, "max_tokens": max_tokens, "ignore_eos": True})


def _events(stack, job_id):
    database = Database(stack.direct_database_url)
    with database.session() as session:
        types = [event.type for event in lifecycle.events(session, job_id)]
    database.dispose()
    return types


def _wait_for_log(process, text, timeout=60):
    deadline = time.monotonic() + timeout
    while text not in process.log_path.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"never logged {text!r}:\n{process.log()}"
        time.sleep(0.1)


def test_a_redis_restart_loses_no_accepted_job(stack, api):
    ids = [_submit(api, 1500).get_json()["id"] for _ in range(12)]  # 8 go to the worker, the rest wait in Redis
    assert redis.Redis.from_url(stack.redis.url).llen(f"vlq.{TINY}.interactive") > 0
    stack.redis.kill()  # no persistence: the waiting messages are gone
    during = _submit(api, 10)
    assert during.status_code == 202 and during.get_json()["status"] == "queued"  # stored; sent once Redis is back
    ids.append(during.get_json()["id"])
    stack.redis.start()

    jobs = [wait_for_status(api, job_id, ENDED, timeout=120) for job_id in ids]
    assert [job["status"] for job in jobs] == ["succeeded"] * len(ids)
    for job_id in ids:
        assert _events(stack, job_id)[-1] == "job.succeeded"
        assert sum(event.startswith("job.succeeded") for event in _events(stack, job_id)) == 1


def test_a_postgres_cut_is_a_503_and_everything_recovers_by_itself(stack, api):
    job_id = _submit(api, 4000).get_json()["id"]
    assert wait_for_status(api, job_id, {"running", *ENDED})["status"] == "running"
    stack.proxy.cut()
    try:
        refused = _submit(api, 10)
        assert refused.status_code == 503 and refused.headers["Retry-After"]
        assert refused.get_json()["error"]["code"] == "database_unavailable"
        assert api.get(f"/v1/jobs/{job_id}").get_json()["error"]["code"] == "database_unavailable"
        ready = api.get("/readyz")
        assert ready.status_code == 503 and ready.get_json()["missing"] == ["database"]
        # The generation ends during the cut: its worker holds the result until the database is back.
        _wait_for_log(stack.worker, f"job {job_id}: result: the database is unavailable")
    finally:
        stack.proxy.restore()

    assert _submit(api, 10).status_code == 202  # the same app, its broken connections replaced
    job = wait_for_status(api, job_id, ENDED)
    assert (job["status"], job["attempts"], job["worker"]) == ("succeeded", 1, stack.worker.name)
    assert job["usage"]["completion_tokens"] == 4000
    assert _events(stack, job_id) == ["job.queued", "job.running", "job.succeeded"]


def test_a_warm_stop_lets_a_running_job_finish(stack, api):
    worker = stack.start_worker("tiny-drain", VLQ_SHUTDOWN_GRACE_S="60")
    job_id = _submit(api, 4000, model="tiny-drain").get_json()["id"]
    assert wait_for_status(api, job_id, {"running", *ENDED})["status"] == "running"
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(timeout=90) == 0
    job = api.get(f"/v1/jobs/{job_id}").get_json()
    assert (job["status"], job["attempts"], job["worker"]) == ("succeeded", 1, worker.name)
    assert job["usage"]["completion_tokens"] == 4000


def test_a_warm_stop_requeues_what_cannot_finish_within_its_grace(stack, api):
    worker = stack.start_worker("tiny-drain", VLQ_SHUTDOWN_GRACE_S="0")
    job_id = _submit(api, 4000, model="tiny-drain").get_json()["id"]
    assert wait_for_status(api, job_id, {"running", *ENDED})["status"] == "running"
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(timeout=60) == 0
    job = api.get(f"/v1/jobs/{job_id}").get_json()
    assert (job["status"], job["worker"]) == ("queued", worker.name)  # handed back at once, not left running
    assert _events(stack, job_id) == ["job.queued", "job.running", "job.queued"]

    # ...and sent again: the next worker for its model takes it (a job sent is run, see the other tests).
    waiting = redis.Redis.from_url(stack.redis.url).lrange("vlq.tiny-drain.interactive", 0, -1)
    assert any(job_id.encode() in message for message in waiting)
