"""Webhook events and the outbox: an event becomes one delivery row per receiver, in the event's own transaction.

Adding an event source takes one call: `record_event(session, "batch.completed", batch.id, BatchOut.from_row(...),
tenant=batch.tenant, url=batch.webhook_url, secret=batch.webhook_secret)` where the batch's transition is written;
the body is the `WebhookEvent` shape (service.core.shapes), carrying its subject as the API shows it.
An event reaches only the endpoints of its subject's tenant. An endpoint registered with `format: openai` gets
OpenAI's batch events instead (`OpenAIWebhookEvent`: the event's id and type, and the batch's id), signed the same
way, so `openai.webhooks.unwrap()` verifies them; job events never reach it.
Deliveries created in a transaction are sent to the workers once it commits (see `attach_outbox`);
if that send is lost, the workers' periodic pass finds them due in the database and sends them again.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, get_args

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from service.adapters.db import after_commit, on_commit
from service.core.models import Job, JobEvent, WebhookAttempt, WebhookDelivery, WebhookEndpoint, new_id, utcnow
from service.core.shapes import BatchOut, EventType, JobOut, OpenAIWebhookEvent, WebhookEvent

log = logging.getLogger(__name__)

EVENT_TYPES: tuple[str, ...] = get_args(EventType)
FORMATS = ("vlq", "openai")  # a registered endpoint's payloads: VLQ's WebhookEvent, or OpenAI's event
OPENAI_EVENT_TYPES: tuple[str, ...] = get_args(OpenAIWebhookEvent.model_fields["type"].annotation)
REQUEST_TARGET = "request"  # a delivery to the URL the job (or batch) itself carried
_PENDING_KEY = "vlq.webhook_deliveries"


def record_event(session: Session, event_type: str, subject_id: str, data: JobOut | BatchOut, *, tenant: str,
                 url: str | None = None, secret: str | None = None) -> list[WebhookDelivery]:
    """Create a pending delivery of this event to the subject's own URL and to every matching endpoint of `tenant`."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event {event_type!r}")
    now = utcnow()
    event = WebhookEvent(type=event_type, timestamp=now, data=data)  # type: ignore[arg-type]  # checked above
    bodies = {"vlq": _json(event)}
    if event_type in OPENAI_EVENT_TYPES:  # one event id for every receiver of this event
        bodies["openai"] = _json(OpenAIWebhookEvent.model_validate(
            {"id": new_id("evt"), "type": event_type, "created_at": int(now.timestamp()), "data": {"id": subject_id}}))
    targets: list[tuple[str, str | None, str, str, str]] = []
    if url and secret:
        targets.append((REQUEST_TARGET, None, url, secret, bodies["vlq"]))
    endpoints = _live_endpoints(session, tenant)
    targets += [(e.id, e.id, e.url, e.secret, bodies[e.format]) for e in endpoints if wants(e, event_type)]
    deliveries = [
        WebhookDelivery(id=new_id("msg"), tenant=tenant, event_type=event_type, subject_id=subject_id, target=target,
                        endpoint_id=endpoint_id, url=target_url, secret=target_secret, body=body,
                        status="pending", attempts=0, next_attempt_at=now, created_at=now)
        for target, endpoint_id, target_url, target_secret, body in targets
    ]
    session.add_all(deliveries)
    send_after_commit(session, [delivery.id for delivery in deliveries])
    return deliveries


def record_job_event(session: Session, job_id: str, job_event: JobEvent) -> list[WebhookDelivery]:
    """The outbox side of a job reaching a terminal state; called by the state machine."""
    job = session.get(Job, job_id, populate_existing=True)
    assert job is not None
    return record_event(session, job_event.type, job.id, JobOut.from_row(job), tenant=job.tenant, url=job.webhook_url,
                        secret=job.webhook_secret)


def record_job_events(session: Session, tenant: str, job_ids: list[str], event_type: str) -> None:
    """The outbox side of many items of one tenant's batch ending at once (refused at ingest, cancelled with it).

    Batch items carry no webhook_url of their own, so only registered endpoints can want these; with none
    subscribed this is one query, whatever the batch's size.
    """
    endpoints = _live_endpoints(session, tenant)
    if not job_ids or not any(wants(e, event_type) for e in endpoints):
        return
    for job in session.scalars(select(Job).where(Job.id.in_(job_ids))):
        record_event(session, event_type, job.id, JobOut.from_row(job), tenant=tenant)


def wants(endpoint: WebhookEndpoint, event_type: str) -> bool:
    """Whether a registered endpoint receives this event: its filter (all when absent) within its format's types."""
    if endpoint.format == "openai" and event_type not in OPENAI_EVENT_TYPES:
        return False
    return endpoint.events is None or event_type in endpoint.events


def _json(event: WebhookEvent | OpenAIWebhookEvent) -> str:
    return json.dumps(event.dump(), separators=(",", ":"))


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
