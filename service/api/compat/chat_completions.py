"""OpenAI-compatible chat: POST /v1/chat/completions (JSON, streamed or not, or multipart) and GET /v1/models.

Scripts written for OpenAI's API work unchanged with `base_url` pointed here. Each request is a job at
interactive priority that the caller waits for (see `service.api.compat.sync_chat`); errors come in OpenAI's shape,
`{"error": {"message", "type", "param", "code"}}`, mapped from VLQ's codes in `render_error` alone.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from flask import Blueprint, Response, jsonify, request, stream_with_context
from flask.typing import ResponseReturnValue
from pydantic import Field

from service.api.common import json_body, request_values
from service.api.compat import sync_chat
from service.api.compat.sync_chat import SYNC_ERRORS
from service.api.context import get_settings
from service.api.errors import as_api_error
from service.api.openapi import JSON, MULTIPART, operation
from service.core import jobs
from service.core.config import Settings
from service.core.errors import ApiError, ErrorCode
from service.core.images import ImageData
from service.core.models import Job
from service.core.openai_format import parse_chat_request
from service.core.requests import generation_model, job_model
from service.core.shapes import ChatCompletionChunk, ChatCompletionOut, ModelOut, ObjectList, OpenAIErrorOut, Shape
from service.core.shapes.compat import finish_reason
from service.core.structured import ResponseFormat
from service.core.validation import Bool, JsonObject, Number, RequestModel, Spec, Text, combine, parse, per_settings

bp = Blueprint("chat_completions", __name__, url_prefix="/v1")



@dataclass(frozen=True, kw_only=True)
class _Messages(Spec):
    """OpenAI's `messages`: a non-empty list, built into the conversation by service.core.openai_format."""

    codes: ClassVar[tuple[str, ...]] = (
        "missing_field", "invalid_field", "invalid_request", "unsupported_image_url", "invalid_image_url",
        "image_url_forbidden", "image_url_unreachable", "image_url_busy", "invalid_base64", "invalid_image",
        "unsupported_image_format", "image_too_many_pixels", "image_too_large")

    def read(self, value: Any, name: str) -> list[Any]:
        if not isinstance(value, list) or not value:
            raise self.missing(name)
        return value

    def missing(self, name: str) -> ApiError:
        return ApiError(ErrorCode.MISSING_FIELD, f"'{name}' must be a non-empty list.", {"field": name})

    def schema(self, required: bool) -> dict[str, Any]:
        part = {"type": "object", "required": ["type"], "properties": {
            "type": {"enum": ["text", "image_url"]}, "text": {"type": "string"},
            "image_url": {"type": "object", "required": ["url"], "properties": {"url": {"type": "string"}}}}}
        message = {"type": "object", "required": ["role", "content"], "properties": {
            "role": {"enum": ["system", "user", "assistant"]},
            "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": part}]}}}
        return {"type": "array", "minItems": 1, "items": message}


# One server-sent event, as clients parse it: its `data` is a chat.completion.chunk in JSON, or [DONE].
_SSE_EVENT = {"type": "object", "properties": {"event": {"type": "string"}, "data": {"type": "string"}}}
_STREAM_DESCRIPTION = "Server-sent chat.completion.chunk events, ending with data: [DONE]."


class _StreamOptions(RequestModel):
    """`stream_options`: `include_usage` adds a last chunk with the token counts."""

    include_usage: Annotated[bool, Bool()] = False


@per_settings
def chat_model(settings: Settings) -> type[RequestModel]:
    """OpenAI's JSON chat request: messages (one image in all) and the generation options."""
    class Chat(RequestModel):
        messages: Annotated[list[Any], _Messages()] = Field(description="One image in all, as an image_url data: URL.")
        max_completion_tokens: Annotated[int, Number(low=1, high=settings.max_tokens_limit, integer=True)] = Field(
            settings.default_max_tokens, description="The same as max_tokens (OpenAI's newer name).")
        response_format: Annotated[dict[str, Any] | None, ResponseFormat(max_depth=settings.max_json_depth)] = Field(
            None, description="Constrain the output to JSON, in OpenAI's shape.")
        stream: Annotated[bool, Bool()] = Field(False, description=_STREAM_DESCRIPTION)
        stream_options: Annotated[dict[str, Any] | None,
                                  JsonObject(max_bytes=1024, max_depth=settings.max_json_depth)] = Field(
            None, description="{include_usage: true} adds a usage chunk.")
    return combine("ChatCompletion", Chat, generation_model(settings))


@per_settings
def chat_upload_model(settings: Settings) -> type[RequestModel]:
    """The multipart form: an `image` file and a `prompt`."""
    class Upload(RequestModel):
        image: Annotated[bytes, ImageData()]
        prompt: Annotated[str, Text(max_chars=settings.max_prompt_chars)]
        stream: Annotated[bool, Bool()] = Field(False, description=_STREAM_DESCRIPTION)
    return combine("ChatUpload", Upload, generation_model(settings))


