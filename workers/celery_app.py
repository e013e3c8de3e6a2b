"""The Celery app, built from the same Settings as the API.

Run a worker with `vlq worker` (or `celery -A workers.celery_app worker`): it uses the threads
pool with one thread per engine sequence, so `batch_size` jobs run together in one engine.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from celery import Celery, Task, signals

from service import logs
from service.config import Settings, load_settings
from service.models import Priority

RUN_JOB_TASK = "vlq.run_job"
INGEST_TASK = "vlq.ingest_batch"
CANCEL_CHANNEL = "vlq:cancel"
# Batch ingest and finalize, and the periodic maintenance: every worker consumes it (before its model
# queues), even one without a model.
SERVICE_QUEUE = "vlq.service"
DELIVER_WEBHOOK_TASK = "vlq.deliver_webhook"

# The periodic tasks `vlq beat` sends (see workers.maintenance), with the setting that holds each one's interval.
REDISPATCH_TASK = "vlq.maintenance.redispatch"
RECOVER_JOBS_TASK = "vlq.maintenance.recover_jobs"
SWEEP_BATCHES_TASK = "vlq.maintenance.sweep_batches"
RESEND_DELIVERIES_TASK = "vlq.maintenance.resend_deliveries"
RETENTION_TASK = "vlq.maintenance.retention"
MAINTENANCE_TASKS = {
    REDISPATCH_TASK: "sweep_interval_s",
    RECOVER_JOBS_TASK: "sweep_interval_s",
    SWEEP_BATCHES_TASK: "sweep_interval_s",
    RESEND_DELIVERIES_TASK: "sweep_interval_s",
    RETENTION_TASK: "retention_interval_s",
}


def job_queue(model: str, priority: str) -> str:
    return f"vlq.{model}.{priority}"


def worker_queues(models: Iterable[str]) -> list[str]:
    """Queues for the served models, every interactive queue before any bulk one.

    With the Redis transport's "priority" order strategy the worker always takes from the first
    non-empty queue in this list, so bulk backfills wait while interactive work is waiting.
    """
    models = list(models)
    return [job_queue(model, priority.value) for priority in Priority for model in models]


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every maintenance task at its interval, on the service queue. One that waited three intervals is dropped
    (the next one does the same work), so a worker busy for a while does not find a pile of them."""
    schedule = {}
    for task, setting in MAINTENANCE_TASKS.items():
        interval = float(getattr(settings, setting))
        schedule[task] = {"task": task, "schedule": interval,
                          "options": {"queue": SERVICE_QUEUE, "expires": 3 * interval}}
    return schedule


def create_celery(settings: Settings) -> Celery:
    """A Celery app for `settings`; the API uses one to send, workers to consume, `vlq beat` to schedule."""
    app = Celery("vlq", broker=settings.redis_url,
                 include=["workers.inference", "workers.batches", "workers.webhooks", "workers.maintenance"])
    app.conf.update(
        # Long inference tasks: acknowledge after the work, take one task per free slot,
        # and let Redis redeliver only after the longest job could have finished.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            "queue_order_strategy": "priority",
        },
        worker_pool="threads",
        worker_concurrency=settings.worker_concurrency,
        task_ignore_result=True,  # results live in the database, not in a Celery backend
        task_default_queue=SERVICE_QUEUE,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker outlives a broker outage of any length, and reconnects
        broker_connection_timeout=3,
        # A submit must not hang on a dead broker: fail fast, and the API answers 503.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
        worker_hijack_root_logger=False,
        worker_send_task_events=True,  # for Flower
        task_send_sent_event=True,
        beat_schedule=beat_schedule(settings),
        beat_scheduler="workers.maintenance:MaintenanceScheduler",  # in memory: interval tasks need no file
    )
    app.conf.vlq_settings = settings
    return app


@signals.setup_logging.connect
def _setup_logging(loglevel: int | str | None = None, **_: Any) -> None:
    """Celery's processes (worker, beat, flower) log through VLQ's one formatter instead of Celery's own."""
    logs.configure(load_settings().log_format, loglevel or logging.INFO)


@signals.task_prerun.connect
def _bind_task_ids(task: Task, args: Iterable[Any] = (), **_: Any) -> None:
    """Every line a task logs carries the job, batch or delivery id it was given."""
    task.request.vlq_log_token = logs.bind(**logs.ids_in(*(args or ())))


@signals.task_postrun.connect
def _unbind_task_ids(task: Task, **_: Any) -> None:
    token = getattr(task.request, "vlq_log_token", None)
    if token is not None:
        logs.unbind(token)


def __getattr__(name: str) -> Celery:
    # `app` is built on first use, so the API can import the factory and queue names without
    # this module reading the environment's config at import time.
    if name != "app":
        raise AttributeError(name)
    app = globals()["app"] = create_celery(load_settings())
    return app
