"""OpenAI's chat shapes: reading a chat request into VLQ's terms, and writing a job as a chat.completion."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.errors import ApiError
from service.images import decode_image_field
from service.models import Job


@dataclass(frozen=True)
class ChatRequest:
    """The parts of an OpenAI chat request a VLQ job needs."""

    prompt: str
    image: bytes
    model: str | None
    max_tokens: Any
    temperature: Any
    response_format: Any


def parse_chat_request(body: Any) -> ChatRequest:
    """Read `messages` (text and one image_url part, as a data URL) plus generation options; ApiError if unusable."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "The request body must be a JSON object.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "missing_field", "'messages' must be a non-empty list.", {"field": "messages"})
    texts: list[str] = []
    images: list[str] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("system", "user"):
            raise ApiError(400, "invalid_field", f"messages[{index}] must be a system or user message.",
                           {"field": f"messages[{index}]"})
        _collect_parts(message.get("content"), index, texts, images)
    if len(images) != 1:
        raise ApiError(400, "invalid_field", f"Send exactly one image_url part (got {len(images)}).",
                       {"field": "messages"})
    if not any(text.strip() for text in texts):
        raise ApiError(400, "missing_field", "The messages hold no text prompt.", {"field": "messages"})
    return ChatRequest(
        prompt="\n".join(text for text in texts if text.strip()),
        image=_image_bytes(images[0]),
        model=body.get("model"),
        max_tokens=body.get("max_completion_tokens", body.get("max_tokens")),
        temperature=body.get("temperature"),
        response_format=body.get("response_format"),
    )


def _collect_parts(content: Any, index: int, texts: list[str], images: list[str]) -> None:
    if isinstance(content, str):
        texts.append(content)
        return
    if not isinstance(content, list):
        raise ApiError(400, "invalid_field", f"messages[{index}].content must be a string or a list of parts.",
                       {"field": f"messages[{index}].content"})
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            image_url = part.get("image_url")
            url = image_url.get("url") if isinstance(image_url, dict) else image_url
            if not isinstance(url, str):
                raise ApiError(400, "invalid_field", "image_url needs a url.", {"field": f"messages[{index}]"})
            images.append(url)
        else:
            raise ApiError(400, "invalid_field", f"messages[{index}] has an unsupported content part {kind!r}.",
                           {"field": f"messages[{index}].content"})


def _image_bytes(url: str) -> bytes:
    if url.startswith(("http://", "https://")):
        # Fetching by URL needs the SSRF guard the webhooks use; until then, only inline images.
        raise ApiError(400, "unsupported_image_url", "Image URLs are not fetched; send the image as a data URL.",
                       {"url": url[:200]})
    if not url.startswith("data:"):
        raise ApiError(400, "unsupported_image_url", "image_url must be a data: URL.", {"url": url[:200]})
    return decode_image_field(url, field="image_url")


def chat_completion(job: Job) -> dict[str, Any]:
    """A finished job as an OpenAI chat.completion object."""
    usage = job.to_dict()["usage"] or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    return {
        "id": f"chatcmpl-{job.id}",
        "object": "chat.completion",
        "created": int(job.created_at.timestamp()),
        "model": job.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": job.result_text or ""},
            "finish_reason": job.finish_reason if job.finish_reason in ("stop", "length") else "stop",
        }],
        "usage": usage,
    }
