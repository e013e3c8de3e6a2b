"""deploy/kubernetes (no cluster here): the KEDA example scales the worker Deployment on that Deployment's own
model queues and metrics, and every setting it sets is a real one."""
from __future__ import annotations

import dataclasses
from typing import Any

import yaml

from service.adapters.broker import job_queue
from service.core.config import ENV_PREFIX, Settings
from service.core.models import Priority
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy" / "kubernetes"
AWS_VARIABLES = {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"}


def _documents() -> dict[tuple[str, str], dict[str, Any]]:
    documents = {}
    for path in sorted(DEPLOY.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            documents[(document["kind"], document["metadata"]["name"])] = document
    return documents


DOCS = _documents()
WORKER = DOCS[("Deployment", "vlq-worker-qwen3-vl-2b")]
SCALED = DOCS[("ScaledObject", "vlq-worker-qwen3-vl-2b")]


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _config() -> dict[str, str]:
    return {**DOCS[("ConfigMap", "vlq")]["data"], **DOCS[("Secret", "vlq")]["stringData"]}


def test_every_variable_is_a_setting_or_a_standard_aws_one():
    fields = {field.name for field in dataclasses.fields(Settings)}
    names = set(_config()) | {item["name"] for item in _container(WORKER).get("env", [])}
    assert {name for name in names if not name.startswith(ENV_PREFIX)} <= AWS_VARIABLES
    assert all(name[len(ENV_PREFIX):].lower() in fields for name in names if name.startswith(ENV_PREFIX))
    assert _config()["VLQ_BLOB_URL"].startswith("s3://")


def test_the_scaled_object_watches_the_workers_own_queues_and_jobs():
    assert SCALED["spec"]["scaleTargetRef"]["name"] == WORKER["metadata"]["name"]
    [model] = [item["value"] for item in _container(WORKER)["env"] if item["name"] == "VLQ_MODELS"]
    redis_triggers = [t["metadata"] for t in SCALED["spec"]["triggers"] if t["type"] == "redis"]
    assert sorted(t["listName"] for t in redis_triggers) == sorted(job_queue(model, p.value) for p in Priority)
    per_pod = str(Settings().worker_concurrency)
    assert all(t["listLength"] == per_pod for t in redis_triggers)
    assert all(t["address"] in _config()["VLQ_REDIS_URL"] for t in redis_triggers)
    [prometheus] = [t["metadata"] for t in SCALED["spec"]["triggers"] if t["type"] == "prometheus"]
    assert f'vlq_queue_depth{{model="{model}"}}' in prometheus["query"]
    assert f'vlq_jobs{{model="{model}",state="running"}}' in prometheus["query"]


def test_workers_share_no_volume_and_outlast_their_shutdown_grace():
    assert _container(WORKER)["command"] == ["vlq", "worker"]
    assert all("emptyDir" in volume for volume in WORKER["spec"]["template"]["spec"]["volumes"])
    for name in ("vlq-api", "vlq-beat"):
        assert "volumes" not in DOCS[("Deployment", name)]["spec"]["template"]["spec"]
    grace = WORKER["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(_config()["VLQ_SHUTDOWN_GRACE_S"])
