"""The job state machine. Every job is created here, and every status change goes through `_transition`.

    (new) ──> queued ──> running ──> succeeded | failed | cancelled
      │         │           │
      │         │           └──> queued   (requeued: its worker died, or stopped before it finished)
      │         ├──> cancelled
      │         ├──> failed      (no live worker served its model for queue_timeout_s)
      │         └──> succeeded   (answered from the dedup cache, never run)
      └──> failed   (a batch item refused at ingest)

Each transition is one conditional UPDATE, so concurrent actors (API, workers, the periodic passes)
cannot both win: a worker's finishing write is fenced by the attempt number it claimed.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, insert, select, update
from sqlalchemy.orm import Session

from service.adapters import job_endings
from service.core import batch_lifecycle, webhooks
from service.core.errors import ErrorCode
from service.core.models import Job, JobEvent, JobStatus, utcnow

log = logging.getLogger(__name__)

# The states a new job may start in, and the timestamps its creation sets.
INITIAL: dict[JobStatus, tuple[str, ...]] = {
    JobStatus.QUEUED: ("created_at",),
    JobStatus.FAILED: ("created_at", "finished_at"),  # a batch item refused at ingest
}
# Each allowed move (source -> target), and the timestamps it sets to the transition's time.
TRANSITIONS: dict[JobStatus, dict[JobStatus, tuple[str, ...]]] = {
    JobStatus.QUEUED: {
        JobStatus.RUNNING: ("started_at",),
        JobStatus.CANCELLED: ("finished_at", "cancel_requested_at"),
        JobStatus.FAILED: ("finished_at",),
        JobStatus.SUCCEEDED: ("started_at", "finished_at"),
    },
    JobStatus.RUNNING: {
        JobStatus.QUEUED: (),  # its start is cleared instead: it waits to be claimed again
        JobStatus.SUCCEEDED: ("finished_at",),
        JobStatus.FAILED: ("finished_at",),
        JobStatus.CANCELLED: ("finished_at",),
    },
}
# The batch count each ending adds to (OpenAI's request_counts; cancelled is VLQ's own).
ENDING_COUNTS: dict[JobStatus, str] = {
    JobStatus.SUCCEEDED: "request_completed", JobStatus.FAILED: "request_failed",
    JobStatus.CANCELLED: "request_cancelled",
}


def create_job(session: Session, **fields: Any) -> Job:
    """Insert one new queued job (and its first event), as `create_jobs` does; the job, loaded."""
    create_jobs(session, [fields])
    job = session.get(Job, fields["id"])
    assert job is not None
    return job


def create_jobs(session: Session, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Bulk-insert jobs (a batch's items) and their first events in two statements; returns the queued rows.

    A row starts queued, or failed if it carries an `error_code` (an item refused at ingest; its error fields say
    why). Rows carry no status of their own: the state machine sets it.
    """
    if not rows:
        return []
    now = utcnow()
    for row in rows:
        if "status" in row:
            raise ValueError(f"a job's first state is the state machine's to choose, not {row['status']!r}")
        status = JobStatus.FAILED if row.get("error_code") else JobStatus.QUEUED
        row.update(status=status.value, attempts=0, **_stamps(INITIAL[status], now))
    session.execute(insert(Job), rows)
    session.execute(insert(JobEvent), [
        {"job_id": row["id"], "type": f"job.{row['status']}", "attempt": 0, "worker": None, "created_at": now}
        for row in rows
    ])
    refused: dict[str, list[str]] = {}
    created: dict[str, dict[str, int]] = {}
    for row in rows:
        failed = row["status"] == JobStatus.FAILED.value
        if failed:
            refused.setdefault(row["tenant"], []).append(row["id"])
        if row.get("batch_id") is not None:
            counts = created.setdefault(row["batch_id"], {"request_total": 0, "request_failed": 0})
            counts["request_total"] += 1
            counts["request_failed"] += failed
    for tenant, job_ids in refused.items():
        webhooks.record_job_events(session, tenant, job_ids, "job.failed")
    for batch_id, counts in created.items():
        batch_lifecycle.add_to_counts(session, batch_id, counts)
    return [row for row in rows if row["status"] == JobStatus.QUEUED.value]


def cancel_queued_in_batch(session: Session, batch_id: str) -> int:
    """queued -> cancelled for every queued item of a batch, in one UPDATE; returns how many."""
    return len(_transition(
        session, [Job.batch_id == batch_id], JobStatus.QUEUED, JobStatus.CANCELLED,
        values={"error_code": ErrorCode.CANCELLED,
                "error_message": "The batch was cancelled before this item started."},
    ))


def claim(session: Session, job_id: str, worker: str) -> Job | None:
    """queued -> running for this worker; None if someone else has it or it already ended."""
    won = _transition(
        session, [Job.id == job_id], JobStatus.QUEUED, JobStatus.RUNNING,
        values={"worker": worker, "attempts": Job.attempts + 1},
    )
    return session.get(Job, job_id, populate_existing=True) if won else None


def finish(
    session: Session, job: Job, status: JobStatus, **values: Any
) -> bool:
    """running -> a terminal state, only if `job` is still this worker's current attempt."""
    if not status.terminal:
        raise ValueError(f"{status} is not terminal")
    return bool(_transition(session, [Job.id == job.id, *_fence(job)], JobStatus.RUNNING, status, values=values))


