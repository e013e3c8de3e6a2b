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
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from service.adapters import job_endings
from service.core import webhooks
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


def create_job(session: Session, **fields: Any) -> Job:
    """Add a new queued job (and its first event) to the session."""
    job = Job(status=JobStatus.QUEUED.value, attempts=0, **_stamps(INITIAL[JobStatus.QUEUED], utcnow()), **fields)
    session.add(job)
    log.info("job %s: queued (%s)", job.id, job.model)
    session.add(JobEvent(job_id=job.id, type="job.queued", attempt=0, worker=None, created_at=job.created_at))
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
    for row in rows:
        if row["status"] == JobStatus.FAILED.value:
            refused.setdefault(row["tenant"], []).append(row["id"])
    for tenant, job_ids in refused.items():
        webhooks.record_job_events(session, tenant, job_ids, "job.failed")
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
        .returning(Job.id, Job.tenant, Job.attempts, Job.worker).execution_options(synchronize_session=False)
    ).all()
    if not moved:
        return []
    events = [JobEvent(job_id=job_id, type=f"job.{target.value}", attempt=attempt, worker=worker, created_at=now)
              for job_id, _, attempt, worker in moved]
    session.add_all(events)
    if target.terminal and len(moved) == 1:
        webhooks.record_job_event(session, events[0].job_id, events[0])  # the outbox: in the same transaction
        job_endings.mark_ended(session, events[0].job_id)  # wakes synchronous requests waiting on it, once committed
    elif target.terminal:  # a batch's items at once: they have no webhook_url and no synchronous waiter
        webhooks.record_job_events(session, moved[0].tenant, [row.id for row in moved], events[0].type)
    for job_id, _, attempt, _ in moved:
        log.info("job %s: %s -> %s (attempt %s)", job_id, source.value, target.value, attempt)
    return [job_id for job_id, *_ in moved]
