"""One wiring of the adapters, built the same way for an API process and for a worker process."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

from service.adapters import job_endings, s3
from service.adapters.blobs import BlobStore, BlobStoreUnavailable, LocalBlobStore
from service.adapters.broker import Broker
from service.adapters.db import Database
from service.adapters.s3_blobs import S3BlobStore
from service.core import webhooks
from service.core.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Wiring:
    """The adapters one process uses; `redis` is the one Redis handle for presence, metrics, streams and locks."""

    settings: Settings
    db: Database
    blobs: BlobStore
    redis: redis.Redis
    broker: Broker

    def close(self) -> None:
        self.broker.close()
        self.redis.close()
        self.db.dispose()


def wire(settings: Settings, *, send_backoff_s: float = 0.0) -> Wiring:
    """Build the adapters for `settings` and connect the after-commit hooks (webhook outbox, job endings).

    `send_backoff_s`: after a failed broker send, skip sending for this long; the API sets it so submits stay fast
    while Redis is down (the dispatcher pass sends what they stored).
    """
    db = Database(settings.database_url)
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=5)
    broker = Broker(settings, db, client, backoff_s=send_backoff_s)
    webhooks.attach_outbox(db.sessions, broker.enqueue_delivery)
    job_endings.attach(db.sessions, client)
    return Wiring(settings=settings, db=db, blobs=blob_store(settings), redis=client, broker=broker)


def blob_store(settings: Settings) -> BlobStore:
    """The store `blob_url` names (S3), else the local `blob_dir`; checked now, so a wrong bucket or wrong
    credentials show at start (a log line naming the bucket, and /readyz not ready), not at the first job."""
    if not settings.blob_url:
        return LocalBlobStore(settings.blob_dir)
    store = S3BlobStore(s3.S3Location.parse(settings.blob_url), s3.client(settings.s3_addressing_style))
    try:
        store.check()
    except BlobStoreUnavailable as exc:
        log.error("blob store %s is not usable: %s", store.describe(), exc)
    return store
