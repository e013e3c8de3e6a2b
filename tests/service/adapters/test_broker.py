"""The broker: with the broker down a submit is stored and sent later; a broker restart's losses are re-sent.

A private Redis that the test kills and restarts, and a database of this test's own (the pass acts on every row).
"""
import base64
import io
import json
from datetime import timedelta

import pytest
import redis
from sqlalchemy import update

from service.adapters.broker import SERVICE_QUEUE, Broker
from service.app import create_app
from service.core.config import load_settings
from service.core.models import Batch, Job, utcnow
from tests.conftest import TINY, keyed, make_image, make_key
from tests.e2e.faults import PrivateRedis
from workers.maintenance import redispatch

QUEUE = f"vlq.{TINY}.interactive"


@pytest.fixture
def broker(tmp_path):
    server = PrivateRedis(tmp_path)
    yield server
    server.close()


@pytest.fixture
def settings(fresh_database_url, broker, tmp_path):
    (tmp_path / "empty.yaml").write_text("{}")
    return load_settings({"database_url": fresh_database_url, "redis_url": broker.url, "blob_dir": str(tmp_path / "b"),
                          "default_model": TINY, "dispatch_grace_s": 0},
                         environ={"VLQ_CONFIG": str(tmp_path / "empty.yaml")})


def _messages(broker, queue=QUEUE):
    """The task ids (job or batch ids) of the messages waiting in a queue."""
    raw = redis.Redis.from_url(broker.url).lrange(queue, 0, -1)
    return [json.loads(base64.b64decode(json.loads(message)["body"]))[0][0] for message in raw]


def _submit(client):
    response = client.post("/v1/jobs", json={"prompt": "p", "image": base64.b64encode(make_image()).decode()})
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def _enqueued_at(db, model, ident):
    with db.session() as session:
        return session.get(model, ident).enqueued_at


def test_a_submit_while_the_broker_is_down_is_stored_and_sent_once_it_is_back(settings, db, broker):
    client = keyed(create_app(settings).test_client(), make_key(settings, rate_limit_rps=0, max_queued_jobs=0))
    broker.kill()
    job = _submit(client)
    assert job["status"] == "queued"
    assert client.get(f"/v1/jobs/{job['id']}").get_json()["status"] == "queued"
    assert _enqueued_at(db, Job, job["id"]) is None  # accepted, not sent

    broker.start()
    sender = Broker(settings, db)
    assert redispatch(db, sender, settings)["jobs"] == 1
    assert _messages(broker) == [job["id"]] and _enqueued_at(db, Job, job["id"]) is not None
    assert redispatch(db, sender, settings)["jobs"] == 0  # sent once, recorded: not sent again
    assert _messages(broker) == [job["id"]]
    sender.close()


def test_a_batch_created_while_the_broker_is_down_is_ingested_once_it_is_back(settings, db, broker):
    client = keyed(create_app(settings).test_client(), make_key(settings, rate_limit_rps=0, max_queued_jobs=0))
    upload = {"purpose": "batch", "file": (io.BytesIO(b"{}"), "in.jsonl")}
    file_id = client.post("/v1/files", data=upload).get_json()["id"]
    broker.kill()
    batch = client.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"}).get_json()
    assert batch["status"] == "validating" and _enqueued_at(db, Batch, batch["id"]) is None

    broker.start()
    sender = Broker(settings, db)
    assert redispatch(db, sender, settings)["batches"] == 1
    assert _messages(broker, SERVICE_QUEUE) == [batch["id"]]
    sender.close()


def test_a_broker_restart_has_every_queued_job_sent_again_and_nothing_else(settings, db, broker):
    client = keyed(create_app(settings).test_client(), make_key(settings, rate_limit_rps=0, max_queued_jobs=0))
    sender = Broker(settings, db)
    redispatch(db, sender, settings)  # the sender meets this broker run
    waiting, running, cancelled = _submit(client), _submit(client), _submit(client)
    client.post(f"/v1/jobs/{cancelled['id']}/cancel")
    with db.session() as session:
        session.execute(update(Job).where(Job.id == running["id"]).values(status="running"))
    assert sorted(_messages(broker)) == sorted(job["id"] for job in (waiting, running, cancelled))
    assert redispatch(db, sender, settings)["jobs"] == 0

    broker.restart(down_s=0)  # no persistence: every message is gone
    assert _messages(broker) == []
    counts = redispatch(db, sender, settings)
    assert counts["forgotten"] == 1 and counts["jobs"] == 1
    assert _messages(broker) == [waiting["id"]]  # the running and the cancelled job are not sent again
    assert redispatch(db, sender, settings) == {"forgotten": 0, "lost": 0, "jobs": 0, "batches": 0}
    sender.close()


def test_a_queued_job_whose_message_vanished_is_sent_again_but_not_one_a_worker_holds(settings, db, broker):
    client = keyed(create_app(settings).test_client(), make_key(settings, rate_limit_rps=0, max_queued_jobs=0))
    sender = Broker(settings, db)
    redispatch(db, sender, settings)  # the sender meets this broker run
    held, vanished = _submit(client), _submit(client)
    queue = redis.Redis.from_url(broker.url)
    raw = dict(zip(_messages(broker), queue.lrange(QUEUE, 0, -1), strict=True))
    queue.delete(QUEUE)
    # A worker took `held` (kombu keeps it in `unacked` until the task is acknowledged); `vanished` is nowhere.
    queue.hset("unacked", "delivery-tag-1", json.dumps([json.loads(raw[held["id"]]), "", QUEUE]))
    assert redispatch(db, sender, settings)["lost"] == 0  # sent a moment ago: not lost yet

    def sent_long_ago():
        with db.session() as session:
            session.execute(update(Job).where(Job.id.in_([held["id"], vanished["id"]]))
                            .values(enqueued_at=utcnow() - timedelta(minutes=2)))

    sent_long_ago()
    counts = redispatch(db, sender, settings)
    assert counts["lost"] == 1 and counts["jobs"] == 1
    assert _messages(broker) == [vanished["id"]]
    sent_long_ago()
    assert redispatch(db, sender, settings)["lost"] == 0  # waiting in its queue now: not lost
    sender.close()
