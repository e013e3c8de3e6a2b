"""Helpers every blueprint shares: reading request fields and queries, tenant-scoped get-or-404 and listing, cursor
pagination."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

from flask import request
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.routing import BaseConverter

from service.api.auth import current_tenant
from service.api.context import get_session, get_settings
from service.core import json_input
from service.core.errors import ApiError, ErrorCode
from service.core.models import TenantOwned
from service.core.shapes import Page, Shape
from service.core.validation import Number, RequestModel, Text, parse

T = TypeVar("T")
M = TypeVar("M", bound=RequestModel)


class IdConverter(BaseConverter):
    """`<id:name>`: a prefixed id (`whep_...`), so a sibling route's word (`/v1/webhooks/deliveries`) never matches."""

    regex = r"[A-Za-z]+_[^/]+"


class NameConverter(BaseConverter):
    """`<name:model>`: a registry name, which never holds ':' (Google's `models/{model}:generateContent` does)."""

    regex = r"[^/:]+"


def json_body(message: str = "The body is not a JSON object.") -> dict[str, Any]:
    """The request's JSON object, read and checked here for every JSON endpoint (json_input: depth, surrogates,
    non-finite numbers): not JSON, not an object, or nested too deep is 400 invalid_json with `message` (or why);
    an unstorable value inside is 400 invalid_field naming where it is."""
    limit = get_settings().max_json_depth
    try:
        body = json_input.loads(request.get_data(cache=True), limit) if request.is_json else None
    except json_input.TooDeep as exc:
        raise ApiError(ErrorCode.INVALID_JSON, f"The body {exc}.", {"max_depth": limit}) from None
    except ValueError:  # UnicodeDecodeError, the parser's own errors and NaN/Infinity are all ValueErrors
        body = None
    if not isinstance(body, dict):
        raise ApiError(ErrorCode.INVALID_JSON, message)
    found = json_input.fault(body, limit)
    if found is None:
        return body
    if found.too_deep:
        raise ApiError(ErrorCode.INVALID_JSON, f"The body {found.problem}.", {"max_depth": limit})
    if not found.path:  # a top-level key
        raise ApiError(ErrorCode.INVALID_JSON, f"The body {found.problem}.")
    raise ApiError(ErrorCode.INVALID_FIELD, f"'{found.path}' {found.problem}.", {"field": found.path})


def request_fields() -> tuple[dict[str, Any], dict[str, Any]]:
    """(fields, files) from a JSON body (json_body) or a multipart/urlencoded form; anything else is a 415."""
    if request.is_json:
        return json_body(), {}
    if request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        # A file field sent more than once (several images in one job) reads as the list of its files.
        files = {name: items if len(items) > 1 else items[0] for name, items in request.files.lists()}
        return request.form.to_dict(), files
    raise ApiError(ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                   "Send application/json or multipart/form-data.", {"content_type": request.mimetype or None})


def request_values() -> dict[str, Any]:
    """A JSON body's fields, or a form's fields and files (a file wins over a text field of its name)."""
    fields, files = request_fields()
    return {**fields, **files}


def read_query(model: type[M]) -> M:
    """The query string read into `model`."""
    return parse(model, request.args.to_dict())


def idempotency_key() -> str | None:
    """The request's Idempotency-Key header (jobs and batches), if any."""
    key = request.headers.get("Idempotency-Key") or None
    if key is not None and (len(key) > 255 or "\x00" in key):
        raise ApiError(ErrorCode.INVALID_HEADER, "Idempotency-Key must be at most 255 characters, without NUL.")
    return key


def get_or_404(session: Session, model: type[T], ident: str, kind: str) -> T:
    """The row with this id, if the caller's tenant owns it; another tenant's row is a 404, as if it did not exist."""
    row = owned_or_none(session, model, ident)
    if row is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"No {kind} with id {ident!r}.", {"id": ident})
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


class PageQuery(RequestModel):
    """The query of every list endpoint."""

    limit: Annotated[int, Number(low=1, high=100, integer=True)] = 20
    cursor: Annotated[str | None, Text(max_chars=64)] = Field(None, description="The previous page's next_cursor.")
    # `after` is OpenAI's name for the cursor, so its SDK's list pagination works unchanged.
    after: Annotated[str | None, Text(max_chars=64)] = Field(None, description="The same as cursor (OpenAI's name).")


def newest_first(model: Any, *conditions: Any, query: PageQuery) -> tuple[list[Any], int]:
    """One page of the caller's `model` rows matching `conditions`, newest first (ids sort by time), after the cursor.

    Returns (rows, limit); rows holds one extra row when there are more, which `page` uses and drops.
    """
    limit, cursor = query.limit, query.cursor or query.after
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

