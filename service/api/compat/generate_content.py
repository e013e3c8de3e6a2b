"""Google's Gemini API, as its SDKs (google-genai) use it: generateContent, streamGenerateContent, countTokens and
the model list, under /v1 (the SDK's default) and /v1beta.

`contents` (user and model turns of text and inline_data parts), `system_instruction` and `generation_config`
in (service.core.google_format reads the config, structured output included); `candidates` and
`usageMetadata` out. The REST API takes snake_case and camelCase field names alike, and so does this. Errors
are `{"error": {"code", "message", "status"}}`, mapped in `render_error` alone, for every path Google's
clients call (`is_google_request`), unknown paths and methods included.
"""
from __future__ import annotations

import json
import re
from collections.abc import Generator, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from flask import Blueprint, Request, Response, jsonify, request, stream_with_context
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue
from pydantic import AliasChoices, Field

from service.api import errors
from service.api.common import json_body, read_query
from service.api.compat import sync_chat
from service.api.compat.sync_chat import SYNC_ERRORS
from service.api.context import get_settings
from service.api.errors import as_api_error
from service.api.openapi import operation
from service.core import jobs, token_count
from service.core.config import Settings
from service.core.conversation import Conversation, ImageRef, Turn, build
from service.core.documents import MEDIA_TYPES
from service.core.errors import ApiError, ErrorCode
from service.core.google_format import field, generation_fields
from service.core.images import decode_image_field
from service.core.models import Job
from service.core.requests import job_model
from service.core.shapes import (
    CountTokensResponse,
    GenerateContentResponse,
    GoogleErrorOut,
    GoogleModel,
    GoogleModelList,
    Shape,
)
from service.core.validation import Choice, RequestModel, Spec, parse

bp = Blueprint("generate_content", __name__)

_ROLES = {"user": "user", "model": "assistant"}
_STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                 405: "METHOD_NOT_ALLOWED", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
                 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
_METHODS = ["generateContent", "streamGenerateContent", "countTokens"]
# A model's method (`models/x:generateContent`) is Google's own URL form; OpenAI's paths have no colon.
_GOOGLE_PATH = re.compile(r"^/v1beta(/|$)|^/v1/models/[^/]*:")
_GOOGLE_CLIENT = "x-goog-api-client"  # the header Google's SDKs name themselves in


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
        inline = {"type": "object", "required": ["data"],
                  "properties": {"mime_type": {"type": "string"}, "data": {"type": "string"}}}
        part = {"oneOf": [{"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}},
                           "not": {"required": ["inline_data"]}},
                          {"type": "object", "required": ["inline_data"], "properties": {"inline_data": inline},
                           "not": {"required": ["text"]}}]}
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
    codes: ClassVar[tuple[str, ...]] = ("invalid_field", "invalid_response_format")

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
        description="temperature, top_p, max_output_tokens, seed, response_mime_type with response_schema or "
                    "response_json_schema (or their camelCase names).")


class _StreamQuery(RequestModel):
    alt: Annotated[str, Choice(choices=["sse", "json"])] = Field(
        "json", description="sse: server-sent events (Google's SDKs); json: one JSON array of the chunks.")


class _CountBody(RequestModel):
    contents: Annotated[list[Turn], _Contents()] = Field(description="Text and at most one image.")


@bp.post("/v1/models/<model>:generateContent")
@bp.post("/v1beta/models/<model>:generateContent")
@operation("Google-compatible generateContent (waits for the answer)", tags=("compatible",), body=Content,
           errors=SYNC_ERRORS, error_schema="GoogleError", responses={200: "GenerateContentResponse"})
def generate_content(model: str) -> ResponseReturnValue:
    job_request, images = _job_request(model)
    return jsonify(GenerateContentResponse.of(sync_chat.answer(job_request, images)).dump())


@bp.post("/v1/models/<model>:streamGenerateContent")
@bp.post("/v1beta/models/<model>:streamGenerateContent")
@operation("Google-compatible streamGenerateContent (the answer as it is generated)", tags=("compatible",),
           body=Content, query=_StreamQuery, errors=SYNC_ERRORS, error_schema="GoogleError",
           responses={200: {"description": "GenerateContentResponse chunks: server-sent events with alt=sse, "
                                           "else one JSON array.",
                            "content": {"text/event-stream": {"schema": {"type": "string"}},
                                        "application/json": {"schema": {"type": "array", "items": {
                                            "$ref": "#/components/schemas/GenerateContentResponse"}}}}}})
