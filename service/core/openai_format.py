"""OpenAI's chat and Responses requests read into VLQ's terms (the answers' shapes are in service.core.shapes.compat).

Both become a `ChatRequest`: a conversation of turns with one image, and the options under the job's names.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

from service.core.config import Settings
from service.core.conversation import Conversation, ImageRef, Turn, build
from service.core.errors import ApiError, ErrorCode
from service.core.image_urls import load_image_url
from service.core.structured import parse_response_format
from service.core.validation import Spec, invalid, read_json

# Reads an uploaded file's bytes for an `input_image` that names it by `file_id`: (file_id, field) -> bytes.
FileReader = Callable[[str, str], bytes]

IMAGE_CODES = ("unsupported_image_url", "invalid_image_url", "image_url_forbidden", "image_url_unreachable",
               "image_url_busy", "invalid_base64", "invalid_image", "unsupported_image_format",
               "image_too_many_pixels", "image_too_large")

# OpenAI's newer name for the system role.
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


@dataclass(frozen=True)
class ChatRequest:
    """The parts of an OpenAI chat request a VLQ job needs."""

    conversation: Conversation
    model: str | None
    max_tokens: Any
    temperature: Any
    top_p: Any
    response_format: Any
    ignore_eos: Any  # not OpenAI's, but vLLM's servers take it too (load tests, benchmarks)
    seed: Any = None

    def job_fields(self) -> dict[str, Any]:
        """The request's options under the job's field names (validated by service.core.jobs)."""
        return {"prompt": self.conversation.prompt, "model": self.model, "max_tokens": self.max_tokens,
                "temperature": self.temperature, "top_p": self.top_p, "response_format": self.response_format,
                "ignore_eos": self.ignore_eos, "seed": self.seed}


def parse_chat_request(body: Any, settings: Settings) -> ChatRequest:
    """Read `messages` (system, user and assistant turns; one image_url part) and the options; ApiError if unusable."""
    if not isinstance(body, dict):
        raise ApiError(ErrorCode.INVALID_REQUEST, "The request body must be a JSON object.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(ErrorCode.MISSING_FIELD, "'messages' must be a non-empty list.", {"field": "messages"})
    turns = [_turn(message, index) for index, message in enumerate(messages)]
    return ChatRequest(
        conversation=build(turns, partial(load_image_url, settings), max_chars=settings.max_prompt_chars),
        model=body.get("model"),
        max_tokens=body.get("max_completion_tokens", body.get("max_tokens")),
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        response_format=body.get("response_format"),
        ignore_eos=body.get("ignore_eos"),
        seed=body.get("seed"),
    )


def _turn(message: Any, index: int) -> Turn:
    where = f"messages[{index}]"
    named = message.get("role") if isinstance(message, dict) else None
    role = _ROLES.get(named) if isinstance(named, str) else None
    if role is None:
        raise ApiError(ErrorCode.INVALID_FIELD,
                       f"{where} must be a system, user or assistant message.", {"field": where})
    content = message.get("content")
    if isinstance(content, str):
        return Turn(role, [content], plain=True, where=where)
    if not isinstance(content, list):
        raise ApiError(ErrorCode.INVALID_FIELD, f"{where}.content must be a string or a list of parts.",
                       {"field": f"{where}.content"})
    parts: list[str | ImageRef] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append(part["text"])
        elif kind == "image_url":
            image_url = part.get("image_url")
            parts.append(ImageRef(image_url.get("url") if isinstance(image_url, dict) else image_url))
        else:
            raise ApiError(ErrorCode.INVALID_FIELD, f"{where} has an unsupported content part {kind!r}.",
                           {"field": f"{where}.content"})
    return Turn(role, parts, where=where)


# -- the Responses API -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FileImage:
    """An `input_image` given by `file_id`: an uploaded file's bytes."""

    file_id: str


def parse_responses_request(body: dict[str, Any], settings: Settings, read_file: FileReader) -> ChatRequest:
    """Read a Responses request (its fields already checked by service.core.requests.responses_model): `input`
    as a string or messages of `input_text` / `input_image` parts, `instructions` as a system turn first."""
    turns = _input_turns(body["input"])
    if body.get("instructions"):
        turns.insert(0, Turn("system", [body["instructions"]], plain=True, where="instructions"))

    def load(source: Any, field: str) -> bytes:
        if isinstance(source, FileImage):
            return read_file(source.file_id, field)
        return load_image_url(settings, source, field)

    return ChatRequest(
        conversation=build(turns, load, max_chars=settings.max_prompt_chars, field="input"),
        model=body.get("model"),
        max_tokens=body.get("max_output_tokens", body.get("max_tokens")),
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        response_format=chat_response_format((body.get("text") or {}).get("format")),
        ignore_eos=body.get("ignore_eos"),
        seed=body.get("seed"),
    )