def complete_from_cache(session: Session, job_id: str, source: Job) -> bool:
    """queued -> succeeded with `source`'s result; the job never runs, and costs no tokens or engine time."""
    return bool(_transition(
        session, [Job.id == job_id], JobStatus.QUEUED, JobStatus.SUCCEEDED,
        values={"cached_from": source.cached_from or source.id,
                "result_text": source.result_text, "result_json": source.result_json,
                "result_lines": source.result_lines, "finish_reason": source.finish_reason,
                "grounding": source.grounding,
                "prompt_tokens": 0 if source.prompt_tokens is not None else None,
                "completion_tokens": 0 if source.completion_tokens is not None else None, "inference_ms": 0.0},
    ))


def requeue(session: Session, job: Job) -> bool:
    """running -> queued, after the worker holding this attempt was lost or stopped; the caller then sends it."""
    return bool(_transition(
        session, [Job.id == job.id, *_fence(job)], JobStatus.RUNNING, JobStatus.QUEUED,
        values={"started_at": None, "enqueued_at": None},
    ))


def cancel_queued(session: Session, job_id: str) -> bool:
    """queued -> cancelled; the task message is left to find the job ended and do nothing."""
    return bool(_transition(
        session, [Job.id == job_id], JobStatus.QUEUED, JobStatus.CANCELLED,
        values={"error_code": ErrorCode.CANCELLED, "error_message": "Cancelled before it started."},
    ))


def fail_queued(session: Session, job_ids: list[str], code: ErrorCode, message: str) -> list[str]:
    """queued -> failed for these jobs (one job of its own, or items of one batch: see `_transition`), which never
    ran; returns the ids that moved. Their task messages find them ended and do nothing."""
    return _transition(session, [Job.id.in_(job_ids)], JobStatus.QUEUED, JobStatus.FAILED,
                       values={"error_code": code, "error_message": message})


def request_cancel(session: Session, job_id: str) -> bool:
    """Flag a running job for cancellation; its worker makes the transition when the engine stops."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING.value, Job.cancel_requested_at.is_(None))
        .values(cancel_requested_at=utcnow())
    )
    return result.rowcount == 1


def events(session: Session, job_id: str) -> list[JobEvent]:
    return list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))


def _fence(job: Job) -> list[Any]:
    """A worker's write counts only while the job is still the attempt it claimed."""
    return [Job.attempts == job.attempts, Job.worker == job.worker]


def _stamps(columns: tuple[str, ...], now: datetime) -> dict[str, datetime]:
    return dict.fromkeys(columns, now)


def _transition(
    session: Session, where: list[Any], source: JobStatus, target: JobStatus, *, values: dict[str, Any],
) -> list[str]:
    """Move every job matching `where` that is in `source` to `target`, stamped per TRANSITIONS, with its event
    (and, for an ending, its webhooks and its ending announcement) in the same transaction. Returns the ids of the
    jobs that moved."""
    stamps = TRANSITIONS.get(source, {}).get(target)
    if stamps is None:
        raise ValueError(f"no transition {source.value} -> {target.value}")
    now = utcnow()
    moved = session.execute(
        update(Job).where(*where, Job.status == source.value)
        .values(status=target.value, **_stamps(stamps, now), **values)
        .returning(Job.id, Job.tenant, Job.attempts, Job.worker, Job.batch_id, Job.prompt_tokens,
                   Job.completion_tokens).execution_options(synchronize_session=False)
    ).all()
    if not moved:
        return []
    events = [{"job_id": row.id, "type": f"job.{target.value}", "attempt": row.attempts, "worker": row.worker,
               "created_at": now} for row in moved]
    if target.terminal:
        _count_endings(session, target, moved)
    if len(moved) == 1:
        event = JobEvent(**events[0])
        session.add(event)
        if target.terminal:
            webhooks.record_job_event(session, event.job_id, event)  # the outbox: in the same transaction
            job_endings.mark_ended(session, event.job_id)  # wakes synchronous requests waiting on it, once committed
    else:  # a batch's items at once (one bulk insert): they have no webhook_url and no synchronous waiter
        session.execute(insert(JobEvent), events)
        if target.terminal:
            webhooks.record_job_events(session, moved[0].tenant, [row.id for row in moved], events[0]["type"])
    for row in moved:
        log.info("job %s: %s -> %s (attempt %s)", row.id, source.value, target.value, row.attempts)
    return [row.id for row in moved]


def _count_endings(session: Session, target: JobStatus, moved: Sequence[Row[Any]]) -> None:
    """Add the jobs that just ended to their batches' counts and token totals, in the same transaction."""
    per_batch: dict[str, dict[str, int]] = {}
    for row in moved:
        if row.batch_id is None:
            continue
        counts = per_batch.setdefault(row.batch_id, {ENDING_COUNTS[target]: 0, "input_tokens": 0,
                                                     "output_tokens": 0})
        counts[ENDING_COUNTS[target]] += 1
        counts["input_tokens"] += row.prompt_tokens or 0
        counts["output_tokens"] += row.completion_tokens or 0
    for batch_id, counts in per_batch.items():
        batch_lifecycle.add_to_counts(session, batch_id, counts)
