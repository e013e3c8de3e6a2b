"""OpenAI's file expiry: `expires_after` on an upload and `output_expires_after` on a batch (its output and error
files), both `{"anchor": "created_at", "seconds": N}` with N in OpenAI's bounds. A file past its `expires_at` answers
404 at once, as a deleted one does, and the retention pass (service.core.retention) deletes it.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

from sqlalchemy import ColumnElement, or_

from service.core import json_input
from service.core.models import File, utcnow
from service.core.validation import Spec, invalid, read_json

MIN_SECONDS, MAX_SECONDS = 3600, 30 * 86400  # OpenAI's bounds: an hour to 30 days
ANCHORS = ("created_at",)


@dataclass(frozen=True, kw_only=True)
class ExpiresAfter(Spec):
    """`{"anchor": "created_at", "seconds": N}`, read as N. A form sends it as `name[anchor]` and `name[seconds]`
    fields (the openai SDK's encoding, gathered by `nest_form_fields`) or as JSON text."""

    blank: ClassVar[bool] = True

    def read(self, value: Any, name: str) -> int:
        value = read_json(value, name, json_input.MAX_DEPTH)
        if not isinstance(value, dict):
            raise invalid(name, "must be an object with 'anchor' and 'seconds'")
        unknown = sorted(set(value) - {"anchor", "seconds"})
        if unknown:
            raise invalid(f"{name}.{unknown[0]}", "is not a field of it (anchor and seconds are)")
        if value.get("anchor") not in ANCHORS:
            raise invalid(f"{name}.anchor", "must be created_at")
        seconds = value.get("seconds")
        if isinstance(seconds, str) and seconds.strip().isdigit():  # a form's text
            seconds = int(seconds)
        if isinstance(seconds, bool) or not isinstance(seconds, int) or not MIN_SECONDS <= seconds <= MAX_SECONDS:
            raise invalid(f"{name}.seconds", f"must be a whole number of seconds from {MIN_SECONDS} to {MAX_SECONDS}")
        return seconds

    def schema(self, required: bool) -> dict[str, Any]:
        return {"type": "object", "required": ["anchor", "seconds"], "additionalProperties": False, "properties": {
            "anchor": {"enum": list(ANCHORS)},
            "seconds": {"type": "integer", "minimum": MIN_SECONDS, "maximum": MAX_SECONDS}}}

    def form_schema(self, required: bool) -> dict[str, Any]:
        return {"type": "string", "contentMediaType": "application/json",
                "description": "JSON text, or the fields expires_after[anchor] and expires_after[seconds]."}


def nest_form_fields(values: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A form's `name[key]` fields gathered into `values[name]` = {key: ...} (how the openai SDK sends an object)."""
    prefix = f"{name}["
    nested = {key[len(prefix):-1]: value for key, value in values.items()
              if key.startswith(prefix) and key.endswith("]")}
    if not nested:
        return dict(values)
    rest = {key: value for key, value in values.items() if not (key.startswith(prefix) and key.endswith("]"))}
    return {**rest, name: nested}


def expires_at(created_at: datetime, seconds: int | None) -> datetime | None:
    return None if seconds is None else created_at + timedelta(seconds=seconds)


def expired(file: File) -> bool:
    """Whether the file is past its own expiry (it then answers 404, as a deleted file does)."""
    return file.expires_at is not None and file.expires_at <= utcnow()


def live(now: datetime) -> ColumnElement[bool]:
    """Files not past their expiry: the only ones the API shows."""
    return or_(File.expires_at.is_(None), File.expires_at > now)
