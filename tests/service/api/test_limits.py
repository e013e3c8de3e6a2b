"""Per-key rate limits and job quotas: a 429 with Retry-After and the usual error body, then recovery."""
import base64
import dataclasses
import io
import json
import time
import uuid

import pytest
from sqlalchemy import func, select

from service.adapters.db import Database
from service.app import create_app
from service.core.models import Batch, Job
from tests.conftest import keyed, make_image, make_key

IDLE_MODEL = "tiny-priority"  # no session worker serves it, so submitted jobs stay queued
SLOW_RPS = 0.25  # one request every 4 s: two requests in a row are always within one interval


def _job_body(**fields):
    return {"prompt": "Total?", "model": IDLE_MODEL, "image": base64.b64encode(make_image()).decode(), **fields}


def _retry_after(response):
    value = response.headers["Retry-After"]
    assert value.isdigit() and int(value) >= 1
    return int(value)


@pytest.fixture
def tenant():
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def limited_app(settings):
    """The API with low configured defaults, for keys created without limits of their own."""
    return create_app(dataclasses.replace(settings, rate_limit_rps=SLOW_RPS, max_queued_jobs=2))


def test_a_key_over_its_rate_gets_a_429_with_retry_after_and_recovers(app, settings, tenant):
    key = keyed(app.test_client(), make_key(settings, name="chatty", tenant=tenant, rate_limit_rps=SLOW_RPS))
    neighbour = keyed(app.test_client(), make_key(settings, name="calm", tenant=tenant, rate_limit_rps=SLOW_RPS))
    assert key.get("/v1/jobs").status_code == 200
    refused = key.get("/v1/jobs")
    assert refused.status_code == 429
    error = refused.get_json()["error"]
    assert error["code"] == "rate_limited" and error["details"]["limit_rps"] == SLOW_RPS
    wait = _retry_after(refused)
    assert wait <= 1 / SLOW_RPS
    assert neighbour.get("/v1/jobs").status_code == 200  # limits are per key
    time.sleep(wait)
    assert key.get("/v1/jobs").status_code == 200


def test_keys_without_their_own_limits_get_the_configured_ones(limited_app, settings, tenant):
    key = keyed(limited_app.test_client(), make_key(settings, name="defaults", tenant=tenant))
    assert key.get("/v1/jobs").status_code == 200
    assert key.get("/v1/jobs").get_json()["error"]["code"] == "rate_limited"
    unlimited = keyed(limited_app.test_client(), make_key(settings, name="free", tenant=tenant, rate_limit_rps=0))
    assert all(unlimited.get("/v1/jobs").status_code == 200 for _ in range(5))  # 0 overrides: unlimited


def test_rate_limiting_fails_open_when_redis_is_down(settings, tenant):
    dead = create_app(dataclasses.replace(settings, redis_url="redis://127.0.0.1:1/0"))
    key = keyed(dead.test_client(), make_key(settings, name="chatty", tenant=tenant, rate_limit_rps=SLOW_RPS))
    assert [key.get("/v1/jobs").status_code for _ in range(3)] == [200, 200, 200]


def test_a_tenant_at_its_job_quota_gets_a_429_until_a_job_ends(app, settings, tenant):
    client = keyed(app.test_client(), make_key(settings, name="q", tenant=tenant, rate_limit_rps=0, max_queued_jobs=2))
    first = client.post("/v1/jobs", json=_job_body(), headers={"Idempotency-Key": "q-1"}).get_json()["id"]
    client.post("/v1/jobs", json=_job_body())
    refused = client.post("/v1/jobs", json=_job_body())
    assert refused.status_code == 429
    error = refused.get_json()["error"]
    assert error["code"] == "quota_exceeded"
    assert error["details"] == {"limit": 2, "pending": 2, "requested": 1}
    _retry_after(refused)
    with Database(settings.database_url).session() as session:
        assert session.scalar(select(func.count()).select_from(Job).where(Job.tenant == tenant)) == 2

    replay = client.post("/v1/jobs", json=_job_body(), headers={"Idempotency-Key": "q-1"})
    assert replay.status_code == 202 and replay.get_json()["id"] == first  # a replay adds nothing, so it passes

    client.post(f"/v1/jobs/{first}/cancel")
    assert client.post("/v1/jobs", json=_job_body()).status_code == 202


def test_a_batch_over_the_quota_is_refused_whole(limited_app, settings, tenant):
    client = keyed(limited_app.test_client(), make_key(settings, name="b", tenant=tenant, rate_limit_rps=0))
    assert client.post("/v1/jobs", json=_job_body()).status_code == 202  # one of the configured two is taken
    images = [(io.BytesIO(make_image(color=(i, 0, 0))), f"{i}.png") for i in range(2)]
    native = client.post("/v1/batches", data={"prompt": "Total?", "model": IDLE_MODEL, "images": images})
    assert native.status_code == 429 and native.get_json()["error"]["details"]["requested"] == 2
    _retry_after(native)

    line = {"custom_id": "x", "method": "POST", "url": "/v1/chat/completions", "body": {}}
    lines = "\n".join(json.dumps({**line, "custom_id": str(i)}) for i in range(3)).encode() + b"\n\n"
    file_id = client.post("/v1/files", data={"purpose": "batch", "file": (io.BytesIO(lines), "in.jsonl")}
                          ).get_json()["id"]
    openai_style = client.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"})
    assert openai_style.status_code == 429 and openai_style.get_json()["error"]["details"]["requested"] == 3
    with Database(settings.database_url).session() as session:
        assert session.scalar(select(func.count()).select_from(Batch).where(Batch.tenant == tenant)) == 0
        assert session.scalar(select(func.count()).select_from(Job).where(Job.tenant == tenant)) == 1

    image = (io.BytesIO(make_image()), "0.png")
    one = client.post("/v1/batches", data={"prompt": "Total?", "model": IDLE_MODEL, "images": [image]})
    assert one.status_code == 200  # what fits is accepted
    client.post(f"/v1/batches/{one.get_json()['id']}/cancel")
