"""OpenAI's Responses API for one image: POST /v1/responses (JSON; answered whole, or streamed as its events).

The request is read by service.core.requests.responses_model and service.core.openai_format (the same reading as a
/v1/responses batch line) into a job that goes through the shared synchronous path (service.api.compat.sync_chat);
errors are OpenAI's, rendered as the chat completions endpoint renders them.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, jsonify, stream_with_context
from flask.typing import ResponseReturnValue

from service.api.auth import current_tenant
from service.api.common import json_body
from service.api.compat import sync_chat
from service.api.compat.chat_completions import error_body, render_error
from service.api.compat.sync_chat import SYNC_ERRORS
from service.api.context import get_blobs, get_session, get_settings
from service.api.errors import as_api_error
from service.api.openapi import JSON, operation
from service.core import batches, jobs
from service.core.models import Job
from service.core.openai_format import parse_responses_request
from service.core.requests import job_model, responses_model
from service.core.shapes import ResponseOut
from service.core.validation import parse

bp = Blueprint("responses", __name__, url_prefix="/v1")
bp.register_error_handler(Exception, render_error)

_SSE_EVENT = {"type": "object", "properties": {"event": {"type": "string"}, "data": {"type": "string"}}}


@bp.post("/responses")
@operation("OpenAI Responses API, one image (waits for the answer)", tags=("compatible",),
           body={JSON: responses_model}, errors=SYNC_ERRORS + ("not_found",), error_schema="OpenAIError",
           responses={200: {"description": "A response object, or with `stream` its events as server-sent events.",
                            "content": {JSON: {"schema": {"$ref": "#/components/schemas/Response"}},
                                        "text/event-stream": {"schema": _SSE_EVENT}}}})
def create_response() -> ResponseReturnValue:
    """`input` (a string, or messages of input_text and input_image parts: one image), `instructions`,
    `max_output_tokens`, `temperature`, `top_p`, `text.format`; `stream` for the Responses events."""
    settings = get_settings()
    raw = json_body()
    body = parse(responses_model(settings), raw)
    read_file = batches.file_reader(get_session(), get_blobs(), settings, current_tenant())
    chat = parse_responses_request(raw, settings, read_file)
    images = chat.conversation.images
    job_request = jobs.job_request(settings, parse(job_model(settings), chat.job_fields()), images,
                                   messages=chat.conversation.messages, stream=body.stream,
                                   image_field=chat.conversation.image_field)
    if not body.stream:
        return jsonify(ResponseOut.of(sync_chat.answer(job_request, images)).dump())
    job = sync_chat.submit(job_request, images)
    return Response(stream_with_context(_events(job)), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _events(job: Job) -> Iterator[str]:
    """The answer as OpenAI's Responses events: created, the message and its text part opened, text deltas, each
    closed, then `response.completed` (or `response.incomplete` when cut off by max_output_tokens).

    An error after the stream began is an `error` event. If the client goes away, the job is cancelled.
    """
    sequence = iter(range(1_000_000_000))
    shell = ResponseOut.of(job).dump()  # the response's fields before it has any text
    item = {"type": "message", "id": f"msg_{job.id}", "status": "in_progress", "role": "assistant", "content": []}
    where = {"item_id": item["id"], "output_index": 0, "content_index": 0}

    def event(kind: str, **data: Any) -> str:
        payload = {"type": kind, "sequence_number": next(sequence), **data}
        return f"event: {kind}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n"

    ended = False
    try:
        yield event("response.created", response={**shell, "status": "in_progress", "output": [],
                                                   "incomplete_details": None})
        yield event("response.output_item.added", output_index=0, item=item)
        yield event("response.content_part.added", **where, part={"type": "output_text", "text": "", "annotations": []})
        for piece in sync_chat.pieces(job):
            if isinstance(piece, Job):
                final = ResponseOut.of(piece).dump()
            elif piece:
                yield event("response.output_text.delta", **where, delta=piece, logprobs=[])
            else:  # an SSE comment: writing it tells whether the client is still there
                yield ": keep-alive\n\n"
        ended = True
    except Exception as exc:
        ended = True
        error = error_body(as_api_error(exc))[0]["error"]
        yield event("error", code=error["code"], message=error["message"], param=error["param"])
        return
    finally:
        if not ended:
            sync_chat.abandon(job.id)
    message = final["output"][0]
    part = message["content"][0]
    yield event("response.output_text.done", **where, text=part["text"], logprobs=[])
    yield event("response.content_part.done", **where, part=part)
    yield event("response.output_item.done", output_index=0, item=message)
    yield event(f"response.{final['status']}", response=final)
