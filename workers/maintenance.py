"""Housekeeping that keeps the promises: every accepted job ends, every webhook delivery is sent, and data goes
when its retention period is over.

`vlq beat` sends these tasks on `sweep_interval_s` (`retention_interval_s` for retention); any worker runs them.
Orphan recovery also fails the queued jobs whose model no live worker has served for `queue_timeout_s`
(service.core.availability).
Each is safe to run twice at once (two beats, or a redelivered message): every change is a conditional UPDATE,
and a message sent twice is harmless; a short Redis lock only saves the repeated work. The tasks are thin;
tests call the functions below them directly.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from celery import shared_task
from celery.beat import Scheduler
from sqlalchemy import select, update

from service.adapters import presence
from service.adapters.blobs import BlobStore
from service.adapters.broker import (
    BROKER_ERRORS,
    RECOVER_JOBS_TASK,
    REDISPATCH_TASK,
    RESEND_DELIVERIES_TASK,
    RETENTION_TASK,
    SWEEP_BATCHES_TASK,
    Broker,
)
from service.adapters.db import DATABASE_UNAVAILABLE, Database
from service.core import availability, batches, lifecycle, retention, webhooks
from service.core.config import Settings
from service.core.errors import ErrorCode
from service.core.models import Batch, BatchStatus, Job, JobStatus, WebhookDelivery, utcnow
from workers.runtime import WorkerRuntime, current_runtime

log = logging.getLogger(__name__)

_PASS_LOCK_MS = 30_000
_SEND_CHUNK = 200


class MaintenanceScheduler(Scheduler):
    """Celery beat's in-memory scheduler, sending a periodic task only when none of its messages is waiting.

    While the workers are busy (or loading, or several beats run), the service queue, which workers read before
    any job queue, never fills up with passes that would only repeat each other. The mark expires with the task
    (three intervals), so a message the broker lost does not hold the next one back for long.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._redis = redis.Redis.from_url(self.app.vlq_settings.redis_url, socket_timeout=5)

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any) -> Any:
        expires_ms = int(1000 * (entry.options.get("expires") or 60))
        try:
            if not self._redis.set(_sent_key(entry.task), "1", nx=True, px=expires_ms):
                return None  # the last one is still waiting for a worker
        except redis.RedisError:
            pass  # the send fails or succeeds by itself
        return super().apply_async(entry, producer, advance, **kwargs)


def _sent_key(task: str) -> str:
    return f"vlq:maintenance:sent:{task}"


@shared_task(name=REDISPATCH_TASK)
def redispatch_task() -> None:
    _periodic(REDISPATCH_TASK, lambda runtime: redispatch(runtime.db, runtime.broker, runtime.settings))


@shared_task(name=RECOVER_JOBS_TASK)
def recover_jobs_task() -> None:
    def recover(runtime: WorkerRuntime) -> None:
        # Right after a broker restart the presence keys are gone until each worker's next heartbeat: judging
        # now would take living workers' jobs away. Give them one heartbeat TTL to announce themselves again.
        if runtime.broker.broker_uptime_s() < runtime.settings.heartbeat_ttl_s:
            return
        workers = presence.live_workers(runtime.redis)
        recover_orphaned_jobs(runtime.db, runtime.broker, runtime.settings, set(workers))
        fail_unserved_jobs(runtime.db, runtime.redis, runtime.settings, workers)

    _periodic(RECOVER_JOBS_TASK, recover)


@shared_task(name=SWEEP_BATCHES_TASK)
def sweep_batches_task() -> None:
    _periodic(SWEEP_BATCHES_TASK, lambda runtime: sweep_batches(runtime.db, runtime.blobs))


@shared_task(name=RESEND_DELIVERIES_TASK)
def resend_deliveries_task() -> None:
    _periodic(RESEND_DELIVERIES_TASK,
              lambda runtime: requeue_due_deliveries(runtime.db, runtime.broker, runtime.settings))


@shared_task(name=RETENTION_TASK)
def retention_task() -> None:
    _periodic(RETENTION_TASK, lambda runtime: retention.purge_expired(runtime.db, runtime.blobs, runtime.settings))


def _periodic(task: str, work: Callable[[WorkerRuntime], object]) -> None:
    """Run one pass, unless another is running (it would only repeat its work). An outage only skips it: the
    next run does the same work."""
    runtime = current_runtime()
    lock = f"vlq:maintenance:running:{task}"
    try:
        runtime.redis.delete(_sent_key(task))  # beat may send the next one
        # The lock outlives a normal pass, and expires soon if its worker dies holding it.
        if not runtime.redis.set(lock, runtime.name, nx=True, px=_PASS_LOCK_MS):
            return
        try:
            work(runtime)
        finally:
            runtime.redis.delete(lock)
    except (*DATABASE_UNAVAILABLE, *BROKER_ERRORS) as exc:
        log.warning("%s skipped, a backend is unavailable: %s", task, str(exc).splitlines()[0])


