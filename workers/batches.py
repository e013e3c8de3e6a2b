"""The batch ingest task: stream an OpenAI input file into jobs."""
from __future__ import annotations

import logging

from celery import shared_task
from celery.exceptions import Reject
from sqlalchemy.orm import Session

from service.adapters.broker import INGEST_TASK
from service.adapters.db import DATABASE_UNAVAILABLE
from service.core import batches
from service.core.models import Batch, BatchStatus, File, Job
from workers.runtime import WorkerRuntime, current_runtime

log = logging.getLogger(__name__)

_INGEST_RETRY_S = 30.0  # how long an ingest waits for an unavailable database before its message is requeued


@shared_task(name=INGEST_TASK)
def ingest_batch(batch_id: str) -> None:
    try:
        ingest(current_runtime(), batch_id)
    except DATABASE_UNAVAILABLE as exc:
        # The ingest is one transaction, so nothing of it was kept: put the message back for another try.
        log.warning("batch %s: the database stayed unavailable, its ingest goes back to the queue", batch_id)
        raise Reject(exc, requeue=True) from exc


def ingest(runtime: WorkerRuntime, batch_id: str) -> str | None:
    """Validate a `validating` batch's input file line by line and insert its jobs in bulk; returns the new status."""

    def read_and_start(session: Session) -> tuple[list[Job], batches.Ingest] | None:
        batch = session.get(Batch, batch_id)
        if batch is None or batch.status != BatchStatus.VALIDATING.value:
            return None  # a redelivered task for a batch already ingested (or cancelled)
        file = session.get(File, batch.input_file_id)
        with runtime.blobs.open(file.sha256) as lines:
            result = batches.read_openai_lines(lines, batch, runtime.settings, runtime.blobs)
        return batches.start(session, batch, result), result

    started = runtime.db.retrying(read_and_start, what=f"batch {batch_id}: ingest",
                                  give_up=runtime.give_up_after(_INGEST_RETRY_S))
    if started is None:
        return None
    queued, result = started
    log.info("batch %s: %d items ingested, %d queued, %d malformed lines",
             batch_id, len(result.rows), len(queued), result.error_count)
    batches.send_started(runtime.db, runtime.blobs, runtime.broker, batch_id, queued)
    with runtime.db.session() as session:
        return session.get(Batch, batch_id).status
