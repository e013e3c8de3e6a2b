"""The API's side of the queue: send job tasks and cancel signals to workers through Redis."""
from __future__ import annotations

import logging
from collections.abc import Iterable

import redis
from celery import Celery
from flask import Flask, current_app

from service import job_endings, webhooks
from service.config import Settings
from service.db import get_db
from service.models import Job
from service.settings import get_settings
from workers.celery_app import (
    CANCEL_CHANNEL,
    DELIVER_WEBHOOK_TASK,
    RUN_JOB_TASK,
    SERVICE_QUEUE,
    create_celery,
    job_queue,
)

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(self, settings: Settings) -> None:
        self.celery: Celery = create_celery(settings)
        self.webhook_queue = settings.webhook_queue
        self.redis = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=5)

    def enqueue(self, jobs: Iterable[Job]) -> None:
        """Send each job's task over one broker connection; call only after the rows are committed."""
        with self.celery.producer_or_acquire() as producer:
            for job in jobs:
                self.celery.send_task(RUN_JOB_TASK, args=[job.id], queue=job_queue(job.model, job.priority),
                                      producer=producer)

    def send(self, task: str, *args: str) -> None:
        """Send a service task (batch ingest, finalize) to the queue every worker consumes."""
        self.celery.send_task(task, args=list(args), queue=SERVICE_QUEUE)

    def enqueue_delivery(self, delivery_id: str, countdown: float | None = None) -> None:
        """Send a webhook delivery's task; call only after its row is committed."""
        self.celery.send_task(DELIVER_WEBHOOK_TASK, args=[delivery_id], queue=self.webhook_queue, countdown=countdown)

    def queue_depth(self, model: str, priority: str) -> int:
        """Tasks waiting in a model's queue that no worker has taken yet."""
        return int(self.redis.llen(job_queue(model, priority)))

    def publish_cancel(self, job_id: str) -> None:
        """Tell every worker to stop `job_id` if it is running there."""
        self.redis.publish(CANCEL_CHANNEL, job_id)

    def close(self) -> None:
        self.redis.close()
        self.celery.close()


def init_app(app: Flask) -> None:
    dispatcher = app.extensions["vlq.dispatcher"] = Dispatcher(get_settings(app))
    webhooks.attach_outbox(get_db(app).sessions, dispatcher.enqueue_delivery)
    job_endings.attach(get_db(app).sessions, dispatcher.redis)


def get_dispatcher() -> Dispatcher:
    return current_app.extensions["vlq.dispatcher"]
