"""Webhooks: endpoints registered once (POST/GET/DELETE /v1/webhooks) and the delivery log with redelivery."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.api.auth import current_tenant
from service.api.common import PageQuery, get_or_404, newest_first, page, read_query, request_fields
from service.api.context import get_session, get_settings
from service.api.openapi import operation
from service.core import webhooks
from service.core.config import Settings
from service.core.errors import ApiError, ErrorCode
from service.core.models import WebhookDelivery, WebhookEndpoint, new_id, utcnow
from service.core.shapes import WebhookDeliveryOut, WebhookEndpointDeleted, WebhookEndpointOut
from service.core.validation import Choice, RequestModel, Spec, Text, WebhookSecret, WebhookUrl, parse, per_settings
from service.core.webhook_signing import generate_secret

bp = Blueprint("webhooks", __name__, url_prefix="/v1/webhooks")


@dataclass(frozen=True, kw_only=True)
class _Events(Spec):
    """Event types an endpoint receives (all when absent)."""

    def read(self, value: Any, name: str) -> list[str]:
        if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
            raise ApiError(ErrorCode.INVALID_FIELD, "'events' must be a non-empty list of event types.",
                           {"field": "events"})
        unknown = sorted(set(value) - set(webhooks.EVENT_TYPES))
        if unknown:
            raise ApiError(ErrorCode.INVALID_FIELD, f"'events' has unknown event types: {', '.join(unknown)}.",
                           {"field": "events", "available": list(webhooks.EVENT_TYPES)})
        return sorted(set(value), key=webhooks.EVENT_TYPES.index)

    def schema(self, required: bool) -> dict[str, Any]:
        return {"type": "array", "minItems": 1, "items": {"enum": list(webhooks.EVENT_TYPES)}}


@per_settings
def endpoint_model(settings: Settings) -> type[RequestModel]:
    """POST /v1/webhooks: a receiver to register."""
    class Endpoint(RequestModel):
        url: Annotated[str, WebhookUrl(allow_cidrs=settings.webhook_allow_cidrs)]
        secret: Annotated[str | None, WebhookSecret()] = Field(
            None, description="whsec_<base64>; generated when absent (shown only once).")
        events: Annotated[list[str] | None, _Events()] = Field(
            None, description="Event types to receive; all when absent.")
        description: Annotated[str | None, Text(max_chars=500)] = None
        format: Annotated[str, Choice(choices=list(webhooks.FORMATS))] = Field(
            "vlq", description="vlq: every event, with its job or batch; openai: OpenAI's batch events "
                               "({object: event, id, type, created_at, data: {id}}), verifiable with the openai SDK.")
        extra_codes = ("missing_field",)
    return Endpoint


class DeliveryList(PageQuery):
    """GET /v1/webhooks/deliveries: a page, filtered by subject (`job_id` is its old name), endpoint, status."""

    job_id: Annotated[str | None, Text(max_chars=64)] = None
    subject_id: Annotated[str | None, Text(max_chars=64)] = None
    endpoint_id: Annotated[str | None, Text(max_chars=64)] = None
    status: Annotated[str | None, Choice(choices=["pending", "succeeded", "failed", "cancelled"])] = None


@bp.post("")
@operation("Register a webhook endpoint", body=endpoint_model, tags=("webhooks",), responses={201: "WebhookEndpoint"},
           errors=("too_many_webhook_endpoints",),
           links={"GetEndpoint": ("webhooks.get_endpoint", "endpoint_id"),
                  "DeleteEndpoint": ("webhooks.delete_endpoint", "endpoint_id")})
def create_endpoint() -> ResponseReturnValue:
    """Register a receiver; the answer is the only one that shows its secret."""
    fields, _ = request_fields()
    body = parse(endpoint_model(get_settings()), fields)
    if body.format == "openai" and not set(body.events or ()) <= set(webhooks.OPENAI_EVENT_TYPES):
        raise ApiError(ErrorCode.INVALID_FIELD, "An endpoint in OpenAI's format receives only "
                       f"{', '.join(webhooks.OPENAI_EVENT_TYPES)}.",
                       {"field": "events", "available": list(webhooks.OPENAI_EVENT_TYPES)})
    session = get_session()
    _check_endpoint_cap(session, get_settings().max_webhook_endpoints_per_tenant)
    endpoint = WebhookEndpoint(
        id=new_id("whep"), tenant=current_tenant(), url=body.url, secret=body.secret or generate_secret(),
        events=body.events, description=body.description, format=body.format, status="active", created_at=utcnow(),
    )
    session.add(endpoint)
    session.commit()
    body = WebhookEndpointOut.from_row(endpoint, with_secret=True).dump()
    return jsonify(body), 201, {"Location": f"/v1/webhooks/{endpoint.id}"}


def _check_endpoint_cap(session: Any, limit: int) -> None:
    """Refuse a new endpoint once the tenant has `limit` (deleted ones do not count); 0 is unlimited.

    Each endpoint turns every event into one more delivery through the pool all tenants share.
    """
    if not limit:
        return
    count = session.scalar(select(func.count()).select_from(WebhookEndpoint).where(
        WebhookEndpoint.tenant == current_tenant(), WebhookEndpoint.deleted_at.is_(None)))
    if count >= limit:
        raise ApiError(ErrorCode.TOO_MANY_WEBHOOK_ENDPOINTS,
                       f"This tenant already has {count} webhook endpoints, the limit; delete one first.",
                       {"limit": limit})


@bp.get("")
@operation("List webhook endpoints", query=PageQuery, tags=("webhooks",), responses={200: "WebhookEndpointList"})
def list_endpoints() -> ResponseReturnValue:
    rows, limit = newest_first(WebhookEndpoint, WebhookEndpoint.deleted_at.is_(None), query=read_query(PageQuery))
    return jsonify(page(rows, limit, WebhookEndpointOut.from_row))


@bp.get("/<id:endpoint_id>")
@operation("Get a webhook endpoint", tags=("webhooks",), responses={200: "WebhookEndpoint"})
def get_endpoint(endpoint_id: str) -> ResponseReturnValue:
    return jsonify(WebhookEndpointOut.from_row(_live_endpoint(endpoint_id)).dump())


@bp.delete("/<id:endpoint_id>")
@operation("Delete a webhook endpoint", tags=("webhooks",), responses={200: "WebhookEndpointDeleted"})
def delete_endpoint(endpoint_id: str) -> ResponseReturnValue:
    """Stop sending to an endpoint; its delivery log is kept, its pending deliveries are cancelled."""
    session = get_session()
    endpoint = _live_endpoint(endpoint_id)
    endpoint.deleted_at = utcnow()
    webhooks.cancel_pending(session, endpoint.id, "endpoint deleted")
    session.commit()
    return jsonify(WebhookEndpointDeleted(id=endpoint.id).dump())


@bp.get("/deliveries")
@operation("The delivery log", query=DeliveryList, tags=("webhooks",), responses={200: "WebhookDeliveryList"})
def list_deliveries() -> ResponseReturnValue:
    """The delivery log, newest first; filter by `job_id` (or any `subject_id`), `endpoint_id`, `status`."""
    query = read_query(DeliveryList)
    filters = ((WebhookDelivery.subject_id, query.job_id or query.subject_id),
               (WebhookDelivery.endpoint_id, query.endpoint_id), (WebhookDelivery.status, query.status))
    rows, limit = newest_first(WebhookDelivery, *(column == value for column, value in filters if value), query=query)
    logs = webhooks.attempts_of(get_session(), [row.id for row in rows])
    return jsonify(page(rows, limit, lambda row: WebhookDeliveryOut.from_row(row, logs[row.id])))


@bp.get("/deliveries/<delivery_id>")
@operation("Get a delivery and its attempt log", tags=("webhooks",), responses={200: "WebhookDelivery"})
def get_delivery(delivery_id: str) -> ResponseReturnValue:
    session = get_session()
    delivery = get_or_404(session, WebhookDelivery, delivery_id, "webhook delivery")
    return jsonify(_delivery(session, delivery))


@bp.post("/deliveries/<delivery_id>/redeliver")
@operation("Send a delivery again", tags=("webhooks",), responses={202: "WebhookDelivery"},
           errors=("webhook_endpoint_disabled",))
def redeliver(delivery_id: str) -> ResponseReturnValue:
    """Send a delivery again, under its original webhook-id, so the receiver can still deduplicate."""
    session = get_session()
    delivery = get_or_404(session, WebhookDelivery, delivery_id, "webhook delivery")
    if delivery.endpoint_id:
        endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
        if endpoint is None or endpoint.deleted_at is not None or endpoint.status != "active":
            raise ApiError(ErrorCode.WEBHOOK_ENDPOINT_DISABLED,
                           "The delivery's endpoint is disabled or deleted; register it again to send to it.",
                           {"endpoint_id": delivery.endpoint_id})
    webhooks.redeliver(session, delivery)
    session.commit()
    session.expire_all()
    delivery = get_or_404(session, WebhookDelivery, delivery_id, "webhook delivery")
    return jsonify(_delivery(session, delivery)), 202


def _live_endpoint(endpoint_id: str) -> WebhookEndpoint:
    endpoint = get_or_404(get_session(), WebhookEndpoint, endpoint_id, "webhook endpoint")
    if endpoint.deleted_at is not None:
        raise ApiError(ErrorCode.NOT_FOUND, f"No webhook endpoint with id {endpoint_id!r}.", {"id": endpoint_id})
    return endpoint


def _delivery(session: Session, delivery: WebhookDelivery) -> dict[str, Any]:
    """A delivery with its attempt log, as the API shows it."""
    return WebhookDeliveryOut.from_row(delivery, webhooks.attempts_of(session, [delivery.id])[delivery.id]).dump()
