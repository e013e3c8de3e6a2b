"""Webhook deliveries: claim a due delivery, POST it signed, log the attempt, and schedule the next one.

The task is thin: it hands the delivery to the worker's webhook pool (`workers.webhook_pool`), so a slow receiver
holds a webhook thread, never an inference slot, and the pool shares its threads fairly between tenants and gives
each receiver one attempt at a time. Across workers a short Redis lock per receiver does the same. The database is
the source of truth: an attempt is held through a lease taken when it starts, longer than the attempt can last
(`webhook_timeout_s` bounds the whole exchange, see `service.core.egress`), so two attempts of one delivery never
overlap; one whose worker died is found by the periodic pass (`workers.maintenance.requeue_due_deliveries`).
"""
from __future__ import annotations

import hashlib
import logging
import random
import time
from datetime import timedelta
from email.utils import parsedate_to_datetime
from functools import partial
from typing import Any

import redis
from celery import shared_task
from sqlalchemy import select, update

from service.adapters import metrics
from service.adapters.broker import BROKER_ERRORS, DELIVER_WEBHOOK_TASK, Broker
from service.adapters.db import Database
from service.core import egress, logs
from service.core.config import Settings
from service.core.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, utcnow
from service.core.webhook_signing import signed_headers
from service.core.webhooks import cancel_pending, due_filter
from workers.runtime import current_runtime

log = logging.getLogger(__name__)

MAX_LOGGED_BODY = 1024  # bytes of the receiver's answer kept in the log
SHORT_DELAY_S = 60.0  # retries sooner than this go through a Celery countdown; later ones wait for the periodic pass
BUSY_RETRY_S = 1.0  # another worker is sending to the same receiver: look again this much later
_JITTER = 0.1  # each delay is stretched by up to 10%, so retries to one receiver spread out


@shared_task(name=DELIVER_WEBHOOK_TASK)
def deliver_webhook(delivery_id: str) -> None:
    runtime = current_runtime()
    route = _route(runtime.db, delivery_id)
    if route is None:
        return
    tenant, receiver = route
    work = partial(_deliver, runtime.db, runtime.settings, delivery_id, receiver, runtime.broker)
    if not runtime.webhook_pool.submit(tenant, receiver, delivery_id, work):
        # This tenant already has a full queue here: marked unsent, the periodic pass sends it again later.
        with runtime.db.session() as session:
            session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
                            .values(enqueued_at=None))
        log.info("delivery %s deferred: tenant %s has %d deliveries waiting on this worker", delivery_id, tenant,
                 runtime.webhook_pool.max_waiting)


def deliver(db: Database, settings: Settings, delivery_id: str, *, broker: Broker | None = None) -> str | None:
    """Make one attempt at a due delivery; returns its status after it, or None if it was not ours to make."""
    route = _route(db, delivery_id)
    if route is None:
        return None
    return _deliver(db, settings, delivery_id, route[1], broker)


def _route(db: Database, delivery_id: str) -> tuple[str, str] | None:
    """(tenant, receiver key) of a pending delivery: its endpoint, or for a job's own webhook_url the URL."""
    with db.session() as session:
        row = session.execute(select(WebhookDelivery.tenant, WebhookDelivery.endpoint_id, WebhookDelivery.url)
                              .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == "pending")).first()
    if row is None:
        return None
    return row.tenant, row.endpoint_id or "url-" + hashlib.sha256(row.url.encode()).hexdigest()[:32]


def _deliver(db: Database, settings: Settings, delivery_id: str, receiver: str,
             broker: Broker | None) -> str | None:
    """Claim and make one attempt, holding the receiver's lock so no other worker sends to it meanwhile."""
    lock = None
    if broker is not None:
        lock = broker.redis.lock(f"vlq:webhooks:receiver:{receiver}", timeout=settings.webhook_lease_s,
                                 blocking=False)
        if not lock.acquire():
            try:
                broker.enqueue_delivery(delivery_id, countdown=BUSY_RETRY_S)
            except BROKER_ERRORS as exc:  # it stays due; the periodic pass sends it
                log.warning("delivery %s not re-sent (%s); the periodic pass will", delivery_id, exc)
            return None
    try:
        attempt = _claim(db, settings, delivery_id)
        if attempt is None:
            return None
        return _attempt(db, settings, delivery_id, attempt, broker=broker)
    finally:
        if lock is not None:
            try:
                lock.release()
            except redis.exceptions.LockError:  # it expired: the attempt outlived the lease, and was fenced
                pass


def _attempt(db: Database, settings: Settings, delivery_id: str, attempt: int, *,
             broker: Broker | None = None) -> str | None:
    """POST a claimed delivery once and record how it went; every line it logs carries the delivery id."""
    # Bound here, in the thread that runs it: the webhook pool's threads do not inherit the task's context.
    with logs.context(delivery_id=delivery_id):
        return _post(db, settings, delivery_id, attempt, broker)


