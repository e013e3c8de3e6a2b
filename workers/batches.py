"""The batch ingest task: stream an OpenAI input file into jobs (service.core.batches.ingest)."""
from __future__ import annotations

import logging

from celery import shared_task
from celery.exceptions import Reject

from service.adapters.broker import INGEST_TASK
from service.adapters.db import DATABASE_UNAVAILABLE
from service.core import batches
from workers.runtime import current_runtime

log = logging.getLogger(__name__)

_INGEST_RETRY_S = 30.0  # how long an ingest waits for an unavailable database before its message is requeued


@shared_task(name=INGEST_TASK)
def ingest_batch(batch_id: str) -> None:
    runtime = current_runtime()
    try:
        batches.ingest(runtime.db, runtime.blobs, runtime.broker, runtime.settings, batch_id,
                              give_up=runtime.give_up_after(_INGEST_RETRY_S))
    except DATABASE_UNAVAILABLE as exc:
        # The ingest is one transaction, so nothing of it was kept: put the message back for another try.
        log.warning("batch %s: the database stayed unavailable, its ingest goes back to the queue", batch_id)
        raise Reject(exc, requeue=True) from exc
