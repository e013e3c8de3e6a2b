"""A chat request's conversation, whichever API family it came in: its turns and the images they hold.

Families turn their own shapes into `Turn`s (OpenAI `messages`, Google `contents`); `build` checks them the
same way for all and produces what a job stores: the images' bytes (in order: the job's pages), the prompt it
shows (the last user turn's text) and, for a real conversation, its `messages` with `{"type": "image"}` where
each image was.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.core.errors import ApiError, ErrorCode

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Turn:
    role: str  # system | user | assistant
    parts: list[str | ImageRef]  # text and images
    plain: bool = False  # the family sent the content as one string (kept so, for the chat template)
    where: str = "messages"  # names the turn in error details, in the family's own terms


@dataclass(frozen=True)
class ImageRef:
    source: Any  # what the family gave: a URL, base64, or bytes; `build` loads it


@dataclass(frozen=True)
class Conversation:
    images: list[bytes]  # at least one, in the order the turns hold them
    prompt: str  # the last user turn's text: what the job shows
    messages: list[dict[str, Any]] | None  # None for a single user turn, which runs as a plain prompt
    image_field: str = "messages"  # the turn that held the (first) image, in the family's terms (error details)


def build(turns: list[Turn], load_image: Callable[[Any, str], bytes], *, max_chars: int,
          field: str = "messages") -> Conversation:
    """Check the turns and load their images: at least one, each in a user turn; text to answer; a user turn last.

    `field` names the whole conversation in error details, in the family's own terms."""
    if not turns:
        raise ApiError(ErrorCode.MISSING_FIELD, "The conversation has no messages.", {"field": field})
    images = [(turn, part) for turn in turns for part in turn.parts if isinstance(part, ImageRef)]
    if not images:
        raise ApiError(ErrorCode.INVALID_FIELD, "Send at least one image in the conversation.", {"field": field})
    for image_turn, _ in images:
        if image_turn.role != "user":
            raise ApiError(ErrorCode.INVALID_FIELD, "An image must be part of a user turn.",
                           {"field": image_turn.where})
    if turns[-1].role != "user":
        raise ApiError(ErrorCode.INVALID_FIELD,
                       "The conversation must end with a user turn.", {"field": turns[-1].where})
    for turn in turns:  # Postgres text cannot hold NUL (SQLite can): refused here so both databases agree
        if any(isinstance(part, str) and "\x00" in part for part in turn.parts):
            raise ApiError(ErrorCode.INVALID_FIELD, "Text must not contain NUL characters.", {"field": turn.where})
    user_texts = [_text(turn) for turn in turns if turn.role == "user"]
    if not any(text.strip() for text in user_texts):
        raise ApiError(ErrorCode.MISSING_FIELD, "The conversation holds no text prompt.", {"field": "prompt"})
    total = sum(len(_text(turn)) for turn in turns)
    if total > max_chars:
        raise ApiError(ErrorCode.INVALID_FIELD,
                       f"The conversation's text is {total} characters; the limit is {max_chars}.",
                       {"field": field})
    single = len(turns) == 1
    return Conversation(
        images=[load_image(image.source, turn.where) for turn, image in images],
        prompt=_text(turns[0]) if single else user_texts[-1],
        messages=None if single else [_message(turn) for turn in turns],
        image_field=images[0][0].where,
    )


def _text(turn: Turn) -> str:
    return "\n".join(part for part in turn.parts if isinstance(part, str) and part.strip())


def _message(turn: Turn) -> dict[str, Any]:
    """A turn as the chat template reads it (Hugging Face's shape): a string, or typed parts."""
    if turn.plain and all(isinstance(part, str) for part in turn.parts):
        return {"role": turn.role, "content": "".join(turn.parts)}
    return {"role": turn.role, "content": [
        {"type": "image"} if isinstance(part, ImageRef) else {"type": "text", "text": part} for part in turn.parts]}
