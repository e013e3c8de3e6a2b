"""A worker runtime: it pulls a model it lacks from the bucket at start, and says so while it does (/readyz); a stop
hands back every job it claimed and claims no more."""
from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.adapters import presence
from service.adapters.broker import job_queue
from service.core.models import new_id
from tests.conftest import TINY, queued_job, read_job
from workers.inference import execute_job
from workers.modelstore.registry import LocalModel, local_model
from workers.modelstore.remote import RemoteModels, remote_models
from workers.runtime import Stopping, WorkerRuntime


@pytest.fixture
def runtime(settings: Any, s3_server: Any, tmp_path: Path) -> Any:
    runtime = WorkerRuntime(dataclasses.replace(settings, blob_url=f"s3://{s3_server.bucket()}/vlq",
                                                model_cache=str(tmp_path / "cache"), models=(TINY,)), name="pull-test")
    yield runtime
    presence.withdraw(runtime.redis, runtime.name)
    runtime.wiring.close()


def _pushed(runtime: WorkerRuntime, model_cache: Path) -> RemoteModels:
    remote = remote_models(runtime.settings)
    spec = runtime.settings.registry[TINY]
    remote.push(LocalModel(spec, model_cache / spec.export_dir_name))
    return remote


def test_readyz_shows_the_model_being_pulled(runtime: WorkerRuntime, model_cache: Path, client: Any) -> None:
    remote = _pushed(runtime, model_cache)
    seen: list[dict[str, Any]] = []

    def during_the_pull(**_: Any) -> None:  # after each file arrives: announce, and ask /readyz as a probe would
        presence.announce(runtime.redis, runtime.name, runtime._presence_info(), 10)
        [worker] = [w for w in client.get("/readyz").get_json()["workers"] if w["name"] == runtime.name]
        seen.append(worker["models"][TINY])

    remote.client.meta.events.register("after-call.s3.GetObject", during_the_pull)
    model = local_model(runtime.settings, runtime.settings.registry[TINY])
    assert runtime._pull(remote, model) and model.exported
    assert seen and all(state["status"] == "pulling" for state in seen)
    assert seen[-1]["of"] > 0 and 0 < seen[-1]["bytes"] <= seen[-1]["of"]
    assert runtime.models[TINY] == {"status": "loading"}  # next: the usual load


def test_a_failed_pull_makes_the_model_unavailable_with_the_reason(runtime: WorkerRuntime,
                                                                  model_cache: Path) -> None:
    remote = _pushed(runtime, model_cache)
    spec = runtime.settings.registry[TINY]
    key = remote.location.key("models", spec.export_dir_name, "files", "config.json")
    remote.client.put_object(Bucket=remote.location.bucket, Key=key, Body=b"{}")
    model = local_model(runtime.settings, spec)
    assert not runtime._pull(remote, model) and not model.exported
    assert runtime.models[TINY]["status"] == "unavailable" and "config.json" in runtime.models[TINY]["reason"]


# -- stops ------------------------------------------------------------------------------------

STOPPED = "tiny-unit"  # no worker process serves it, so a requeued job's message waits in Redis for the test to read


@pytest.fixture
def serving(settings: Any, exported_models: Path) -> Iterator[WorkerRuntime]:
    """A runtime serving the tiny model, for one test to stop."""
    runtime = WorkerRuntime(dataclasses.replace(settings, models=(STOPPED,)), name=f"stop@{new_id('w')}")
    runtime.start()
    yield runtime
    runtime.redis.delete(job_queue(STOPPED, "bulk"))
    runtime.stop()


def _state(runtime: WorkerRuntime, job_id: str) -> tuple[str, int, list[str]]:
    job, events = read_job(runtime, job_id)
    return job.status, job.attempts, events


def _sent(runtime: WorkerRuntime, job_id: str) -> bool:
    return any(job_id.encode() in message for message in runtime.redis.lrange(job_queue(STOPPED, "bulk"), 0, -1))


def test_a_stop_that_lands_as_a_claim_commits_hands_the_job_back(serving: WorkerRuntime, monkeypatch: Any) -> None:
    """The stop's signal comes between the claim's commit and the generation (once in CI: the drain found nothing
    running, and a job claimed under a grace of 0 ran on to its end)."""
    job_id = queued_job(serving, STOPPED, max_tokens=4000)
    retrying = serving.db.retrying

    def claim_then_stop(*args: Any, **kwargs: Any) -> Any:
        claimed = retrying(*args, **kwargs)
        serving.begin_drain(0.0)  # what Celery's SIGTERM handler calls, with the worker's grace of 0
        return claimed

    monkeypatch.setattr(serving.db, "retrying", claim_then_stop)
    assert execute_job(serving, job_id) is None
    assert _state(serving, job_id) == ("queued", 1, ["job.queued", "job.running", "job.queued"])
    assert _sent(serving, job_id)  # sent again, for the next worker of its model


def test_a_job_whose_task_comes_after_the_stop_began_stays_queued(serving: WorkerRuntime) -> None:
    job_id = queued_job(serving, STOPPED)
    serving.begin_drain(60.0)
    with pytest.raises(Stopping):  # the task rejects its message back to the queue
        execute_job(serving, job_id)
    assert _state(serving, job_id) == ("queued", 0, ["job.queued"])
    assert not serving.running_count()


def test_a_redelivered_message_for_a_job_running_here_is_skipped(serving: WorkerRuntime) -> None:
    job_id = queued_job(serving, STOPPED, max_tokens=2000)
    first: list[str | None] = []
    running = threading.Thread(target=lambda: first.append(execute_job(serving, job_id)))
    running.start()
    deadline = time.monotonic() + 60
    while _state(serving, job_id)[0] != "running":
        assert time.monotonic() < deadline, "never claimed"
        time.sleep(0.01)
    assert execute_job(serving, job_id) is None
    running.join(timeout=120)
    assert first == ["succeeded"]
    assert _state(serving, job_id) == ("succeeded", 1, ["job.queued", "job.running", "job.succeeded"])
