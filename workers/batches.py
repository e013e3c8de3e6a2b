"""Batch tasks: stream an OpenAI input file into jobs, and finalize batches whose items have all ended."""
from __future__ import annotations

import logging

from celery import shared_task

from service import batches
from service.models import Batch, BatchStatus, File
from workers.runtime import WorkerRuntime, current_runtime

log = logging.getLogger(__name__)

INGEST_TASK = "vlq.ingest_batch"
FINALIZE_TASK = "vlq.finalize_batch"


@shared_task(name=INGEST_TASK)
def ingest_batch(batch_id: str) -> None:
    ingest(current_runtime(), batch_id)


@shared_task(name=FINALIZE_TASK)
def finalize_batch(batch_id: str) -> None:
    runtime = current_runtime()
    batches.maybe_finalize(runtime.db, runtime.blobs, batch_id)


def ingest(runtime: WorkerRuntime, batch_id: str) -> str | None:
    """Validate a `validating` batch's input file line by line and insert its jobs in bulk; returns the new status."""
    with runtime.db.session() as session:
        batch = session.get(Batch, batch_id)
        if batch is None or batch.status != BatchStatus.VALIDATING.value:
            return None  # a redelivered task for a batch already ingested (or cancelled)
        file = session.get(File, batch.input_file_id)
        with runtime.blobs.open(file.sha256) as lines:
            result = batches.read_openai_lines(lines, batch, runtime.settings, runtime.blobs)
        queued = batches.start(session, batch, result)
    runtime.dispatcher.enqueue(queued)
    log.info("batch %s: %d items ingested, %d queued, %d malformed lines",
             batch_id, len(result.rows), len(queued), result.error_count)
    if not queued:
        batches.maybe_finalize(runtime.db, runtime.blobs, batch_id)  # every item was refused at ingest
    with runtime.db.session() as session:
        return session.get(Batch, batch_id).status
