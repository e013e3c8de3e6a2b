"""The Celery app, built from the same Settings as the API.

Run a worker with `vlq worker` (or `celery -A workers.celery_app worker`): it uses the threads
pool with one thread per engine sequence, so `batch_size` jobs run together in one engine.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from celery import Celery, Task, signals

from service.adapters import broker
from service.adapters.broker import MAINTENANCE_TASKS, SERVICE_QUEUE
from service.core import logs
from service.core.config import Settings, load_settings


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
    """The workers' Celery app: the broker's sending configuration plus what consuming and beat need."""
    app = broker.celery_client(settings)
    app.conf.update(
        include=["workers.inference", "workers.batches", "workers.webhooks", "workers.maintenance"],
        worker_pool="threads",
        worker_concurrency=settings.worker_concurrency,
        worker_prefetch_multiplier=1,  # one task per free slot: long inference tasks are not hoarded
        worker_hijack_root_logger=False,
        worker_send_task_events=True,  # for Flower
        beat_schedule=beat_schedule(settings),
        beat_scheduler="workers.maintenance:MaintenanceScheduler",  # in memory: interval tasks need no file
    )
    # Kept beside the app, not in `app.conf`: Flower displays the configuration, and the settings hold secrets.
    app.vlq_settings = settings  # type: ignore[attr-defined]
    return app


@signals.setup_logging.connect
def _setup_logging(loglevel: int | str | None = None, **_: Any) -> None:
    """Celery's processes (worker, beat, flower) log through VLQ's one formatter instead of Celery's own; the
    periodic maintenance tasks' routine lines are DEBUG."""
    logs.configure(load_settings().log_format, loglevel or logging.INFO, routine_tasks=MAINTENANCE_TASKS)


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
