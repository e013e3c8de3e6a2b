"""The batch ingest task: stream an OpenAI input file into jobs (service.core.batches.ingest)."""
from __future__ import annotations

import logging

from celery import shared_task
from celery.exceptions import Reject

from service.adapters.blobs import BlobStoreUnavailable
from service.adapters.broker import INGEST_TASK
from service.adapters.db import DATABASE_UNAVAILABLE
from service.core import batches
from workers.runtime import current_runtime

log = logging.getLogger(__name__)

_INGEST_RETRY_S = 30.0  # how long an ingest waits for an unavailable database before its message is requeued
_STORAGE_PAUSE_S = 5.0  # how long an ingest that found the blob store down waits before its message is requeued


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
    except BlobStoreUnavailable as exc:
        # Its file is still stored, and the batch still validating: a later try reads it once the store is back.
        log.warning("batch %s: the blob store is unavailable (%s), its ingest goes back to the queue", batch_id, exc)
        runtime.pause(_STORAGE_PAUSE_S)
        raise Reject(exc, requeue=True) from exc