def redispatch(db: Database, broker: Broker, settings: Settings, limit: int = 5000) -> dict[str, int]:
    """Send what the broker does not hold: queued jobs and validating batches with no recorded send.

    A send goes unrecorded when the broker refused it (down), when its sender died between commit and send, or
    when the broker restarted (or was flushed) and lost it: then every recorded send is forgotten first.
    Jobs younger than `dispatch_grace_s` are left to their own sender. Returns what was forgotten and sent.
    """
    counts = {"forgotten": 0, "lost": 0, "jobs": 0, "batches": 0}
    run_id = broker.broker_changed()
    if run_id is not None:
        counts["forgotten"] = _forget_sends(db)
        broker.remember_broker(run_id)  # only once the database agrees, so a failure here is retried
        log.warning("broker run %s is new (a restart or a flush): its messages may be gone; re-sending %d",
                    run_id, counts["forgotten"])
    counts["lost"] = _forget_lost_messages(db, broker, settings)
    cutoff = utcnow() - timedelta(seconds=settings.dispatch_grace_s)
    with db.session() as session:
        jobs = session.execute(select(Job.id, Job.model, Job.priority, Job.attempts).where(
            Job.status == JobStatus.QUEUED.value, Job.enqueued_at.is_(None), Job.created_at < cutoff,
        ).order_by(Job.id).limit(limit)).all()
        batch_ids = session.scalars(select(Batch.id).where(
            Batch.status == BatchStatus.VALIDATING.value, Batch.enqueued_at.is_(None), Batch.created_at < cutoff,
        ).order_by(Batch.id)).all()
    # In chunks, each recorded before the next is sent: a long pass (a restart's whole backlog) leaves little for a
    # pass that overlaps it to send twice.
    for start in range(0, len(jobs), _SEND_CHUNK):
        chunk = jobs[start:start + _SEND_CHUNK]
        if not broker.enqueue(chunk):
            break
        counts["jobs"] += len(chunk)
    counts["batches"] = sum(broker.enqueue_ingest(batch_id) for batch_id in batch_ids)
    if counts["jobs"] or counts["batches"]:
        log.info("dispatcher sent %d job(s) and %d batch ingest(s) the broker did not have",
                 counts["jobs"], counts["batches"])
    return counts


_LOST_AFTER_S = 60


def _forget_lost_messages(db: Database, broker: Broker, settings: Settings) -> int:
    """Mark as unsent the queued jobs whose message is nowhere in the broker, so this pass sends them again.

    A message can vanish without the broker restarting: one taken by a worker that is killed around a Redis
    restart has been seen to be in neither its queue nor kombu's unacknowledged set. A job counts as lost once its
    send is over a minute old, its queue is empty (so it is not waiting behind others) and no worker holds its
    message (taken messages stay in the unacknowledged set until the job ends). A wrong guess costs a duplicate
    message, which the claim refuses.
    """
    sent_before = utcnow() - timedelta(seconds=_LOST_AFTER_S)
    with db.session() as session:
        stale = session.execute(select(Job.id, Job.model, Job.priority).where(
            Job.status == JobStatus.QUEUED.value, Job.enqueued_at < sent_before).limit(1000)).all()
    empty = {queue for queue in {(job.model, job.priority) for job in stale} if broker.queue_depth(*queue) == 0}
    if not empty:  # a backlog: the stale sends are waiting behind others, which is what queues are for
        return 0
    held = broker.held_by_workers()
    lost = [job.id for job in stale if (job.model, job.priority) in empty and job.id.encode() not in held]
    if lost:
        with db.session() as session:
            session.execute(update(Job).where(Job.id.in_(lost), Job.status == JobStatus.QUEUED.value,
                                              Job.enqueued_at < sent_before).values(enqueued_at=None))
        log.warning("%d queued job(s) whose message the broker no longer has (first: %s): re-sending",
                    len(lost), lost[0])
    return len(lost)


def _forget_sends(db: Database) -> int:
    """The broker lost its messages: mark every queued job, validating batch and pending delivery as unsent."""
    with db.session() as session:
        forgotten = session.execute(update(Job).where(
            Job.status == JobStatus.QUEUED.value, Job.enqueued_at.is_not(None)).values(enqueued_at=None)).rowcount
        forgotten += session.execute(update(Batch).where(
            Batch.status == BatchStatus.VALIDATING.value, Batch.enqueued_at.is_not(None))
            .values(enqueued_at=None)).rowcount
        session.execute(update(WebhookDelivery).where(
            WebhookDelivery.status == "pending", WebhookDelivery.enqueued_at.is_not(None)).values(enqueued_at=None))
    return forgotten


