"""The queue side of the service: job, ingest and webhook tasks and cancel signals go to workers through Redis.

The database is the source of truth and a broker message only wakes a worker, so a failed send never
loses work. Each send is recorded (`enqueued_at`) once the broker took it; what has no recorded send (the
broker was down, the sender died between commit and send, or a broker restart lost its messages) is sent
again by the dispatcher pass (`workers.maintenance.redispatch`). A message sent twice is harmless: a job's
claim is fenced, an ingest starts a batch once, a webhook delivery is leased.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import OperationalError as KombuOperationalError
from kombu.transport import redis as kombu_redis
from sqlalchemy import update

from service.adapters.db import DATABASE_UNAVAILABLE, Database
from service.core.config import Settings
from service.core.models import Batch, BatchStatus, Job, JobStatus, Priority, WebhookDelivery, utcnow

log = logging.getLogger(__name__)

RUN_JOB_TASK = "vlq.run_job"
INGEST_TASK = "vlq.ingest_batch"
CANCEL_CHANNEL = "vlq:cancel"
# Batch ingest and the periodic maintenance: every worker consumes it (before its model
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


def celery_client(settings: Settings) -> Celery:
    """A Celery app that sends VLQ's tasks; the workers' app (workers.celery_app) extends this configuration."""
    app = Celery("vlq", broker=settings.redis_url)
    app.conf.update(
        # Long inference tasks: acknowledge after the work, and let Redis redeliver only after the longest job
        # could have finished.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            "queue_order_strategy": "priority",
        },
        task_ignore_result=True,  # results live in the database, not in a Celery backend
        task_default_queue=SERVICE_QUEUE,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker outlives a broker outage of any length, and reconnects
        broker_connection_timeout=3,
        # A submit must not hang on a dead broker: fail fast, and the API answers 503.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
        task_send_sent_event=True,
    )
    return app


class _SendingChannel(kombu_redis.Channel):
    """kombu's Redis channel, keeping one client for its synchronous commands instead of building one per message,
    and able to buffer a run of publishes into one round trip (`pipelined`).

    kombu builds a new redis-py client for every publish (and for each task's sent event), and building one fills
    redis-py's table of response callbacks: about half the CPU of sending a task. The client is only a handle on
    the channel's connection pool, so one serves every message; a new pool (after a reconnect) gets a new client.
    """

    _sending_client: redis.Redis | None = None
    _pipe: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        if self._pipe is not None:
            return self._pipe
        client = self._sending_client
        if client is None or client.connection_pool is not self.pool:
            client = self._sending_client = super()._create_client()
        return client

    @contextmanager
    def pipelined(self) -> Iterator[None]:
        """Buffer the block's commands (each task's LPUSH and its sent event) and send them all at its end, in one
        round trip; a failure raises there, so the caller counts none of the block's messages as sent."""
        pipe = self._create_client().pipeline(transaction=False)
        self._pipe = pipe
        try:
            yield
        finally:
            self._pipe = None
        pipe.execute()


class SendingTransport(kombu_redis.Transport):
    """The Redis transport the Broker sends with (workers consume with kombu's own)."""

    Channel = _SendingChannel


BROKER_ERRORS = (KombuOperationalError, redis.RedisError, OSError)
_UNACKED_KEY = "unacked"  # kombu's Redis transport: messages delivered to a worker and not yet acknowledged
_RUN_ID_KEY = "vlq:broker:run_id"  # the broker run the dispatcher last saw; see `broker_changed`
_RECORD_CHUNK = 500
_SEND_CHUNK = 500


