"""Google's generateContent: POST /v1/models/{model}:generateContent (and under /v1beta, where Google's SDKs go).

`contents` (user and model turns of text and inline_data parts), `system_instruction` and
`generation_config` in; `candidates` and `usageMetadata` out. The REST API takes snake_case and camelCase
field names alike, and so does this. Errors are `{"error": {"code", "message", "status"}}`, mapped in
`render_error` alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from pydantic import AliasChoices, Field

from service.api.common import json_body
from service.api.compat import sync_chat
from service.api.compat.sync_chat import SYNC_ERRORS
from service.api.context import get_settings
from service.api.errors import as_api_error
from service.api.openapi import operation
from service.core import jobs
from service.core.conversation import ImageRef, Turn, build
from service.core.errors import ApiError, ErrorCode
from service.core.images import ACCEPTED_FORMATS, decode_image_field
from service.core.requests import job_model
from service.core.shapes import GenerateContentResponse, GoogleErrorOut
from service.core.validation import RequestModel, Spec, parse

bp = Blueprint("generate_content", __name__)

_ROLES = {"user": "user", "model": "assistant"}
_STATUS_NAMES = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED",
                 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


@dataclass(frozen=True, kw_only=True)
class _Contents(Spec):
    """Google's `contents`: user and model turns of text and inline_data parts, read as Turns."""

    codes: ClassVar[tuple[str, ...]] = ("missing_field", "invalid_field", "invalid_base64", "invalid_image",
                                        "unsupported_image_format", "image_too_many_pixels", "image_too_large")

    def read(self, value: Any, name: str) -> list[Turn]:
        if not isinstance(value, list) or not value:
            raise self.missing(name)
        return [_turn(content, f"{name}[{index}]") for index, content in enumerate(value)]

    def missing(self, name: str) -> ApiError:
        return ApiError(ErrorCode.MISSING_FIELD, f"'{name}' must be a non-empty list.", {"field": name})

    def schema(self, required: bool) -> dict[str, Any]:
        part = {"type": "object", "properties": {"text": {"type": "string"}, "inline_data": {
            "type": "object", "required": ["data"],
            "properties": {"mime_type": {"type": "string"}, "data": {"type": "string"}}}}}
        content = {"type": "object", "required": ["parts"], "properties": {
            "role": {"enum": ["user", "model"]}, "parts": {"type": "array", "items": part}}}
        return {"type": "array", "minItems": 1, "items": content}


@dataclass(frozen=True, kw_only=True)
class _SystemInstruction(Spec):
    """{parts: [{text}]}, read as the system turn."""

    def read(self, value: Any, name: str) -> Turn:
        return _turn(value, name, role="system")

    def schema(self, required: bool) -> dict[str, Any]:
        return {"type": "object"}


@dataclass(frozen=True, kw_only=True)
class _Object(Spec):
    def read(self, value: Any, name: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ApiError(ErrorCode.INVALID_FIELD, f"'{name}' must be an object.", {"field": name})
        return value

    def schema(self, required: bool) -> dict[str, Any]:
        return {"type": "object"}


class Content(RequestModel):
    """The request body; snake_case names are shown, and camelCase ones are accepted too."""

    contents: Annotated[list[Turn], _Contents()] = Field(description="One image in all, in a user turn.")
    system_instruction: Annotated[Turn | None, _SystemInstruction()] = Field(
        None, validation_alias=AliasChoices("system_instruction", "systemInstruction"),
        description="{parts: [{text}]}: the system turn.")
    generation_config: Annotated[dict[str, Any], _Object()] = Field(
        default_factory=dict, validation_alias=AliasChoices("generation_config", "generationConfig"),
        description="temperature, top_p, max_output_tokens (or their camelCase names), seed.")


@bp.post("/v1/models/<model>:generateContent")
@bp.post("/v1beta/models/<model>:generateContent")
@operation("Google-compatible generateContent (waits for the answer)", tags=("compatible",), body=Content,
           errors=SYNC_ERRORS, error_schema="GoogleError", responses={200: "GenerateContentResponse"})
def generate_content(model: str) -> ResponseReturnValue:
    settings = get_settings()
    if model not in settings.registry:
        raise ApiError(ErrorCode.NOT_FOUND, f"models/{model} is not found; available: {', '.join(settings.registry)}.",
                       {"model": model})
    body = json_body("The body must be a JSON object with 'contents'.")
    content = parse(Content, body)
    turns = [content.system_instruction, *content.contents] if content.system_instruction else content.contents
    conversation = build(turns, _inline_image, max_chars=settings.max_prompt_chars)
    config = content.generation_config
    fields = {"prompt": conversation.prompt, "model": model, "temperature": config.get("temperature"),
              "max_tokens": _field(config, "max_output_tokens", "maxOutputTokens"),
              "top_p": _field(config, "top_p", "topP"), "seed": config.get("seed")}
    job_request = jobs.job_request(settings, parse(job_model(settings), fields), conversation.image,
                                   messages=conversation.messages)
    return jsonify(GenerateContentResponse.of(sync_chat.answer(job_request, conversation.image)).dump())


def _field(mapping: dict[str, Any], snake: str, camel: str) -> Any:
    return mapping.get(snake, mapping.get(camel))


def _turn(content: Any, where: str, role: str | None = None) -> Turn:
    """One Content ({role, parts}) as a Turn: text parts, and inline_data images kept for `build` to decode."""
    if not isinstance(content, dict) or not isinstance(content.get("parts"), list):
        raise ApiError(ErrorCode.INVALID_FIELD, f"{where} must be an object with a 'parts' list.", {"field": where})
    named = content.get("role", "user")
    role = role or (_ROLES.get(named) if isinstance(named, str) else None)  # a non-string role is refused, not a 500
    if role is None:
        raise ApiError(ErrorCode.INVALID_FIELD, f"{where}.role must be 'user' or 'model'.", {"field": f"{where}.role"})
    parts: list[str | ImageRef] = []
    for index, part in enumerate(content["parts"]):
        inline = _field(part, "inline_data", "inlineData") if isinstance(part, dict) else None
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            parts.append(part["text"])
        elif isinstance(inline, dict):
            parts.append(ImageRef(inline))
        else:
            raise ApiError(ErrorCode.INVALID_FIELD, f"{where}.parts[{index}] must hold 'text' or 'inline_data'.",
                           {"field": f"{where}.parts[{index}]"})
    return Turn(role, parts, where=where)


def _inline_image(inline: dict[str, Any], where: str) -> bytes:
    mime = _field(inline, "mime_type", "mimeType")
    if mime not in ACCEPTED_FORMATS.values():
        raise ApiError(ErrorCode.UNSUPPORTED_IMAGE_FORMAT,
                       f"inline_data mime_type {mime!r} is not accepted; send image/jpeg, image/png or image/webp.",
                       {"field": where, "accepted": sorted(ACCEPTED_FORMATS)})
    return decode_image_field(inline.get("data"), field=f"{where}.inline_data.data")


@bp.errorhandler(Exception)
def render_error(exc: Exception) -> ResponseReturnValue:
    """Google's error shape. Its APIs answer an oversized or unsupported body with 400, so 413 and 415 become 400."""
    error = as_api_error(exc)
    status = 400 if error.status in (413, 415) else error.status
    name = _STATUS_NAMES.get(status, "INVALID_ARGUMENT" if status < 500 else "INTERNAL")
    body = GoogleErrorOut.model_validate({"error": {"code": status, "message": error.message, "status": name}})
    return jsonify(body.dump()), status, error.headers