def recover_orphaned_jobs(
    db: Database, broker: Broker, settings: Settings, live_workers: set[str]
) -> dict[str, int]:
    """Requeue (or fail, past max_attempts) running jobs whose worker is no longer alive.

    A job counts as orphaned once its worker's presence key has expired; the heartbeat TTL is the grace
    period, so a slow but living worker is not robbed. Returns how many jobs took each way out.
    """
    cutoff = utcnow() - timedelta(seconds=settings.heartbeat_ttl_s)
    counts = {"requeued": 0, "failed": 0, "cancelled": 0}
    requeued: list[Job] = []
    with db.session() as session:
        running = session.scalars(
            select(Job).where(Job.status == JobStatus.RUNNING.value, Job.started_at < cutoff)
        ).all()
        for job in running:
            if job.worker in live_workers:
                continue
            if job.cancel_requested_at is not None:
                outcome = "cancelled" if lifecycle.finish(
                    session, job, JobStatus.CANCELLED, error_code=ErrorCode.CANCELLED,
                    error_message="Cancelled; its worker was lost before it stopped.") else None
            elif job.attempts >= settings.max_attempts:
                outcome = "failed" if lifecycle.finish(
                    session, job, JobStatus.FAILED, error_code=ErrorCode.WORKER_LOST,
                    error_message=f"The worker died during each of {job.attempts} attempts.") else None
            elif lifecycle.requeue(session, job):
                outcome = "requeued"
                requeued.append(job)
            else:
                outcome = None
            if outcome:
                counts[outcome] += 1
                log.warning("job %s: worker %s is gone; %s (attempt %s)", job.id, job.worker, outcome, job.attempts)
    # Enqueue only after the requeue committed, so the task never finds the job still running.
    broker.enqueue(requeued)
    return counts


def fail_unserved_jobs(db: Database, client: redis.Redis, settings: Settings,
                       workers: dict[str, dict[str, Any]]) -> int:
    """Fail the queued jobs whose model no live worker has served for their priority's queue_timeout_s.

    Each pass is one look at presence: it starts (or keeps) the clock of every model queued jobs wait on that no
    live worker has live or is loading, and stops the clock of the others (service.adapters.presence.unserved_since).
    A pass missed for longer than a few sweep intervals (no worker ran it) restarts the clocks. Returns how many.
    """
    now = utcnow()
    waiting = {model for model, _ in availability.queued_models(db)}
    gap_s = max(6 * settings.sweep_interval_s, 2 * settings.heartbeat_ttl_s)
    clocks = presence.unserved_since(client, sorted(waiting - availability.served_models(workers)), now.timestamp(),
                                     gap_s)
    since = {model: datetime.fromtimestamp(started, UTC) for model, started in clocks.items()}
    return availability.fail_unserved(db, settings, since, now)


def sweep_batches(db: Database, blobs: BlobStore) -> int:
    """End overdue batches as `expired`, and finalize batches whose items all ended but that were never
    finalized (say a worker died first). Returns how many batches ended."""
    expired = batches.expire_overdue(db, blobs)
    with db.session() as session:
        candidates = session.scalars(select(Batch.id).where(
            Batch.status.in_([BatchStatus.IN_PROGRESS.value, BatchStatus.CANCELLING.value]),
            Batch.finalizing_at.is_(None),
        )).all()
    return expired + sum(batches.maybe_finalize(db, blobs, batch_id) for batch_id in candidates)


def requeue_due_deliveries(db: Database, broker: Broker, settings: Settings, limit: int = 500) -> int:
    """Enqueue deliveries that are due, held by no worker, and have no message on its way: retries past a long
    wait, a dead worker's (its lease ran out), sends the broker refused or lost.

    A delivery is left alone for one sweep interval after it fell due (its own send normally takes it within
    milliseconds). One whose recorded send was never used is only sent again when the webhook queue is empty
    (its message was lost, e.g. a countdown retry held by a worker that died): while the queue has a backlog its
    message is most likely still waiting there, and re-sending would only grow the backlog. Returns how many.
    """
    now = utcnow()
    quiet_since = now - timedelta(seconds=settings.webhook_lease_s)
    unsent = WebhookDelivery.enqueued_at.is_(None)
    if broker.redis.llen(broker.webhook_queue) == 0:
        unsent = unsent | (WebhookDelivery.enqueued_at < quiet_since)
    with db.session() as session:
        ids = list(session.scalars(
            select(WebhookDelivery.id)
            .where(*webhooks.due_filter(now), unsent)
            .where(WebhookDelivery.next_attempt_at <= now - timedelta(seconds=settings.sweep_interval_s))
            .order_by(WebhookDelivery.next_attempt_at).limit(limit)
        ))
    for delivery_id in ids:
        broker.enqueue_delivery(delivery_id)
    if ids:
        log.info("re-sent %d due webhook deliveries", len(ids))
    return len(ids)
