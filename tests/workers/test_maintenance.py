"""Orphan recovery (jobs whose worker died are requeued, failed after max_attempts, or cancelled if asked), the batch
pass, the webhook pass and the queue timeout."""
import dataclasses
import json
import time
from datetime import timedelta

import pytest
import redis
from sqlalchemy import update

from service.adapters import presence
from service.adapters.broker import Broker
from service.adapters.db import Database
from service.core import lifecycle
from service.core.models import Job, JobStatus, WebhookDelivery, new_id, utcnow
from tests.conftest import REDIS_URL, TENANT, finished_job
from workers.maintenance import fail_unserved_jobs, recover_orphaned_jobs, requeue_due_deliveries

MODEL = "tiny-priority"  # no session worker consumes it, so enqueued messages can be counted


@pytest.fixture
def unswept():
    """Presence for the worker names these tests use, so that the sweepers of the session's real workers leave
    their jobs alone; the tests tell `recover_orphaned_jobs` themselves which workers are alive."""
    client = redis.Redis.from_url(REDIS_URL)
    names = ("dead-worker", "live-worker", "slow-worker", "new-worker")
    for name in names:
        presence.announce(client, name, {"pid": 0, "models": {}}, ttl_s=120)
    yield
    for name in names:
        presence.withdraw(client, name)


def _running_job(db, worker, *, attempts=1, started_ago_s=60.0, cancel=False):
    job_id = new_id("job")
    with db.session() as session:
        lifecycle.create_job(session, id=job_id, model=MODEL, prompt="p", priority="bulk", image_sha256="0" * 64,
                             image_format="PNG", image_width=1, image_height=1, max_tokens=4, temperature=0.0,
                             ignore_eos=False, request_sha256="x", tenant=TENANT)
    for _ in range(attempts):
        with db.session() as session:
            session.execute(update(Job).where(Job.id == job_id).values(status="queued"))
            assert lifecycle.claim(session, job_id, worker)
    with db.session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(
            started_at=utcnow() - timedelta(seconds=started_ago_s), cancel_requested_at=utcnow() if cancel else None))
    return job_id


def _job(db, job_id):
    with db.session() as session:
        return session.get(Job, job_id)


def test_orphans_are_requeued_failed_or_cancelled_and_the_living_are_left_alone(db, settings, unswept):
    broker = Broker(settings, db)
    queue_length = lambda: redis.Redis.from_url(REDIS_URL).llen(f"vlq.{MODEL}.bulk")  # noqa: E731
    before = queue_length()
    orphan = _running_job(db, "dead-worker")
    exhausted = _running_job(db, "dead-worker", attempts=settings.max_attempts)
    cancelling = _running_job(db, "dead-worker", cancel=True)
    alive = _running_job(db, "live-worker")
    just_started = _running_job(db, "dead-worker", started_ago_s=0.0)

    counts = recover_orphaned_jobs(db, broker, settings, live_workers={"live-worker"})

    assert counts == {"requeued": 1, "failed": 1, "cancelled": 1}
    assert _job(db, orphan).status == "queued" and queue_length() == before + 1
    assert (_job(db, exhausted).status, _job(db, exhausted).error_code) == ("failed", "worker_lost")
    assert _job(db, cancelling).status == "cancelled"
    assert _job(db, alive).status == "running"
    assert _job(db, just_started).status == "running"  # still inside the heartbeat grace period
    with db.session() as session:
        assert [e.type for e in lifecycle.events(session, orphan)] == ["job.queued", "job.running", "job.queued"]
    broker.close()


def test_a_stale_attempt_cannot_finish_a_job_that_was_handed_on(db, settings, unswept):
    job_id = _running_job(db, "slow-worker")
    with db.session() as session:
        stale = session.get(Job, job_id)
    recover_orphaned_jobs(db, Broker(settings, db), settings, live_workers=set())
    with db.session() as session:
        assert lifecycle.claim(session, job_id, "new-worker").attempts == 2
    with db.session() as session:
        assert not lifecycle.finish(session, stale, JobStatus.SUCCEEDED, result_text="late")
    assert _job(db, job_id).status == "running" and _job(db, job_id).worker == "new-worker"