def stream_generate_content(model: str) -> ResponseReturnValue:
    sse = read_query(_StreamQuery).alt == "sse"
    job_request, images = _job_request(model, stream=True)
    chunks = _chunks(sync_chat.submit(job_request, images))
    framed = _sse(chunks) if sse else _json_array(chunks)
    return Response(stream_with_context(framed), mimetype="text/event-stream" if sse else "application/json",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@bp.post("/v1/models/<model>:countTokens")
@bp.post("/v1beta/models/<model>:countTokens")
@operation("Google-compatible countTokens", tags=("compatible",), body=_CountBody,
           errors=("model_unavailable",), error_schema="GoogleError", responses={200: "CountTokensResponse"})
def count_tokens(model: str) -> ResponseReturnValue:
    """The tokens of the contents' text and images, counted with the model's tokenizer (no job runs)."""
    settings = _known(model)
    body = parse(_CountBody, json_body("The body must be a JSON object with 'contents'."))
    texts = [part for turn in body.contents for part in turn.parts if isinstance(part, str)]
    images = [(part, turn.where) for turn in body.contents for part in turn.parts if isinstance(part, ImageRef)]
    data = [_inline_image(image.source, where) for image, where in images]
    return jsonify(CountTokensResponse(totalTokens=token_count.count(settings, model, texts, data)).dump())


@bp.get("/v1beta/models")
@operation("Models, in Google's shape (also GET /v1/models, for Google's SDKs: x-goog-api-client)",
           tags=("compatible",), error_schema="GoogleError", responses={200: "GoogleModelList"})
def list_models() -> ResponseReturnValue:
    """The registry as Google's SDK lists it; `description` says whether a worker serves each model now."""
    statuses = sync_chat.model_statuses()
    return jsonify(GoogleModelList(models=[_model(name, statuses) for name in get_settings().registry]).dump())


@bp.get("/v1beta/models/<name:model>")
@operation("A model, in Google's shape", tags=("compatible",), error_schema="GoogleError",
           responses={200: "GoogleModel"})
def get_model(model: str) -> ResponseReturnValue:
    _known(model)
    return jsonify(_model(model, sync_chat.model_statuses()).dump())


@bp.before_app_request
def _google_model_list() -> ResponseReturnValue | None:
    """Google's SDKs list and get models at /v1/models by default, which is OpenAI's path: a caller that names
    itself one of them (`x-goog-api-client`, which they all send) is answered in Google's shape there. Runs after
    authentication."""
    endpoint = request.url_rule.endpoint if request.url_rule is not None else None
    if request.method != "GET" or _GOOGLE_CLIENT not in request.headers or endpoint not in (
            "chat_completions.list_models", "chat_completions.get_model"):
        return None
    try:
        return list_models() if endpoint == "chat_completions.list_models" else get_model(**(request.view_args or {}))
    except Exception as exc:
        return render_error(exc)


def _model(name: str, statuses: dict[str, str]) -> GoogleModel:
    status = statuses.get(name, "absent")
    served = "served now" if status == "live" else f"not served now ({status}: no live worker serves it)"
    return GoogleModel(name=f"models/{name}", baseModelId=name, version="vlq", displayName=name,
                       description=f"VLQ model {name}, {served}.",
                       outputTokenLimit=get_settings().max_tokens_limit, supportedGenerationMethods=_METHODS)


def _known(model: str) -> Settings:
    """The settings, once `model` is known to be in the registry (Google's 404 otherwise)."""
    settings = get_settings()
    if model not in settings.registry:
        raise ApiError(ErrorCode.NOT_FOUND, f"models/{model} is not found; available: {', '.join(settings.registry)}.",
                       {"model": model})
    return settings


def _job_request(model: str, *, stream: bool = False) -> tuple[jobs.JobRequest, list[bytes]]:
    """The request body read as a job request for `model`, and its images (in order: the job's pages)."""
    settings = _known(model)
    content = parse(Content, json_body("The body must be a JSON object with 'contents'."))
    turns = [content.system_instruction, *content.contents] if content.system_instruction else content.contents
    conversation: Conversation = build(turns, _inline_image, max_chars=settings.max_prompt_chars)
    fields = {"prompt": conversation.prompt, "model": model, **generation_fields(content.generation_config)}
    job_request = jobs.job_request(settings, parse(job_model(settings), fields), conversation.images,
                                   messages=conversation.messages, stream=stream)
    return job_request, conversation.images


def _chunks(job: Job) -> Generator[Shape | dict[str, Any] | None, None, None]:
    """The answer as GenerateContentResponse chunks; None while nothing happens (a keep-alive); a failure after
    the stream began as the error body, last."""
    with closing(sync_chat.streamed(job)) as pieces:  # closed, so cancelled, when the client goes away
        for piece in pieces:
            if isinstance(piece, ApiError):
                yield _error_body(piece)[0]
                return
            if isinstance(piece, Job):
                final = piece
            else:
                yield GenerateContentResponse.chunk(job, piece, last=False) if piece else None
    yield GenerateContentResponse.chunk(final, "", last=True)


def _sse(chunks: Generator[Shape | dict[str, Any] | None, None, None]) -> Iterator[str]:
    # The keep-alive is a blank line: the SDK skips it, but would read an SSE comment line as a chunk of JSON.
    with closing(chunks):  # closed with the response, so a client that goes away gets its job cancelled
        for chunk in chunks:
            yield "\n" if chunk is None else f"data: {_json(chunk)}\n\n"


def _json_array(chunks: Generator[Shape | dict[str, Any] | None, None, None]) -> Iterator[str]:
    first = True
    with closing(chunks):
        yield "["
        for chunk in chunks:
            if chunk is None:
                yield " "  # whitespace between JSON values, written to find out whether the client is still there
            else:
                yield ("" if first else ",\n") + _json(chunk)
                first = False
        yield "]"


def _json(data: Shape | dict[str, Any]) -> str:
    return json.dumps(data.dump() if isinstance(data, Shape) else data, separators=(",", ":"))


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
        text, inline = (part.get("text"), field(part, "inline_data")) if isinstance(part, dict) else (None, None)
        if isinstance(text, str) and inline is None:
            parts.append(text)
        elif isinstance(inline, dict) and text is None:
            parts.append(ImageRef(inline))
        else:  # a Part is one thing: Google refuses a part with both, as this does
            raise ApiError(ErrorCode.INVALID_FIELD,
                           f"{where}.parts[{index}] must hold either 'text' (a string) or 'inline_data' (an object).",
                           {"field": f"{where}.parts[{index}]"})
    return Turn(role, parts, where=where)


def _inline_image(inline: dict[str, Any], where: str) -> bytes:
    mime = field(inline, "mime_type")
    if mime not in _INLINE_TYPES:  # what it is, the bytes tell; a type that is none of these is refused first
        raise ApiError(ErrorCode.UNSUPPORTED_IMAGE_FORMAT,
                       f"inline_data mime_type {mime!r} is not accepted; send one of {', '.join(_INLINE_TYPES)}.",
                       {"field": where, "accepted": sorted(MEDIA_TYPES)})
    return decode_image_field(inline.get("data"), field=f"{where}.inline_data.data")


_INLINE_TYPES = (*MEDIA_TYPES.values(), "image/heic")


def is_google_request(req: Request) -> bool:
    """Whether Google's clients call this path: /v1beta, a model's method, or the model list asked the Google way."""
    return bool(_GOOGLE_PATH.match(req.path)) or (
        _GOOGLE_CLIENT in req.headers and re.match(r"^/v1/models(/|$)", req.path) is not None)


def _error_body(error: ApiError) -> tuple[dict[str, Any], int]:
    """A VLQ error in Google's shape, and its status. Google answers an oversized or unsupported body with 400."""
    status = 400 if error.status in (413, 415) else error.status
    name = _STATUS_NAMES.get(status, "INVALID_ARGUMENT" if status < 500 else "INTERNAL")
    body = GoogleErrorOut.model_validate({"error": {"code": status, "message": error.message, "status": name}})
    return body.dump(), status


@bp.errorhandler(Exception)
def render_error(exc: Exception) -> ResponseReturnValue:
    """Google's error shape, for this blueprint's views and (through errors.add_family) any Google path."""
    error = as_api_error(exc)
    body, status = _error_body(error)
    return jsonify(body), status, error.headers


@bp.record_once
def _claim_errors(state: BlueprintSetupState) -> None:
    errors.add_family(state.app, is_google_request, render_error)
