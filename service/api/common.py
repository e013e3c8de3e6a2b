"""Helpers every blueprint shares: reading request fields, get-or-404, cursor pagination."""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from flask import request
from sqlalchemy.orm import Session

from service import egress
from service.config import Settings
from service.errors import ApiError
from service.webhook_signing import secret_key

T = TypeVar("T")
_MISSING = object()


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


def get_or_404(session: Session, model: type[T], ident: str, kind: str) -> T:
    row = session.get(model, ident)
    if row is None:
        raise ApiError(404, "not_found", f"No {kind} with id {ident!r}.", {"id": ident})
    return row


def required_text(fields: dict[str, Any], name: str, *, max_chars: int) -> str:
    value = fields.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ApiError(400, "missing_field", f"'{name}' is required.", {"field": name})
    if not isinstance(value, str):
        raise _invalid(name, "must be a string")
    if len(value) > max_chars:
        raise _invalid(name, f"is {len(value)} characters; the limit is {max_chars}")
    return value


def int_option(fields: dict[str, Any], name: str, *, default: int, low: int, high: int) -> int:
    return _bounded(fields, name, int, default, low, high)


def float_option(fields: dict[str, Any], name: str, *, default: float, low: float, high: float) -> float:
    return _bounded(fields, name, float, default, low, high)


def bool_option(fields: dict[str, Any], name: str, *, default: bool) -> bool:
    value = fields.get(name, _MISSING)
    if value is _MISSING or value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "1", "false", "0"}:
        return value.lower() in {"true", "1"}
    raise _invalid(name, "must be true or false")


def choice_option(fields: dict[str, Any], name: str, *, choices: Sequence[str], default: str) -> str:
    value = fields.get(name, _MISSING)
    if value is _MISSING or value is None:
        return default
    if value not in choices:
        raise _invalid(name, f"must be one of {', '.join(choices)}")
    return value


def json_object_option(fields: dict[str, Any], name: str, *, max_bytes: int) -> dict[str, Any] | None:
    """A JSON object field; multipart forms carry it as a JSON string."""
    value = fields.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise _invalid(name, "is not valid JSON") from None
    if not isinstance(value, dict):
        raise _invalid(name, "must be a JSON object")
    if len(json.dumps(value)) > max_bytes:
        raise _invalid(name, f"is larger than {max_bytes} bytes as JSON")
    return value


def webhook_url_option(fields: dict[str, Any], name: str, settings: Settings) -> str | None:
    """An http(s) URL that resolves to an address outbound requests may reach (the SSRF guard, at submit time)."""
    value = fields.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 2048:
        raise ApiError(400, "invalid_webhook_url", f"'{name}' must be an http(s) URL of at most 2048 characters.",
                       {"field": name})
    try:
        egress.resolve(value, settings.egress_allow_cidrs)
    except egress.EgressDenied as exc:
        code = "webhook_url_forbidden" if exc.code == "forbidden_address" else "invalid_webhook_url"
        raise ApiError(400, code, f"'{name}' is not accepted: {exc}.", {"field": name, "reason": exc.code}) from None
    return value


def webhook_secret_option(fields: dict[str, Any], name: str) -> str | None:
    """A Standard Webhooks secret, `whsec_<base64>`."""
    value = fields.get(name)
    if value is None or value == "":
        return None
    try:
        secret_key(value)
    except ValueError as exc:
        raise _invalid(name, str(exc)) from None
    return value


def page_params(*, default_limit: int = 20, max_limit: int = 100) -> tuple[int, str | None]:
    """(limit, cursor) from the query string."""
    limit = int_option(request.args.to_dict(), "limit", default=default_limit, low=1, high=max_limit)
    return limit, request.args.get("cursor") or None


def page(
    rows: Sequence[T], limit: int, render: Callable[[T], dict[str, Any]], key: Callable[[T], str]
) -> dict[str, Any]:
    """A list response from up to limit+1 rows: the extra row only tells whether there is more."""
    shown = rows[:limit]
    has_more = len(rows) > limit
    return {
        "object": "list",
        "data": [render(row) for row in shown],
        "has_more": has_more,
        "next_cursor": key(shown[-1]) if has_more and shown else None,
    }


def _bounded(fields: dict[str, Any], name: str, kind: type, default: Any, low: Any, high: Any) -> Any:
    value = fields.get(name, _MISSING)
    if value is _MISSING or value is None or value == "":
        return default
    if isinstance(value, bool):
        raise _invalid(name, f"must be a number between {low} and {high}")
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise _invalid(name, f"must be a number between {low} and {high}") from None
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise _invalid(name, "must be a whole number")
    if not low <= number <= high:  # also refuses NaN
        raise _invalid(name, f"must be between {low} and {high}")
    return number


def _invalid(name: str, problem: str, **details: Any) -> ApiError:
    return ApiError(400, "invalid_field", f"'{name}' {problem}.", {"field": name, **details})
