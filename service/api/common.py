"""Helpers every blueprint shares: reading request fields, tenant-scoped get-or-404 and listing, cursor pagination,
job requests."""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from flask import request
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.routing import BaseConverter

from service.api.auth import current_tenant
from service.api.context import get_session
from service.core import jobs
from service.core.config import Settings
from service.core.errors import ApiError
from service.core.fields import Bool, Choice, Form, Int, JsonObject, Text, WebhookSecret, WebhookUrl
from service.core.images import decode_image_field, inspect_image
from service.core.models import Priority, TenantOwned
from service.core.shapes import Page, Shape

T = TypeVar("T")


class IdConverter(BaseConverter):
    """`<id:name>`: a prefixed id (`whep_...`), so a sibling route's word (`/v1/webhooks/deliveries`) never matches."""

    regex = r"[A-Za-z]+_[^/]+"


class NameConverter(BaseConverter):
    """`<name:model>`: a registry name, which never holds ':' (Google's `models/{model}:generateContent` does)."""

    regex = r"[^/:]+"


def request_fields() -> tuple[dict[str, Any], dict[str, Any]]:
    """(fields, files) from a JSON body or a multipart/urlencoded form; anything else is a 415."""
    if request.is_json:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_json", "The body is not a JSON object.")
        return body, {}
    if request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return request.form.to_dict(), request.files.to_dict()
    raise ApiError(415, "unsupported_media_type",
                   "Send application/json or multipart/form-data.", {"content_type": request.mimetype or None})


NO_CACHE = Bool(name="no_cache", description="Run even if an identical request already has a result.")


def image_bytes_field(fields: dict[str, Any], files: dict[str, Any]) -> bytes:
    """The `image`: an uploaded file, or a data URL / base64 string."""
    upload = files.get("image")
    if upload is not None:
        return upload.read()
    return decode_image_field(fields.get("image"))


def job_request_from(settings: Settings, fields: dict[str, Any], image_bytes: bytes, *,
                     messages: list[dict[str, Any]] | None = None, stream: bool = False) -> jobs.JobRequest:
    """Validate a job's fields and image (and conversation) into a JobRequest; interactive unless it says bulk."""
    task = jobs.resolve_task(settings, fields, messages)
    info = inspect_image(image_bytes, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
    form = options_form(settings, priority=Priority.INTERACTIVE)
    return jobs.JobRequest(
        task=task,
        priority=form.read("priority", fields),
        metadata=form.read("metadata", fields),
        image_sha256=hashlib.sha256(image_bytes).hexdigest(),
        image=info,
        no_cache=NO_CACHE.read(fields),
        stream=stream,
        **webhook_options(settings, fields),
    )


def options_form(settings: Settings, *, priority: Priority) -> Form:
    """The options a job and a batch share: priority, metadata and their own webhook."""
    return Form((
        Choice(name="priority", choices=[p.value for p in Priority], default=priority.value,
               description="Interactive queues are always read before bulk ones."),
        JsonObject(name="metadata", max_bytes=settings.max_metadata_bytes, description="Returned untouched."),
        WebhookUrl(name="webhook_url", allow_cidrs=settings.egress_allow_cidrs,
                   description="Receives the ending event, signed (Standard Webhooks)."),
        WebhookSecret(name="webhook_secret", description="Signs those deliveries (default: the server's)."),
    ), extra_codes=("missing_field",))


def idempotency_key() -> str | None:
    """The request's Idempotency-Key header (jobs and batches), if any."""
    key = request.headers.get("Idempotency-Key") or None
    if key is not None and (len(key) > 255 or "\x00" in key):
        raise ApiError(400, "invalid_header", "Idempotency-Key must be at most 255 characters, without NUL.")
    return key


def get_or_404(session: Session, model: type[T], ident: str, kind: str) -> T:
    """The row with this id, if the caller's tenant owns it; another tenant's row is a 404, as if it did not exist."""
    row = owned_or_none(session, model, ident)
    if row is None:
        raise ApiError(404, "not_found", f"No {kind} with id {ident!r}.", {"id": ident})
    return row


def owned_or_none(session: Session, model: type[T], ident: str) -> T | None:
    """The row with this id if the caller's tenant owns it (any row of a model that has no tenant), else None."""
    row = session.get(model, ident)
    if row is None or (isinstance(row, TenantOwned) and row.tenant != current_tenant()):
        return None
    return row


def tenant_scope(model: Any) -> list[Any]:
    """The WHERE conditions that keep a query on `model` inside the caller's tenant (none for untenanted models)."""
    return [model.tenant == current_tenant()] if issubclass(model, TenantOwned) else []


def page_form(*, max_limit: int = 100) -> Form:
    """The query of every list endpoint."""
    return Form((
        Int(name="limit", default=20, low=1, high=max_limit),
        Text(name="cursor", max_chars=64, required=False, description="The previous page's next_cursor."),
        # `after` is OpenAI's name for the cursor, so its SDK's list pagination works unchanged.
        Text(name="after", max_chars=64, required=False, description="The same as cursor (OpenAI's name)."),
    ))


def page_params(*, max_limit: int = 100) -> tuple[int, str | None]:
    """(limit, cursor) from the query string."""
    form, args = page_form(max_limit=max_limit), request.args.to_dict()
    cursor, after = form.read("cursor", args), form.read("after", args)  # both checked, even when both are given
    return form.read("limit", args), cursor or after


def newest_first(model: Any, *conditions: Any, max_limit: int = 100) -> tuple[list[Any], int]:
    """One page of the caller's `model` rows matching `conditions`, newest first (ids sort by time), after the cursor.

    Returns (rows, limit); rows holds one extra row when there are more, which `page` uses and drops.
    """
    limit, cursor = page_params(max_limit=max_limit)
    query = select(model).where(*conditions, *tenant_scope(model))
    if cursor:
        query = query.where(model.id < cursor)
    return list(get_session().scalars(query.order_by(model.id.desc()).limit(limit + 1))), limit


def page(rows: Sequence[T], limit: int, render: Callable[[T], Shape]) -> dict[str, Any]:
    """A list response (the `Page` shape) from up to limit+1 rows: the extra row only tells whether there is more."""
    shown = rows[:limit]
    has_more = len(rows) > limit
    return Page[Any](
        data=[render(row) for row in shown],
        has_more=has_more,
        next_cursor=shown[-1].id if has_more and shown else None,
        first_id=shown[0].id if shown else None,
        last_id=shown[-1].id if shown else None,
    ).dump()


def webhook_options(settings: Settings, fields: dict[str, Any]) -> dict[str, str | None]:
    """A job's or batch's own webhook; without a webhook_secret it is signed with the configured one."""
    form = options_form(settings, priority=Priority.INTERACTIVE)
    url = form.read("webhook_url", fields)
    secret = form.read("webhook_secret", fields)
    if url is None:
        if secret is not None:
            raise ApiError(400, "missing_field", "'webhook_secret' needs a 'webhook_url'.", {"field": "webhook_url"})
        return {}
    secret = secret or settings.webhook_secret or None
    if secret is None:
        raise ApiError(400, "missing_field", "'webhook_secret' is required: this server has no default webhook_secret.",
                       {"field": "webhook_secret"})
    return {"webhook_url": url, "webhook_secret": secret}