def _post(db: Database, settings: Settings, delivery_id: str, attempt: int,
          broker: Broker | None) -> str | None:
    with db.session() as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        logs.bind(**logs.ids_in(delivery.subject_id))  # the job or batch the event is about
        endpoint = session.get(WebhookEndpoint, delivery.endpoint_id) if delivery.endpoint_id else None
        if endpoint is not None and (endpoint.status != "active" or endpoint.deleted_at is not None):
            state = "deleted" if endpoint.deleted_at is not None else endpoint.status
            cancel_pending(session, endpoint.id, f"endpoint {state}")
            session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(lease_until=None))
            return "cancelled"
    body = delivery.body.encode()
    headers = {"content-type": "application/json", "user-agent": "vlq-webhooks/1",
               **signed_headers(delivery.secret, delivery.id, body)}

    started = time.monotonic()
    status_code: int | None = None
    response_body: str | None = None
    error: str | None = None
    retry_after: float | None = None
    try:
        response = egress.post(delivery.url, body, headers, allow_cidrs=settings.webhook_allow_cidrs,
                               timeout_s=settings.webhook_timeout_s, max_body_bytes=MAX_LOGGED_BODY)
        status_code = response.status
        response_body = response.body.decode("utf-8", errors="replace")
        retry_after = _retry_after_s(response.headers.get("retry-after"))
    except egress.EgressDenied as exc:
        error, response_body = exc.code, str(exc)
    except egress.EgressFailed as exc:
        error, response_body = exc.kind, str(exc)[:MAX_LOGGED_BODY]
    latency_ms = (time.monotonic() - started) * 1000

    outcome, delay = _judge(settings, attempt, status_code, error, retry_after)
    now = utcnow()
    next_at = now + timedelta(seconds=delay) if delay is not None else None
    with db.session() as session:
        won = session.execute(update(WebhookDelivery).where(
            WebhookDelivery.id == delivery_id, WebhookDelivery.attempts == attempt,
        ).values(
            status=outcome, next_attempt_at=next_at, lease_until=None, last_status_code=status_code,
            last_error=error, finished_at=None if outcome == "pending" else now,
        )).rowcount == 1
        if not won:  # our lease ran out and another worker took the delivery over; its attempt counts
            log.warning("delivery %s: attempt %s lost its lease; dropping its outcome", delivery_id, attempt)
            return None
        session.add(WebhookAttempt(delivery_id=delivery_id, attempt=attempt, status_code=status_code, error=error,
                                   latency_ms=latency_ms, response_body=response_body, next_attempt_at=next_at,
                                   created_at=now))
        if status_code == 410 and delivery.endpoint_id:
            _disable(session, delivery.endpoint_id)
    if broker is not None:
        metrics.record_delivery(broker.redis, outcome)
    log.info("delivery %s (%s -> %s) attempt %s: %s %s", delivery_id, delivery.event_type, delivery.url, attempt,
             status_code or error, f"retry in {delay:.1f}s" if delay is not None else outcome)
    if delay is not None and delay < SHORT_DELAY_S and broker is not None:
        broker.enqueue_delivery(delivery_id, countdown=delay + 0.05)
    return outcome


def next_delay_s(settings: Settings, attempts_made: int, retry_after_s: float | None = None) -> float | None:
    """Seconds until the next attempt after `attempts_made` failures, or None when the schedule is spent."""
    schedule = settings.webhook_retry_schedule_s
    if attempts_made >= len(schedule):
        return None
    delay = schedule[attempts_made] * (1 + random.uniform(0, _JITTER))
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, max(schedule)))  # honoured, but never past the longest wait
    return delay


def _claim(db: Database, settings: Settings, delivery_id: str) -> int | None:
    """Take the lease on a due delivery; returns the attempt number, or None if it is not due or is held.

    Taken when the attempt starts, never while it waits for a thread, so the lease always covers the whole attempt.
    The claim uses up the delivery's message (`enqueued_at` cleared): from here the lease covers it.
    """
    now = utcnow()
    with db.session() as session:
        claimed = session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id, *due_filter(now))
                                  .values(lease_until=now + timedelta(seconds=settings.webhook_lease_s),
                                          attempts=WebhookDelivery.attempts + 1, enqueued_at=None)
                                  .execution_options(synchronize_session=False)).rowcount == 1
        if not claimed:
            return None
        return session.scalar(select(WebhookDelivery.attempts).where(WebhookDelivery.id == delivery_id))


def _judge(settings: Settings, attempt: int, status_code: int | None, error: str | None,
           retry_after: float | None) -> tuple[str, float | None]:
    """(status, delay before the next attempt or None) after one attempt."""
    if status_code is not None and 200 <= status_code < 300:
        return "succeeded", None
    retryable = error in ("timeout", "connection_error") or status_code == 429 or (
        status_code is not None and status_code >= 500)
    if not retryable:  # other 4xx, a 410, a refused address: sending again would not help
        return "failed", None
    delay = next_delay_s(settings, attempt, retry_after)
    return ("pending", delay) if delay is not None else ("failed", None)


def _disable(session: Any, endpoint_id: str) -> None:
    reason = "The receiver answered 410 Gone."
    session.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.status == "active")
                    .values(status="disabled", disabled_reason=reason, disabled_at=utcnow()))
    cancel_pending(session, endpoint_id, reason)
    log.warning("webhook endpoint %s disabled: %s", endpoint_id, reason)


def _retry_after_s(value: str | None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - utcnow()).total_seconds())
    except (TypeError, ValueError):
        return None
