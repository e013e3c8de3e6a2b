"""What the API tells a caller whose work waits for a model no live worker serves: the `warnings` of the job or batch
object, and one `VLQ-Warning` header per warning on the answer (service.core.availability says what and why)."""
from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.adapters import presence
from service.adapters.broker import BROKER_ERRORS
from service.api.context import get_redis, get_settings
from service.core import availability, batch_lifecycle, batches
from service.core.models import Batch, BatchStatus, Job, JobStatus
from service.core.shapes import BatchOut, JobOut, ModelWarning

log = logging.getLogger(__name__)

HEADER = "VLQ-Warning"
WAITING_BATCH = frozenset({BatchStatus.VALIDATING.value, BatchStatus.IN_PROGRESS.value})  # may have items waiting
Workers = dict[str, dict[str, Any]] | None


def live_workers() -> Workers:
    """Presence, or None while Redis does not answer: then nothing is said (a submit still succeeds)."""
    try:
        return presence.live_workers(get_redis())
    except BROKER_ERRORS as exc:
        log.warning("no model warnings, Redis is unavailable: %s", exc)
        return None


def for_models(models: Iterable[str], priority: str, workers: Workers) -> list[ModelWarning]:
    """A warning for each of `models` that no live worker has live, with how long the work waits for one."""
    if workers is None:
        return []
    settings = get_settings()
    return [ModelWarning(**availability.with_timeout(settings, notice, priority).warning())
            for notice in availability.warnings(settings, models, workers)]


def job_out(job: Job, workers: Workers) -> JobOut:
    """The job as the API shows it, with its warnings while it is queued."""
    out = JobOut.from_row(job)
    if job.status == JobStatus.QUEUED.value:
        out.warnings = for_models([job.model], job.priority, workers)
    return out


def batch_out(session: Session, batch: Batch, workers: Workers, models: Iterable[str] = ()) -> BatchOut:
    """The batch (its counts are its row's), and its warnings while it has items waiting (or, just created, will
    have: the native form's `models`)."""
    out = batch_lifecycle.render(batch)
    if batch.status in WAITING_BATCH:
        out.warnings = for_models([*models, *waiting_models(session, batch)], batch.priority, workers)
    return out


def waiting_models(session: Session, batch: Batch) -> list[str]:
    """The models the batch's unfinished items ask for. A batch of one model (its `model`, set at ingest) says so
    from its row's counts: reading its items would cost a scan of them on every poll (100,000 items: 30 ms)."""
    if batch.model is not None:
        return [batch.model] if batches.pending(batch) else []
    return sorted(session.scalars(select(Job.model).where(
        Job.batch_id == batch.id, Job.status == JobStatus.QUEUED.value).distinct()).all())


def headers(warnings: Iterable[ModelWarning]) -> list[tuple[str, str]]:
    """One `VLQ-Warning: <code>: <message>` header per warning (ASCII, as a header must be)."""
    return [(HEADER, " ".join(f"{item.code}: {item.message}".split()).encode("ascii", "replace").decode())
            for item in warnings]
