"""The batch state machine: every batch is created and changes state here, each transition stamped with its time.

    validating ──> in_progress ──> finalizing ──> completed
        │  │  │        ├────────────────────────> expired
        │  │  │        └──> cancelling ─────────> cancelled
        │  │  └───────────────────^
        │  └──> failed
        └─────> expired   (its window passed before its input file was read)

A batch starts `validating`. An OpenAI batch stays there while a worker streams its input file into job rows; a
native batch (images uploaded with one prompt) is ingested in the request that creates it. Each transition is one
conditional UPDATE, so concurrent actors (the API, workers, the periodic passes) cannot both win; an ending records
the batch's webhook event in the same transaction (the outbox).
"""
from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service.core import webhooks
from service.core.models import Batch, BatchStatus, Job, utcnow
from service.core.shapes import BatchOut, RequestCounts

log = logging.getLogger(__name__)

INITIAL = BatchStatus.VALIDATING
TRANSITIONS: dict[BatchStatus, frozenset[BatchStatus]] = {
    BatchStatus.VALIDATING: frozenset({BatchStatus.IN_PROGRESS, BatchStatus.FAILED, BatchStatus.CANCELLING,
                                       BatchStatus.EXPIRED}),
    BatchStatus.IN_PROGRESS: frozenset({BatchStatus.FINALIZING, BatchStatus.CANCELLING, BatchStatus.EXPIRED}),
    BatchStatus.FINALIZING: frozenset({BatchStatus.COMPLETED}),
    BatchStatus.CANCELLING: frozenset({BatchStatus.CANCELLED}),
}
ENDINGS = frozenset({BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.CANCELLED, BatchStatus.EXPIRED})
# The column each state stamps when a batch enters it (OpenAI's Batch object: in_progress_at, completed_at, ...).
STAMPS: dict[BatchStatus, str] = {
    BatchStatus.VALIDATING: "created_at", BatchStatus.IN_PROGRESS: "in_progress_at",
    BatchStatus.FINALIZING: "finalizing_at", BatchStatus.COMPLETED: "completed_at", BatchStatus.FAILED: "failed_at",
    BatchStatus.EXPIRED: "expired_at", BatchStatus.CANCELLING: "cancelling_at", BatchStatus.CANCELLED: "cancelled_at",
}


def create(session: Session, **fields: Any) -> Batch:
    """Add a new batch, `validating`, to the session."""
    batch = Batch(status=INITIAL.value, **{STAMPS[INITIAL]: utcnow()}, **fields)
    session.add(batch)
    return batch


def transition(session: Session, batch_id: str, source: BatchStatus, target: BatchStatus, **values: Any) -> bool:
    """Move the batch from `source` to `target` (with `values`), stamped with the target's time; False if it was
    not in `source`. An ending records the batch's webhook event in the same transaction."""
    if target not in TRANSITIONS.get(source, ()):
        raise ValueError(f"no batch transition {source.value} -> {target.value}")
    result = session.execute(update(Batch).where(Batch.id == batch_id, Batch.status == source.value).values(
        status=target.value, **{STAMPS[target]: utcnow()}, **values))
    if result.rowcount != 1:
        return False
    log.info("batch %s: %s -> %s", batch_id, source.value, target.value)
    if target in ENDINGS:  # the outbox: the batch summary, in the same transaction as its ending
        batch = session.get(Batch, batch_id, populate_existing=True)
        assert batch is not None
        webhooks.record_event(session, f"batch.{target.value}", batch_id, render(session, batch),
                              tenant=batch.tenant, url=batch.webhook_url, secret=batch.webhook_secret)
    return True


def claim_ending(session: Session, batch_id: str, *states: BatchStatus) -> bool:
    """Take the right to end a batch in one of `states`, so concurrent callers write its files once.

    Not a state change: `finalizing_at` doubles as the claim (the transition to finalizing stamps it again).
    """
    return session.execute(update(Batch).where(
        Batch.id == batch_id, Batch.finalizing_at.is_(None), Batch.status.in_([state.value for state in states]),
    ).values(finalizing_at=utcnow())).rowcount == 1


def request_counts(session: Session, batch_ids: list[str]) -> dict[str, RequestCounts]:
    """OpenAI's request_counts per batch, from its items' states (failed counts refused and failed items;
    cancelled is extra)."""
    counts = {batch_id: {"total": 0, "completed": 0, "failed": 0, "cancelled": 0} for batch_id in batch_ids}
    rows = session.execute(
        select(Job.batch_id, Job.status, func.count()).where(Job.batch_id.in_(batch_ids))
        .group_by(Job.batch_id, Job.status)
    )
    for batch_id, status, count in rows:
        entry = counts[batch_id]
        entry["total"] += count
        key = {"succeeded": "completed", "failed": "failed", "cancelled": "cancelled"}.get(status)
        if key:
            entry[key] += count
    return {batch_id: RequestCounts(**entry) for batch_id, entry in counts.items()}


def render(session: Session, batch: Batch) -> BatchOut:
    """The batch with its counts: as the API shows it, and as its ending's webhook event carries it."""
    return BatchOut.from_row(batch, request_counts(session, [batch.id])[batch.id])