def _input_turns(value: Any) -> list[Turn]:
    if isinstance(value, str):
        return [Turn("user", [value], plain=True, where="input")]
    return [_input_turn(item, f"input[{index}]") for index, item in enumerate(value)]


def _input_turn(item: Any, where: str) -> Turn:
    named = item.get("role") if isinstance(item, dict) else None
    role = _ROLES.get(named) if isinstance(named, str) else None
    if role is None or item.get("type", "message") != "message":
        raise invalid(where, "must be a message with a system, developer, user or assistant role")
    content = item.get("content")
    if isinstance(content, str):
        return Turn(role, [content], plain=True, where=where)
    if not isinstance(content, list):
        raise invalid(f"{where}.content", "must be a string or a list of parts")
    return Turn(role, [_input_part(part, f"{where}.content[{index}]") for index, part in enumerate(content)],
                where=where)


def _input_part(part: Any, where: str) -> str | ImageRef:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text") and isinstance(part.get("text"), str):
        return part["text"]
    if kind == "input_image":
        if isinstance(part.get("file_id"), str) and part["file_id"]:
            return ImageRef(FileImage(part["file_id"]))
        url = part.get("image_url")
        return ImageRef(url.get("url") if isinstance(url, dict) else url)
    raise invalid(where, f"is an unsupported content part {kind!r} (input_text and input_image are)")


def chat_response_format(text_format: Any) -> dict[str, Any] | None:
    """The Responses API's `text.format` in chat's `response_format` shape, which the job reads."""
    if not isinstance(text_format, dict) or text_format.get("type") != "json_schema":
        return text_format
    spec = {key: text_format[key] for key in ("name", "schema", "strict", "description") if key in text_format}
    return {"type": "json_schema", "json_schema": spec}


@dataclass(frozen=True, kw_only=True)
class ResponsesInput(Spec):
    """`input`: a prompt string, or a non-empty list of messages (with the images among them)."""

    codes: ClassVar[tuple[str, ...]] = ("missing_field", "invalid_field", *IMAGE_CODES)

    def read(self, value: Any, name: str) -> Any:
        if isinstance(value, str) and value.strip() or isinstance(value, list) and value:
            return value
        raise self.missing(name)

    def missing(self, name: str) -> ApiError:
        return ApiError(ErrorCode.MISSING_FIELD, f"'{name}' must be a string or a non-empty list of messages.",
                        {"field": name})

    def schema(self, required: bool) -> dict[str, Any]:
        part = {"type": "object", "required": ["type"], "properties": {
            "type": {"enum": ["input_text", "input_image"]}, "text": {"type": "string"},
            "image_url": {"type": "string"}, "file_id": {"type": "string"}}}
        message = {"type": "object", "required": ["role", "content"], "properties": {
            "role": {"enum": ["system", "developer", "user", "assistant"]},
            "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": part}]}}}
        return {"oneOf": [{"type": "string", "minLength": 1}, {"type": "array", "minItems": 1, "items": message}]}


@dataclass(frozen=True, kw_only=True)
class TextConfig(Spec):
    """`text`: `{"format": {"type": "text" | "json_object" | "json_schema", "name", "schema", "strict"}}`."""

    max_depth: int
    codes: ClassVar[tuple[str, ...]] = ("invalid_field", "invalid_response_format")

    def read(self, value: Any, name: str) -> dict[str, Any]:
        value = read_json(value, name, self.max_depth)
        if not isinstance(value, dict):
            raise invalid(name, "must be an object with a 'format'")
        try:
            parse_response_format(chat_response_format(value.get("format")), self.max_depth)
        except ApiError as error:  # named as this API names it
            raise ApiError(error.code, error.message.replace("'response_format'", f"'{name}.format'"),
                           {**(error.details or {}), "field": f"{name}.format"}) from None
        return value

    def schema(self, required: bool) -> dict[str, Any]:
        return {"type": "object", "properties": {"format": {"type": "object", "required": ["type"], "properties": {
            "type": {"enum": ["text", "json_object", "json_schema"]}, "name": {"type": "string"},
            "schema": {"type": "object"}, "strict": {"type": "boolean"}}}}}
