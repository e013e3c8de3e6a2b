"""A worker runtime that lacks a model pulls it from the bucket at start, and says so while it does (/readyz)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from service.adapters import presence
from tests.conftest import TINY
from workers.modelstore.registry import LocalModel, local_model
from workers.modelstore.remote import RemoteModels, remote_models
from workers.runtime import WorkerRuntime


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