class Broker:
    """Sends tasks and cancel signals, and reads the broker's queues; every send is recorded in the database."""

    def __init__(self, settings: Settings, db: Database, client: redis.Redis | None = None, *,
                 backoff_s: float = 0.0) -> None:
        """`client`: the process's Redis handle (service.wiring), or one of its own. `backoff_s`: after a failed
        send, skip sending for this long (the API: submits stay fast while the broker is down, and the dispatcher
        pass sends what they stored)."""
        self.celery: Celery = celery_client(settings)
        self.celery.conf.broker_transport = f"{__name__}:SendingTransport"
        self.db = db
        self.webhook_queue = settings.webhook_queue
        self._owns_redis = client is None
        self.redis = client or redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=5)
        self._backoff_s = backoff_s
        self._down_until = 0.0

    def enqueue(self, jobs: Sequence[Any]) -> bool:
        """Send each queued job's task over one broker connection and record the sends; call after the rows commit.

        `jobs` need `id`, `model`, `priority` and `attempts`. Returns False if the broker did not take them all;
        those left stay unsent in the database for the dispatcher pass. Never raises for a broker or database outage.
        """
        sent: list[Any] = []

        def send(producer: Any) -> None:
            channel = producer.channel
            for start in range(0, len(jobs), _SEND_CHUNK):  # a round trip per chunk, not two per job
                chunk = jobs[start:start + _SEND_CHUNK]
                with channel.pipelined() if isinstance(channel, _SendingChannel) else nullcontext():
                    for job in chunk:
                        self.celery.send_task(RUN_JOB_TASK, args=[job.id], queue=job_queue(job.model, job.priority),
                                              producer=producer)
                sent.extend(chunk)

        complete = self._send(send, f"{len(jobs)} job(s)") if jobs else True
        by_attempt: dict[int, list[str]] = defaultdict(list)
        for job in sent:
            by_attempt[job.attempts or 0].append(job.id)
        # Fenced by status and attempt: a send recorded late must not cover the job's next life (requeued, unsent).
        self._record([update(Job).where(Job.id.in_(ids[start:start + _RECORD_CHUNK]),
                                        Job.status == JobStatus.QUEUED.value, Job.attempts == attempts)
                      for attempts, ids in by_attempt.items() for start in range(0, len(ids), _RECORD_CHUNK)])
        return complete

    def enqueue_ingest(self, batch_id: str) -> bool:
        """Send a validating batch's ingest task and record it; False if the broker is down (the dispatcher will)."""
        if not self._send(lambda producer: self.celery.send_task(INGEST_TASK, args=[batch_id], queue=SERVICE_QUEUE,
                                                                 producer=producer), f"ingest of {batch_id}"):
            return False
        self._record([update(Batch).where(Batch.id == batch_id, Batch.status == BatchStatus.VALIDATING.value)])
        return True

    def enqueue_delivery(self, delivery_id: str, countdown: float | None = None) -> None:
        """Send a webhook delivery's task and record it; call only after its row is committed. Raises if the
        broker is down (the delivery stays due and unsent in the database, and the periodic pass sends it)."""
        self.celery.send_task(DELIVER_WEBHOOK_TASK, args=[delivery_id], queue=self.webhook_queue, countdown=countdown)
        self._record([update(WebhookDelivery).where(WebhookDelivery.id == delivery_id,
                                                    WebhookDelivery.status == "pending")])

    def queue_depth(self, model: str, priority: str) -> int:
        """Tasks waiting in a model's queue that no worker has taken yet."""
        return int(self.redis.llen(job_queue(model, priority)))

    def held_by_workers(self) -> bytes:
        """Every message workers have taken and not yet acknowledged (kombu's `unacked` hash), as one blob to
        search for ids: a task's headers carry its arguments in plain text (`argsrepr`)."""
        return b"\n".join(self.redis.hvals(_UNACKED_KEY))

    def publish_cancel(self, job_id: str) -> None:
        """Tell every worker to stop `job_id` if it is running there. Best effort: the cancel is recorded in the
        database first, and a worker's cancel listener looks there whenever it (re)connects."""
        try:
            self.redis.publish(CANCEL_CHANNEL, job_id)
        except redis.RedisError as exc:
            log.warning("cancel of job %s not published (%s); its worker reads it when Redis is back", job_id, exc)

    def broker_changed(self) -> str | None:
        """The broker's run id if it is not the one last remembered: it restarted (and, without persistence, lost
        every message), its data was flushed, or no dispatcher has looked yet. None if it is the same run."""
        run_id = str(self.redis.info("server")["run_id"])
        remembered = self.redis.get(_RUN_ID_KEY)
        return None if remembered is not None and remembered.decode() == run_id else run_id

    def remember_broker(self, run_id: str) -> None:
        self.redis.set(_RUN_ID_KEY, run_id)

    def broker_uptime_s(self) -> float:
        return float(self.redis.info("server")["uptime_in_seconds"])

    def close(self) -> None:
        self.celery.close()
        if self._owns_redis:
            self.redis.close()

    def _send(self, send: Callable[[Any], None], what: str) -> bool:
        if self._backoff_s and time.monotonic() < self._down_until:
            return False  # the broker failed a moment ago; the dispatcher pass sends this when it is back
        try:
            with self.celery.producer_or_acquire() as producer:
                send(producer)
        except BROKER_ERRORS as exc:
            self._down_until = time.monotonic() + self._backoff_s
            log.warning("broker unavailable, %s left for the dispatcher to send: %s", what, exc)
            return False
        return True

    def _record(self, statements: list[Any]) -> None:
        """Stamp `enqueued_at` on what was sent; if the database is down, the dispatcher sends it once more later."""
        if not statements:
            return
        now = utcnow()
        try:
            with self.db.session() as session:
                for statement in statements:
                    session.execute(statement.values(enqueued_at=now).execution_options(synchronize_session=False))
        except DATABASE_UNAVAILABLE as exc:
            log.warning("sends not recorded (%s); they will be sent once more", str(exc).splitlines()[0])
