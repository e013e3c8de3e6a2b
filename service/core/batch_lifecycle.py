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

from sqlalchemy import update
from sqlalchemy.orm import Session

from service.core import webhooks
from service.core.models import Batch, BatchStatus, utcnow
from service.core.shapes import BatchOut

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

# The columns add_to_counts keeps: OpenAI's request_counts (and VLQ's cancelled) and its usage totals.
COUNTS = frozenset({"request_total", "request_completed", "request_failed", "request_cancelled", "input_tokens",
                    "output_tokens"})


def create(session: Session, **fields: Any) -> Batch:
    """Add a new batch, `validating`, to the session."""
    batch = Batch(status=INITIAL.value, **{STAMPS[INITIAL]: utcnow()}, **dict.fromkeys(COUNTS, 0), **fields)
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
        webhooks.record_event(session, f"batch.{target.value}", batch_id, render(batch),
                              tenant=batch.tenant, url=batch.webhook_url, secret=batch.webhook_secret)
    return True


def claim_ending(session: Session, batch_id: str, *states: BatchStatus) -> bool:
    """Take the right to end a batch in one of `states`, so concurrent callers write its files once.

    Not a state change: `finalizing_at` doubles as the claim (the transition to finalizing stamps it again).
    """
    return session.execute(update(Batch).where(
        Batch.id == batch_id, Batch.finalizing_at.is_(None), Batch.status.in_([state.value for state in states]),
    ).values(finalizing_at=utcnow())).rowcount == 1


def add_to_counts(session: Session, batch_id: str, deltas: dict[str, int]) -> None:
    """Add to a batch's item counts and token totals (columns of COUNTS), in the caller's transaction.

    One atomic `SET column = column + delta`: concurrent transitions of its items each add theirs, on SQLite and
    Postgres alike, without reading the row first. Only the job state machine calls this, with each transition.
    """
    unknown = deltas.keys() - COUNTS
    if unknown:
        raise ValueError(f"not a batch count: {sorted(unknown)}")
    changes = {name: getattr(Batch, name) + delta for name, delta in deltas.items() if delta}
    if changes:
        session.execute(update(Batch).where(Batch.id == batch_id).values(**changes)
                        .execution_options(synchronize_session=False))



def render(batch: Batch) -> BatchOut:
    """The batch as the API shows it, and as its ending's webhook event carries it."""
    return BatchOut.from_row(batch)
