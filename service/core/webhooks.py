"""Webhook events and the outbox: an event becomes one delivery row per receiver, in the event's own transaction.

Adding an event source takes one call: `record_event(session, "batch.completed", batch.id, batch.to_dict(),
tenant=batch.tenant, url=batch.webhook_url, secret=batch.webhook_secret)` where the batch's transition is written.
An event reaches only the endpoints of its subject's tenant.
Deliveries created in a transaction are sent to the workers once it commits (see `attach_outbox`);
if that send is lost, the workers' periodic pass finds them due in the database and sends them again.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from service.adapters.db import after_commit, on_commit
from service.core.models import Job, JobEvent, WebhookAttempt, WebhookDelivery, WebhookEndpoint, _iso, new_id, utcnow

log = logging.getLogger(__name__)

EVENT_TYPES = (
    "job.succeeded", "job.failed", "job.cancelled",
    "batch.completed", "batch.failed", "batch.cancelled", "batch.expired",
)
REQUEST_TARGET = "request"  # a delivery to the URL the job (or batch) itself carried
_PENDING_KEY = "vlq.webhook_deliveries"


def record_event(session: Session, event_type: str, subject_id: str, data: dict[str, Any], *, tenant: str,
                 url: str | None = None, secret: str | None = None) -> list[WebhookDelivery]:
    """Create a pending delivery of this event to the subject's own URL and to every matching endpoint of `tenant`."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event {event_type!r}")
    now = utcnow()
    body = json.dumps({"type": event_type, "timestamp": _iso(now), "data": data}, separators=(",", ":"))
    targets: list[tuple[str, str | None, str, str]] = []
    if url and secret:
        targets.append((REQUEST_TARGET, None, url, secret))
    endpoints = _live_endpoints(session, tenant)
    targets += [(e.id, e.id, e.url, e.secret) for e in endpoints if e.events is None or event_type in e.events]
    deliveries = [
        WebhookDelivery(id=new_id("msg"), tenant=tenant, event_type=event_type, subject_id=subject_id, target=target,
                        endpoint_id=endpoint_id, url=target_url, secret=target_secret, body=body,
                        status="pending", attempts=0, next_attempt_at=now, created_at=now)
        for target, endpoint_id, target_url, target_secret in targets
    ]
    session.add_all(deliveries)
    send_after_commit(session, [delivery.id for delivery in deliveries])
    return deliveries


def record_job_event(session: Session, job_id: str, job_event: JobEvent) -> list[WebhookDelivery]:
    """The outbox side of a job reaching a terminal state; called by the state machine."""
    job = session.get(Job, job_id, populate_existing=True)
    assert job is not None
    return record_event(session, job_event.type, job.id, job.to_dict(), tenant=job.tenant, url=job.webhook_url,
                        secret=job.webhook_secret)


def record_job_events(session: Session, tenant: str, job_ids: list[str], event_type: str) -> None:
    """The outbox side of many items of one tenant's batch ending at once (refused at ingest, cancelled with it).

    Batch items carry no webhook_url of their own, so only registered endpoints can want these; with none
    subscribed this is one query, whatever the batch's size.
    """
    endpoints = _live_endpoints(session, tenant)
    if not job_ids or not any(e.events is None or event_type in e.events for e in endpoints):
        return
    for job in session.scalars(select(Job).where(Job.id.in_(job_ids))):
        record_event(session, event_type, job.id, job.to_dict(), tenant=tenant)


def _live_endpoints(session: Session, tenant: str) -> list[WebhookEndpoint]:
    return list(session.scalars(select(WebhookEndpoint).where(
        WebhookEndpoint.tenant == tenant, WebhookEndpoint.status == "active", WebhookEndpoint.deleted_at.is_(None),
    ).order_by(WebhookEndpoint.id)))


def send_after_commit(session: Session, delivery_ids: list[str]) -> None:
    """Mark deliveries to be sent to the workers once this session's transaction commits."""
    for delivery_id in delivery_ids:
        after_commit(session, _PENDING_KEY, delivery_id)


def attach_outbox(sessions: sessionmaker[Session], send: Callable[[str], None]) -> None:
    """Send the deliveries each committed transaction of `sessions` created; the periodic pass sends a failed one."""
    on_commit(sessions, _PENDING_KEY, send)


def redeliver(session: Session, delivery: WebhookDelivery) -> None:
    """Send a delivery again now, under the same webhook-id, with a fresh retry schedule."""
    now = utcnow()
    session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery.id).values(
        status="pending", attempts=0, next_attempt_at=now, finished_at=None))
    send_after_commit(session, [delivery.id])


def cancel_pending(session: Session, endpoint_id: str, reason: str) -> None:
    """Stop the pending deliveries to an endpoint that was deleted or disabled."""
    session.execute(update(WebhookDelivery).where(
        WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.status == "pending",
    ).values(status="cancelled", last_error=reason, next_attempt_at=None, finished_at=utcnow()))


def endpoint_to_dict(endpoint: WebhookEndpoint, *, with_secret: bool = False) -> dict[str, Any]:
    """An endpoint as the API shows it; the secret only in the answer that created it."""
    body = {
        "id": endpoint.id, "object": "webhook_endpoint", "url": endpoint.url,
        "events": endpoint.events, "description": endpoint.description, "status": endpoint.status,
        "disabled_reason": endpoint.disabled_reason, "created_at": _iso(endpoint.created_at),
        "disabled_at": _iso(endpoint.disabled_at),
    }
    if with_secret:
        body["secret"] = endpoint.secret
    return body


def delivery_to_dict(delivery: WebhookDelivery, attempts: list[WebhookAttempt]) -> dict[str, Any]:
    """A delivery and its attempt log, as the API shows it (never the secret)."""
    return {
        "id": delivery.id, "object": "webhook_delivery", "event_type": delivery.event_type,
        "subject_id": delivery.subject_id, "endpoint_id": delivery.endpoint_id, "url": delivery.url,
        "status": delivery.status, "attempts": delivery.attempts,
        "next_attempt_at": _iso(delivery.next_attempt_at) if delivery.status == "pending" else None,
        "last_status_code": delivery.last_status_code, "last_error": delivery.last_error,
        "created_at": _iso(delivery.created_at), "finished_at": _iso(delivery.finished_at),
        "log": [{
            "attempt": a.attempt, "status_code": a.status_code, "error": a.error, "latency_ms": round(a.latency_ms, 1),
            "response_body": a.response_body, "next_attempt_at": _iso(a.next_attempt_at), "at": _iso(a.created_at),
        } for a in attempts],
    }


def attempts_of(session: Session, delivery_ids: list[str]) -> dict[str, list[WebhookAttempt]]:
    """The attempt logs of several deliveries, oldest attempt first."""
    logs: dict[str, list[WebhookAttempt]] = {delivery_id: [] for delivery_id in delivery_ids}
    if delivery_ids:
        rows = session.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(delivery_ids))
                               .order_by(WebhookAttempt.id))
        for row in rows:
            logs[row.delivery_id].append(row)
    return logs


def due_filter(now: Any) -> Any:
    """Pending deliveries whose time has come and that no worker holds."""
    return (WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now,
            or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now))
