"""Housekeeping that keeps two promises: every accepted job ends, and every webhook delivery is sent.

Recovers jobs whose worker died, and re-sends deliveries that are due but in no worker's hands.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select, update

from service import batches, lifecycle, webhooks
from service.blobs import BlobStore
from service.config import Settings
from service.db import Database
from service.dispatch import Dispatcher
from service.models import Batch, BatchStatus, Job, JobStatus, WebhookDelivery, utcnow

log = logging.getLogger(__name__)


def recover_orphaned_jobs(
    db: Database, dispatcher: Dispatcher, settings: Settings, live_workers: set[str]
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
                    session, job, JobStatus.CANCELLED, error_code="cancelled",
                    error_message="Cancelled; its worker was lost before it stopped.") else None
            elif job.attempts >= settings.max_attempts:
                outcome = "failed" if lifecycle.finish(
                    session, job, JobStatus.FAILED, error_code="worker_lost",
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
    dispatcher.enqueue(requeued)
    return counts


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


def requeue_due_deliveries(db: Database, dispatcher: Dispatcher, settings: Settings, limit: int = 500) -> int:
    """Enqueue deliveries that are due and held by no worker: retries past a long wait, a dead worker's, lost sends.

    A delivery is left alone for one sweep interval after it fell due (its own send normally takes it
    within milliseconds), and one this pass enqueued is not enqueued again until a lease's length later,
    so a backlog in the webhooks queue does not grow with every pass. Returns how many were enqueued.
    """
    now = utcnow()
    quiet_since = now - timedelta(seconds=settings.webhook_lease_s)
    with db.session() as session:
        ids = list(session.scalars(
            select(WebhookDelivery.id)
            .where(*webhooks.due_filter(now))
            .where(WebhookDelivery.next_attempt_at <= now - timedelta(seconds=settings.sweep_interval_s))
            .where((WebhookDelivery.enqueued_at.is_(None)) | (WebhookDelivery.enqueued_at < quiet_since))
            .order_by(WebhookDelivery.next_attempt_at).limit(limit)
        ))
        if ids:
            session.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(ids)).values(enqueued_at=now))
    for delivery_id in ids:
        dispatcher.enqueue_delivery(delivery_id)
    if ids:
        log.info("re-sent %d due webhook deliveries", len(ids))
    return len(ids)
