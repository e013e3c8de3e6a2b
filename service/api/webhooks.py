"""Webhooks: endpoints registered once (POST/GET/DELETE /v1/webhooks) and the delivery log with redelivery."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from service import webhooks
from service.api.common import get_or_404, newest_first, page, request_fields
from service.auth import current_tenant
from service.db import get_session
from service.errors import ApiError
from service.fields import webhook_secret_option, webhook_url_option
from service.models import WebhookDelivery, WebhookEndpoint, new_id, utcnow
from service.settings import get_settings
from service.webhook_signing import generate_secret

bp = Blueprint("webhooks", __name__, url_prefix="/v1/webhooks")


@bp.post("")
def create_endpoint() -> ResponseReturnValue:
    """Register a receiver; the answer is the only one that shows its secret."""
    fields, _ = request_fields()
    url = webhook_url_option(fields, "url", get_settings())
    if url is None:
        raise ApiError(400, "missing_field", "'url' is required.", {"field": "url"})
    endpoint = WebhookEndpoint(
        id=new_id("whep"), tenant=current_tenant(), url=url,
        secret=webhook_secret_option(fields, "secret") or generate_secret(),
        events=_events(fields.get("events")), description=_description(fields.get("description")),
        status="active", created_at=utcnow(),
    )
    session = get_session()
    session.add(endpoint)
    session.commit()
    body = webhooks.endpoint_to_dict(endpoint, with_secret=True)
    return jsonify(body), 201, {"Location": f"/v1/webhooks/{endpoint.id}"}


@bp.get("")
def list_endpoints() -> ResponseReturnValue:
    rows, limit = newest_first(WebhookEndpoint, WebhookEndpoint.deleted_at.is_(None))
    return jsonify(page(rows, limit, webhooks.endpoint_to_dict))


@bp.get("/<endpoint_id>")
def get_endpoint(endpoint_id: str) -> ResponseReturnValue:
    return jsonify(webhooks.endpoint_to_dict(_live_endpoint(endpoint_id)))


@bp.delete("/<endpoint_id>")
def delete_endpoint(endpoint_id: str) -> ResponseReturnValue:
    """Stop sending to an endpoint; its delivery log is kept, its pending deliveries are cancelled."""
    session = get_session()
    endpoint = _live_endpoint(endpoint_id)
    endpoint.deleted_at = utcnow()
    webhooks.cancel_pending(session, endpoint.id, "endpoint deleted")
    session.commit()
    return jsonify({"id": endpoint.id, "object": "webhook_endpoint", "deleted": True})


@bp.get("/deliveries")
def list_deliveries() -> ResponseReturnValue:
    """The delivery log, newest first; filter by `job_id` (or any `subject_id`), `endpoint_id`, `status`."""
    args = request.args
    filters = ((WebhookDelivery.subject_id, args.get("job_id") or args.get("subject_id")),
               (WebhookDelivery.endpoint_id, args.get("endpoint_id")), (WebhookDelivery.status, args.get("status")))
    rows, limit = newest_first(WebhookDelivery, *(column == value for column, value in filters if value))
    logs = webhooks.attempts_of(get_session(), [row.id for row in rows])
    return jsonify(page(rows, limit, lambda row: webhooks.delivery_to_dict(row, logs[row.id])))


@bp.get("/deliveries/<delivery_id>")
def get_delivery(delivery_id: str) -> ResponseReturnValue:
    session = get_session()
    delivery = get_or_404(session, WebhookDelivery, delivery_id, "webhook delivery")
    return jsonify(webhooks.delivery_to_dict(delivery, webhooks.attempts_of(session, [delivery.id])[delivery.id]))


@bp.post("/deliveries/<delivery_id>/redeliver")
def redeliver(delivery_id: str) -> ResponseReturnValue:
    """Send a delivery again, under its original webhook-id, so the receiver can still deduplicate."""
    session = get_session()
    delivery = get_or_404(session, WebhookDelivery, delivery_id, "webhook delivery")
    if delivery.endpoint_id:
        endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
        if endpoint is None or endpoint.deleted_at is not None or endpoint.status != "active":
            raise ApiError(409, "webhook_endpoint_disabled",
                           "The delivery's endpoint is disabled or deleted; register it again to send to it.",
                           {"endpoint_id": delivery.endpoint_id})
    webhooks.redeliver(session, delivery)
    session.commit()
    session.expire_all()
    delivery = get_or_404(session, WebhookDelivery, delivery_id, "webhook delivery")
    return jsonify(webhooks.delivery_to_dict(delivery, webhooks.attempts_of(session, [delivery.id])[delivery.id])), 202


def _live_endpoint(endpoint_id: str) -> WebhookEndpoint:
    endpoint = get_or_404(get_session(), WebhookEndpoint, endpoint_id, "webhook endpoint")
    if endpoint.deleted_at is not None:
        raise ApiError(404, "not_found", f"No webhook endpoint with id {endpoint_id!r}.", {"id": endpoint_id})
    return endpoint


def _events(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
        raise ApiError(400, "invalid_field", "'events' must be a non-empty list of event types.", {"field": "events"})
    unknown = sorted(set(value) - set(webhooks.EVENT_TYPES))
    if unknown:
        raise ApiError(400, "invalid_field", f"'events' has unknown event types: {', '.join(unknown)}.",
                       {"field": "events", "available": list(webhooks.EVENT_TYPES)})
    return sorted(set(value), key=webhooks.EVENT_TYPES.index)


def _description(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or len(value) > 500):
        raise ApiError(400, "invalid_field", "'description' must be a string of at most 500 characters.",
                       {"field": "description"})
    return value
