"""Validating request fields: one message shape for every bad value ({"field": name} in details)."""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from service import egress
from service.config import Settings
from service.errors import ApiError
from service.webhook_signing import secret_key

_MISSING = object()


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