def test_an_overdue_batch_expires_with_what_finished_so_far(db, settings, tmp_path):
    from service.adapters.blobs import LocalBlobStore
    from service.core import batch_lifecycle, batches
    from service.core.models import Batch, BatchStatus
    from workers.maintenance import sweep_batches

    blobs = LocalBlobStore(tmp_path / "blobs")
    done, waiting = new_id("job"), new_id("job")
    with db.session() as session:
        batch = batches.create_batch(session, tenant=TENANT, endpoint="/v1/jobs", input_file_id=None,
                                     completion_window="1m", priority="bulk", metadata=None, idempotency_key=None)
        batch_id = batch.id
        session.flush()
        common = {"tenant": batch.tenant, "batch_id": batch_id, "model": MODEL, "prompt": "p", "priority": "bulk",
                  "max_tokens": 4, "temperature": 0.0, "ignore_eos": False, "request_sha256": "x"}
        lifecycle.create_jobs(session, [{"id": done, "custom_id": "a", **common},
                                        {"id": waiting, "custom_id": "b", **common}])
        batch_lifecycle.transition(session, batch_id, BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS)
    with db.session() as session:
        assert lifecycle.claim(session, done, "w1")
    with db.session() as session:
        job = session.get(Job, done)
        assert lifecycle.finish(session, job, JobStatus.SUCCEEDED, result_text="ok", prompt_tokens=1,
                                completion_tokens=1)
        session.execute(update(Batch).where(Batch.id == batch_id).values(expires_at=utcnow() - timedelta(seconds=1)))

    assert sweep_batches(db, blobs) >= 1
    with db.session() as session:
        batch = session.get(Batch, batch_id)
        assert batch.status == "expired" and batch.expired_at is not None
        assert session.get(Job, waiting).status == "cancelled"
        output = session.get(batches.File, batch.output_file_id)
    lines = blobs.get(output.sha256).decode().splitlines()
    assert [json.loads(line)["custom_id"] for line in lines] == ["a"]
    assert output.tenant == TENANT  # a file the worker side writes belongs to the batch's tenant


def test_a_delivery_already_sent_is_sent_again_only_once_the_webhook_queue_is_idle(fresh_database_url, settings):
    # A database of its own: the session's beat must not take part.
    fresh = Database(fresh_database_url)
    queue = f"vlq.webhooks.{new_id('test')}"
    broker = Broker(dataclasses.replace(settings, webhook_queue=queue), fresh)
    client = redis.Redis.from_url(REDIS_URL)
    job_id = finished_job(fresh, webhook_url="http://127.0.0.1:9/hook", webhook_secret="whsec_c2VjcmV0")
    long_ago = utcnow() - timedelta(hours=1)
    with fresh.session() as session:  # due for an hour, its message sent then and never taken
        session.execute(update(WebhookDelivery).where(WebhookDelivery.subject_id == job_id)
                        .values(next_attempt_at=long_ago, enqueued_at=long_ago))
    client.rpush(queue, "a backlog")  # its message may well be in there still
    assert requeue_due_deliveries(fresh, broker, settings) == 0
    client.delete(queue)  # nothing waiting: its message was lost
    assert requeue_due_deliveries(fresh, broker, settings) == 1
    assert client.llen(queue) == 1
    assert requeue_due_deliveries(fresh, broker, settings) == 0  # recorded: not sent twice
    client.delete(queue)
    broker.close()
    fresh.dispose()


def test_the_queue_timeout_pass_counts_only_time_with_no_live_worker_for_the_model(fresh_database_url, settings):
    # A database of its own: the pass fails every unserved model's old jobs, the other tests' included.
    fresh = Database(fresh_database_url)
    timed = dataclasses.replace(settings, queue_timeout_s={"interactive": 1, "bulk": 1})
    client = redis.Redis.from_url(REDIS_URL)
    job_id = new_id("job")
    with fresh.session() as session:
        lifecycle.create_job(session, id=job_id, model=MODEL, prompt="p", priority="interactive",
                             image_sha256="0" * 64, image_format="PNG", image_width=1, image_height=1, max_tokens=4,
                             temperature=0.0, ignore_eos=False, request_sha256="x", tenant=TENANT)
        session.flush()
        session.execute(update(Job).where(Job.id == job_id).values(created_at=utcnow() - timedelta(hours=1)))
    busy = {"busy-worker": {"models": {MODEL: {"status": "live"}}}}
    assert fail_unserved_jobs(fresh, client, timed, busy) == 0
    time.sleep(1.2)
    assert fail_unserved_jobs(fresh, client, timed, busy) == 0  # a live worker, however long its queue: it waits
    assert fail_unserved_jobs(fresh, client, timed, {}) == 0  # the first look without one starts the clock
    time.sleep(1.2)
    assert fail_unserved_jobs(fresh, client, timed, {}) == 1
    with fresh.session() as session:
        job = session.get(Job, job_id)
        assert (job.status, job.error_code) == ("failed", "model_unavailable")
    fresh.dispose()


def test_time_nobody_watched_never_counts_against_a_job():
    client = redis.Redis.from_url(REDIS_URL)
    model = new_id("model")
    assert presence.unserved_since(client, [model], now=1000.0, max_gap_s=30) == {model: 1000.0}
    assert presence.unserved_since(client, [model], now=1020.0, max_gap_s=30) == {model: 1000.0}
    # Nobody looked for a minute (no worker ran the pass, e.g. a cluster scaled to zero): the clock starts again.
    assert presence.unserved_since(client, [model], now=1080.0, max_gap_s=30) == {model: 1080.0}
    # Served at one look: forgotten, so it starts again at the next look without a worker.
    assert presence.unserved_since(client, [], now=1090.0, max_gap_s=30) == {}
    assert presence.unserved_since(client, [model], now=1100.0, max_gap_s=30) == {model: 1100.0}
