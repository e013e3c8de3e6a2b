"""OpenAI's chat requests read into VLQ's terms (the answers' shapes are in service.core.shapes.compat)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from service.core.config import Settings
from service.core.conversation import Conversation, ImageRef, Turn, build
from service.core.errors import ApiError, ErrorCode
from service.core.image_urls import load_image_url

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
