"""The `/api/v1/chat` API: one base64 data-URL image and a prompt in JSON, numeric codes in every answer.

Success is `{"code": 0, "message": "success", "data": {...}}`; an error is `{"code", "message", "data": null}`
with a code from `_CODES` (the family's documented table), mapped from VLQ's own error codes in `render_error`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from service.api import health as health_api
from service.api.auth import public
from service.api.common import json_body
from service.api.compat import sync_chat
from service.api.compat.sync_chat import SYNC_ERRORS
from service.api.context import get_settings
from service.api.errors import as_api_error
from service.api.openapi import operation
from service.core import jobs
from service.core.config import Settings
from service.core.errors import ApiError, ErrorCode
from service.core.images import ACCEPTED_FORMATS, ImageData, decode_image_field
from service.core.models import utcnow
from service.core.requests import job_model
from service.core.shapes import SimpleChatAnswer, SimpleChatHealth
from service.core.validation import Choice, Number, RequestModel, Text, parse, per_settings

bp = Blueprint("simple_chat", __name__, url_prefix="/api/v1")

MAX_SIDE = 4096  # pixels on either side; larger images are refused with 4003
_DATA_URL_HEADER = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)[^,]*;base64,", re.I)

# VLQ's error code -> this family's code; anything not listed is 5000 (internal error).
_CODES = {
    "missing_field": 4000, "invalid_field": 4000, "invalid_json": 4000, "invalid_base64": 4000,
    "invalid_image": 4000, "unsupported_media_type": 4000, "bad_request": 4000, "request_too_large": 4003,
    "missing_data_url_header": 4001,
    "unsupported_image_format": 4002,
    "image_too_large": 4003, "image_too_many_pixels": 4003, "image_side_too_long": 4003,
    "unknown_model": 4000,  # an invalid `model` field (400); 4004 is the family's "model failed to load" (503)
    "model_unavailable": 4004, "model_loading": 4004, "no_worker": 4004,
    "sync_timeout": 5001, "inference_timeout": 5001,
    "out_of_memory": 5002,
}


@dataclass(frozen=True, kw_only=True)
class _DataUrl(ImageData):
    """The image as a data URL with its header (`_image`)."""

    def read(self, value: Any, name: str) -> bytes:
        return _image(value)

    def missing(self, name: str) -> ApiError:
        return ApiError(ErrorCode.MISSING_FIELD, f"'{name}' is required: a data:image/...;base64,... URL.",
                        {"field": name})


@per_settings
def chat_model(settings: Settings) -> type[RequestModel]:
    """The family's JSON body."""
    class SimpleChat(RequestModel):
        image: Annotated[bytes, _DataUrl()]
        prompt: Annotated[str, Text(max_chars=settings.max_prompt_chars)]
        max_tokens: Annotated[int, Number(low=64, high=1024, integer=True)] = 512
        temperature: Annotated[float, Number(low=0.0, high=2.0)] = 0.0
        model: Annotated[str, Choice(choices=sorted(settings.registry), code="unknown_model")] = settings.default_model
        extra_codes = ("missing_data_url_header", "image_side_too_long")
    return SimpleChat


@bp.post("/chat")
@operation("One image and a prompt, answered (numeric codes in every answer)", tags=("compatible",),
           body=chat_model, errors=SYNC_ERRORS, error_schema="SimpleChatAnswer", responses={200: "SimpleChatAnswer"})
def chat() -> ResponseReturnValue:
    settings = get_settings()
    body = json_body("Send a JSON object: {image, prompt, max_tokens, temperature}.")
    chat = parse(chat_model(settings), body)
    fields = parse(job_model(settings), chat.model_dump(exclude={"image"}))
    job_request = jobs.job_request(settings, fields, chat.image)
    info = job_request.image
    if max(info.width, info.height) > MAX_SIDE:
        raise ApiError(ErrorCode.IMAGE_SIDE_TOO_LONG,
                       f"The image is {info.width}x{info.height}; neither side may exceed {MAX_SIDE} pixels.",
                       {"width": info.width, "height": info.height, "limit": MAX_SIDE})
    return jsonify(SimpleChatAnswer.of(sync_chat.answer(job_request, chat.image)).dump())


def _image(value: Any) -> bytes:
    """The image from a data URL with its header; 4001 without one, 4002 when it names a format not accepted."""
    if not isinstance(value, str) or not value.strip():
        raise ApiError(ErrorCode.MISSING_FIELD, "'image' is required: a data:image/...;base64,... URL.",
                       {"field": "image"})
    header = _DATA_URL_HEADER.match(value.strip())
    if header is None:
        raise ApiError(ErrorCode.MISSING_DATA_URL_HEADER,
                       "'image' must start with a data URL header such as data:image/png;base64,", {"field": "image"})
    if header.group("mime").lower() not in (*ACCEPTED_FORMATS.values(), "image/jpg"):
        raise ApiError(ErrorCode.UNSUPPORTED_IMAGE_FORMAT,
                       f"{header.group('mime')} is not accepted; send JPEG, PNG or WebP.",
                       {"format": header.group("mime"), "accepted": sorted(ACCEPTED_FORMATS)})
    return decode_image_field(value)


@bp.get("/health")
@public
@operation("Ready when /health is: the database, Redis and a live model", tags=("compatible",),
           responses={200: "SimpleChatHealth", 503: {"description": "Loading or unavailable.", "content": {
               "application/json": {"schema": {"$ref": "#/components/schemas/SimpleChatHealth"}}}}},
           error_schema="SimpleChatAnswer")
def health() -> ResponseReturnValue:
    """{status: ok} exactly when /health is healthy; otherwise 503 with status loading or unavailable.

    `model` is the default model while a worker serves it, else a model one serves (send it as `model`).
    """
    readiness = health_api.readiness()
    default = get_settings().default_model
    states: dict[str, set[str]] = {}
    for worker in readiness.workers:
        for name, state in worker.get("models", {}).items():
            states.setdefault(name, set()).add(state.get("status"))
    live = sorted(name for name, seen in states.items() if "live" in seen)
    model = default if default in live or not live else live[0]
    loading = any(seen & {"loading", "pulling"} for seen in states.values())
    status = "ok" if not readiness.missing else "loading" if loading else "unavailable"
    body = SimpleChatHealth(status=status, model=model, multimodal=True, cpu_optimized=True, timestamp=utcnow())
    return jsonify(body.dump()), 200 if status == "ok" else 503


@bp.errorhandler(Exception)
def render_error(exc: Exception) -> ResponseReturnValue:
    error = as_api_error(exc)
    body = SimpleChatAnswer(code=_CODES.get(error.code, 5000), message=error.message, data=None)
    return jsonify(body.dump()), error.status, error.headers