@bp.post("/chat/completions")
@operation("OpenAI-compatible chat completion (waits for the answer)", tags=("compatible",),
           body={JSON: chat_model, MULTIPART: chat_upload_model}, errors=SYNC_ERRORS + ("not_found",),
           error_schema="OpenAIError",
           responses={200: {"description": "A chat.completion, or with `stream` its chunks as server-sent events.",
                            "content": {JSON: {"schema": {"$ref": "#/components/schemas/ChatCompletion"}},
                                        "text/event-stream": {"schema": _SSE_EVENT}}}})
def create_chat_completion() -> ResponseReturnValue:
    """OpenAI's JSON chat request (multi-turn, one or more images), or a multipart form with `image` and `prompt`."""
    settings = get_settings()
    if request.is_json:
        raw = json_body()
        if raw.get("n") not in (None, 1):
            raise ApiError(ErrorCode.INVALID_FIELD, "Only n=1 is supported.", {"field": "n"})
        body = parse(chat_model(settings), raw)
        chat = parse_chat_request(raw, settings)
        fields, image, messages = chat.job_fields(), chat.conversation.images, chat.conversation.messages
        image_field = chat.conversation.image_field
    else:
        body = parse(chat_upload_model(settings), request_values())
        # The upload form's own fields; anything else in the form is ignored.
        fields, image, messages = body.model_dump(exclude={"image", "stream"}), body.image, None
        image_field = "image"
    job_request = jobs.job_request(settings, parse(job_model(settings), fields), image, messages=messages,
                                   stream=body.stream, image_field=image_field)
    if not body.stream:
        return jsonify(ChatCompletionOut.of(sync_chat.answer(job_request, image)).dump())
    stream_options = parse(_StreamOptions, getattr(body, "stream_options", None) or {})  # JSON only
    job = sync_chat.submit(job_request, image)
    events = _events(job, include_usage=stream_options.include_usage)
    return Response(stream_with_context(events), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _events(job: Job, *, include_usage: bool) -> Iterator[str]:
    """The answer as OpenAI's server-sent chat.completion.chunk events, ending with `data: [DONE]`.

    A failure after the stream began arrives as an `{"error": ...}` event (the SDK raises it). If the client
    goes away, the job is cancelled (found out at the next write: a piece of text, or a keep-alive every 2 s).
    """
    with closing(sync_chat.streamed(job)) as pieces:  # closed, so cancelled, when the client goes away
        yield _event(ChatCompletionChunk.of(job, {"role": "assistant", "content": ""}, with_usage=include_usage))
        for piece in pieces:
            if isinstance(piece, ApiError):
                yield _event(error_body(piece)[0])
                return
            if isinstance(piece, Job):
                final = piece
            elif piece:
                yield _event(ChatCompletionChunk.of(job, {"content": piece}, with_usage=include_usage))
            else:  # an SSE comment: clients ignore it, and writing it tells whether the client is still there
                yield ": keep-alive\n\n"
    yield _event(ChatCompletionChunk.of(final, {}, finish=finish_reason(final), with_usage=include_usage))
    if include_usage:
        yield _event(ChatCompletionChunk.usage_of(final))
    yield "data: [DONE]\n\n"


def _event(data: Shape | dict[str, Any]) -> str:
    body = data.dump() if isinstance(data, Shape) else data
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"


@bp.get("/models")
@operation("Models, in OpenAI's list shape", tags=("compatible",), responses={200: "ModelList"},
           error_schema="OpenAIError")
def list_models() -> ResponseReturnValue:
    """The registry in OpenAI's list shape (the SDK's models.list()), with whether a worker serves each now."""
    statuses = sync_chat.model_statuses()
    return jsonify(ObjectList[ModelOut](data=[_model(name, statuses) for name in get_settings().registry]).dump())


@bp.get("/models/<name:model>")  # `name` stops at ':', so .../models/x:generateContent is not this route
@operation("A model, in OpenAI's shape", tags=("compatible",), responses={200: "Model"}, error_schema="OpenAIError")
def get_model(model: str) -> ResponseReturnValue:
    if model not in get_settings().registry:  # error_body answers it as OpenAI's 404 model_not_found
        raise ApiError(ErrorCode.UNKNOWN_MODEL, f"The model {model!r} does not exist.", {"model": model})
    return jsonify(_model(model, sync_chat.model_statuses()).dump())


def _model(name: str, statuses: dict[str, str]) -> ModelOut:
    return ModelOut(id=name, status=statuses.get(name, "absent"))


# -- errors ---------------------------------------------------------------------------------------

def error_body(error: ApiError) -> tuple[dict[str, Any], int]:
    """A VLQ error in OpenAI's shape, and its HTTP status. An unknown model is OpenAI's 404 model_not_found."""
    status, code = error.status, error.code
    if code == "unknown_model":
        status, code = 404, "model_not_found"
    kind = "invalid_request_error" if status < 500 else "server_error"
    param = (error.details or {}).get("field")
    body = OpenAIErrorOut.model_validate({"error": {"message": error.message, "type": kind, "param": param,
                                                    "code": code}})
    return body.dump(), status


@bp.errorhandler(Exception)
def render_error(exc: Exception) -> ResponseReturnValue:
    error = as_api_error(exc)
    body, status = error_body(error)
    return jsonify(body), status, error.headers
