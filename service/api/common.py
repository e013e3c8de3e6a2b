"""Helpers every blueprint shares: reading request fields, get-or-404, cursor pagination, job requests."""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from flask import request
from sqlalchemy import select
from sqlalchemy.orm import Session

from service import jobs
from service.config import Settings
from service.db import get_db, get_session
from service.errors import ApiError
from service.fields import (
    bool_option,
    choice_option,
    int_option,
    json_object_option,
    webhook_secret_option,
    webhook_url_option,
)
from service.images import decode_image_field, inspect_image
from service.models import Job, JobStatus, Priority

T = TypeVar("T")


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
    return jobs.JobRequest(
        task=task,
        priority=priority_option(fields, default=Priority.INTERACTIVE),
        metadata=json_object_option(fields, "metadata", max_bytes=settings.max_metadata_bytes),
        image_sha256=hashlib.sha256(image_bytes).hexdigest(),
        image=info,
        no_cache=bool_option(fields, "no_cache", default=False),
        stream=stream,
        **webhook_options(settings, fields),
    )


def job_ended(job_id: str) -> bool:
    """Whether the job has reached a terminal state, read in a short transaction of its own (so it sees new writes)."""
    with get_db().session() as session:
        status = session.scalar(select(Job.status).where(Job.id == job_id))
    return status is None or JobStatus(status).terminal


def priority_option(fields: dict[str, Any], *, default: Priority) -> str:
    return choice_option(fields, "priority", choices=[p.value for p in Priority], default=default.value)


def get_or_404(session: Session, model: type[T], ident: str, kind: str) -> T:
    row = session.get(model, ident)
    if row is None:
        raise ApiError(404, "not_found", f"No {kind} with id {ident!r}.", {"id": ident})
    return row


def page_params(*, default_limit: int = 20, max_limit: int = 100) -> tuple[int, str | None]:
    """(limit, cursor) from the query string."""
    limit = int_option(request.args.to_dict(), "limit", default=default_limit, low=1, high=max_limit)
    # `after` is OpenAI's name for the cursor, so its SDK's list pagination works unchanged.
    return limit, request.args.get("cursor") or request.args.get("after") or None


def newest_first(model: Any, *conditions: Any, max_limit: int = 100) -> tuple[list[Any], int]:
    """One page of `model` rows matching `conditions`, newest first (ids sort by time), after the cursor.

    Returns (rows, limit); rows holds one extra row when there are more, which `page` uses and drops.
    """
    limit, cursor = page_params(max_limit=max_limit)
    query = select(model).where(*conditions)
    if cursor:
        query = query.where(model.id < cursor)
    return list(get_session().scalars(query.order_by(model.id.desc()).limit(limit + 1))), limit


def page(rows: Sequence[T], limit: int, render: Callable[[T], dict[str, Any]]) -> dict[str, Any]:
    """A list response from up to limit+1 rows: the extra row only tells whether there is more."""
    shown = rows[:limit]
    has_more = len(rows) > limit
    return {
        "object": "list",
        "data": [render(row) for row in shown],
        "has_more": has_more,
        "next_cursor": shown[-1].id if has_more and shown else None,
        "first_id": shown[0].id if shown else None,
        "last_id": shown[-1].id if shown else None,
    }


def webhook_options(settings: Settings, fields: dict[str, Any]) -> dict[str, str | None]:
    """A job's or batch's own webhook; without a webhook_secret it is signed with the configured one."""
    url = webhook_url_option(fields, "webhook_url", settings)
    secret = webhook_secret_option(fields, "webhook_secret")
    if url is None:
        if secret is not None:
            raise ApiError(400, "missing_field", "'webhook_secret' needs a 'webhook_url'.", {"field": "webhook_url"})
        return {}
    secret = secret or settings.webhook_secret or None
    if secret is None:
        raise ApiError(400, "missing_field", "'webhook_secret' is required: this server has no default webhook_secret.",
                       {"field": "webhook_secret"})
    return {"webhook_url": url, "webhook_secret": secret}
