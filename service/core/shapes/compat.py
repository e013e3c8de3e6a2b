"""The compatible API families' answers (README "Compatible APIs"): OpenAI's chat completions, models and batch
output lines, the `/api/v1/chat` family, and Google's generateContent, each with its own error shape."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import MISSING

from service.core import models
from service.core.models import JobStatus
from service.core.shapes.base import ObjectList, Shape, Timestamp
from service.core.shapes.resources import Timings, Usage

# -- OpenAI ------------------------------------------------------------------------------------------------


class ChatUsage(Usage):
    """Token counts (zero for OCR and cached answers), plus VLQ's `total_time_ms`: submit to answer."""

    total_time_ms: float | None

    @classmethod
    def of_job(cls, job: models.Job) -> ChatUsage:
        counts = Usage.of(job) or Usage.zero()
        return cls(**counts.model_dump(), total_time_ms=Timings.of(job).total_ms)


class ChatMessage(Shape):
    role: str
    content: str | None


class ChatChoice(Shape):
    index: int
    message: ChatMessage | MISSING = MISSING
    logprobs: None = None
    finish_reason: str | None


class ChatCompletionOut(Shape):
    """A finished job as an OpenAI chat.completion object."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: ChatUsage | MISSING = MISSING

    @classmethod
    def of(cls, job: models.Job) -> ChatCompletionOut:
        message = ChatMessage(role="assistant", content=job.result_text or "")
        return cls(id=completion_id(job), created=int(job.created_at.timestamp()), model=job.model,
                   choices=[ChatChoice(index=0, message=message, finish_reason=finish_reason(job))],
                   usage=ChatUsage.of_job(job))


class ChunkChoice(Shape):
    index: int
    delta: dict[str, Any]
    logprobs: None = None
    finish_reason: str | None


class ChatCompletionChunk(Shape):
    """One chat.completion.chunk of a streamed answer. With `stream_options.include_usage`, OpenAI sends
    `usage: null` on every chunk and the figures on one last chunk without choices."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: ChatUsage | None | MISSING = MISSING

    @classmethod
    def of(cls, job: models.Job, delta: dict[str, Any], *, finish: str | None = None,
           with_usage: bool = False) -> ChatCompletionChunk:
        chunk = cls(id=completion_id(job), created=int(job.created_at.timestamp()), model=job.model,
                    choices=[ChunkChoice(index=0, delta=delta, finish_reason=finish)])
        if with_usage:
            chunk.usage = None
        return chunk

    @classmethod
    def usage_of(cls, job: models.Job) -> ChatCompletionChunk:
        """The last chunk when usage was asked for: no choices, the figures."""
        return cls(id=completion_id(job), created=int(job.created_at.timestamp()), model=job.model, choices=[],
                   usage=ChatUsage.of_job(job))


def completion_id(job: models.Job) -> str:
    return f"chatcmpl-{job.id}"


def finish_reason(job: models.Job) -> str:
    return job.finish_reason if job.finish_reason in ("stop", "length") else "stop"


# -- OpenAI Responses ----------------------------------------------------------------------------------------


class ResponseOutputText(Shape):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = []


class ResponseOutputMessage(Shape):
    type: Literal["message"] = "message"
    id: str
    status: Literal["completed", "incomplete"]
    role: Literal["assistant"] = "assistant"
    content: list[ResponseOutputText]


class ResponseIncompleteDetails(Shape):
    reason: Literal["max_output_tokens"]


class ResponseUsage(Shape):
    """Token counts in the Responses API's names (zero for OCR and cached answers)."""

    input_tokens: int
    input_tokens_details: dict[str, int]
    output_tokens: int
    output_tokens_details: dict[str, int]
    total_tokens: int

    @classmethod
    def of_job(cls, job: models.Job) -> ResponseUsage:
        counts = Usage.of(job) or Usage.zero()
        return cls(input_tokens=counts.prompt_tokens, output_tokens=counts.completion_tokens,
                   input_tokens_details={"cached_tokens": 0, "cache_write_tokens": 0},
                   output_tokens_details={"reasoning_tokens": 0}, total_tokens=counts.total_tokens)


class ResponseOut(Shape):
    """A finished job as an OpenAI `response` object (POST /v1/responses, and /v1/responses batch lines).

    Cut off by `max_output_tokens`, it is `incomplete` with the partial text, as OpenAI answers. `instructions` is the
    conversation's system text. `text` is `{"format": {"type": "text"}}` for free text and null for a
    JSON-constrained answer (the schema's name is not stored, so its format is not echoed).
    """

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["completed", "incomplete"]
    error: None = None
    incomplete_details: ResponseIncompleteDetails | None
    instructions: str | None
    max_output_tokens: int
    model: str
    output: list[ResponseOutputMessage]
    parallel_tool_calls: bool = False
    previous_response_id: None = None
    temperature: float
    top_p: float
    text: dict[str, Any] | None
    tool_choice: Literal["none"] = "none"
    tools: list[Any] = []
    truncation: Literal["disabled"] = "disabled"
    store: bool = False
    usage: ResponseUsage
    metadata: dict[str, Any] = {}

    @classmethod
    def of(cls, job: models.Job) -> ResponseOut:
        status: Literal["completed", "incomplete"] = "incomplete" if job.finish_reason == "length" else "completed"
        message = ResponseOutputMessage(id=f"msg_{job.id}", status=status,
                                        content=[ResponseOutputText(text=job.result_text or "")])
        return cls(id=response_id(job), created_at=int(job.created_at.timestamp()), status=status,
                   incomplete_details=ResponseIncompleteDetails(reason="max_output_tokens")
                   if status == "incomplete" else None,
                   instructions=_system_text(job.messages), max_output_tokens=job.max_tokens, model=job.model,
                   output=[message], temperature=job.temperature, top_p=1.0 if job.top_p is None else job.top_p,
                   text={"format": {"type": "text"}} if job.response_schema is None else None,
                   usage=ResponseUsage.of_job(job))


def response_id(job: models.Job) -> str:
    return f"resp_{job.id}"


def _system_text(messages: list[dict[str, Any]] | None) -> str | None:
    """The text of a conversation's leading system turn (where `instructions` went), if it has one."""
    if not messages or messages[0].get("role") != "system":
        return None
    content = messages[0].get("content")
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


# -- OpenAI Batch ------------------------------------------------------------------------------------------


class BatchResponse(Shape):
    status_code: int
    request_id: str
    body: ChatCompletionOut | ResponseOut


class BatchLineError(Shape):
    code: str
    message: str


class BatchRequestOutput(Shape):
    """One line of a batch's output file (a succeeded item) or error file (the others), in OpenAI's shape."""

    id: str
    custom_id: str | None
    response: BatchResponse | None
    error: BatchLineError | None

    @classmethod
    def of(cls, job: models.Job, endpoint: str = "/v1/chat/completions") -> BatchRequestOutput:
        """The item's line; its body in the shape of the batch's `endpoint` (a chat.completion or a response)."""
        if job.status == JobStatus.SUCCEEDED.value:
            body = ResponseOut.of(job) if endpoint == "/v1/responses" else ChatCompletionOut.of(job)
            response = BatchResponse(status_code=200, request_id=job.id, body=body)
            return cls(id=f"batch_req_{job.id}", custom_id=job.custom_id, response=response, error=None)
        return cls(id=f"batch_req_{job.id}", custom_id=job.custom_id, response=None,
                   error=BatchLineError(code=job.error_code or job.status, message=job.error_message or job.status))


class ModelOut(Shape):
    """A model of the registry; `created` is required by the shape but unknown, so it is 0."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "vlq"
    status: str


class OpenAIErrorDetail(Shape):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorOut(Shape):
    error: OpenAIErrorDetail


class OpenAIEventData(Shape):
    id: str


class OpenAIWebhookEvent(Shape):
    """OpenAI's webhook event (endpoints registered with `format: openai`): it names its batch, which the receiver
    fetches (GET /v1/batches/{id}) for the rest."""

    id: str
    object: Literal["event"] = "event"
    type: Literal["batch.completed", "batch.failed", "batch.expired", "batch.cancelled"]
    created_at: int
    data: OpenAIEventData


class OpenAIHealthOut(Shape):
    status: Literal["healthy", "unhealthy"]
    missing: list[str] | MISSING = MISSING


ModelList = ObjectList[ModelOut]

# -- /api/v1/chat ------------------------------------------------------------------------------------------


class SimpleChatData(Shape):
    response: str
    token_usage: Usage
    inference_time_ms: int | None  # whole milliseconds, as the family documents it (typed clients refuse 2340.5)


class SimpleChatAnswer(Shape):
    """Every answer of the family: code 0 and `data` on success, a numeric error code and `data: null` otherwise."""

    code: int
    message: str
    data: SimpleChatData | None

    @classmethod
    def of(cls, job: models.Job) -> SimpleChatAnswer:
        data = SimpleChatData(response=job.result_text or "", token_usage=Usage.of(job) or Usage.zero(),
                              inference_time_ms=_whole(Timings.of(job).inference_ms))
        return cls(code=0, message="success", data=data)


def _whole(ms: float | None) -> int | None:
    return None if ms is None else round(ms)


class SimpleChatHealth(Shape):
    status: Literal["ok", "loading", "unavailable"]
    model: str
    multimodal: bool
    cpu_optimized: bool
    timestamp: Timestamp


# -- Google generateContent ------------------------------------------------------------------------------------


class GooglePart(Shape):
    text: str


class GoogleContent(Shape):
    parts: list[GooglePart]
    role: str


class GoogleCandidate(Shape):
    content: GoogleContent
    finishReason: str | MISSING = MISSING  # noqa: N815 (Google's names); absent on a stream's chunks but the last
    index: int


class GoogleUsage(Shape):
    promptTokenCount: int  # noqa: N815
    candidatesTokenCount: int  # noqa: N815
    totalTokenCount: int  # noqa: N815


class GenerateContentResponse(Shape):
    """An answer, or one chunk of a streamed one (its text so far; the last has finishReason and usageMetadata)."""

    candidates: list[GoogleCandidate]
    usageMetadata: GoogleUsage | MISSING = MISSING  # noqa: N815
    modelVersion: str  # noqa: N815
    responseId: str  # noqa: N815

    @classmethod
    def of(cls, job: models.Job) -> GenerateContentResponse:
        return cls.chunk(job, job.result_text or "", last=True)

    @classmethod
    def chunk(cls, job: models.Job, text: str, *, last: bool) -> GenerateContentResponse:
        """`text` as one chunk of the job's answer; the `last` carries why it ended and the token counts."""
        candidate = GoogleCandidate(content=GoogleContent(parts=[GooglePart(text=text)], role="model"), index=0)
        answer = cls(candidates=[candidate], modelVersion=job.model, responseId=job.id)
        if last:
            usage = Usage.of(job) or Usage.zero()
            candidate.finishReason = "MAX_TOKENS" if job.finish_reason == "length" else "STOP"
            answer.usageMetadata = GoogleUsage(promptTokenCount=usage.prompt_tokens,
                                               candidatesTokenCount=usage.completion_tokens,
                                               totalTokenCount=usage.total_tokens)
        return answer


class CountTokensResponse(Shape):
    totalTokens: int  # noqa: N815


class GoogleModel(Shape):
    """A registry model in Google's shape; `description` says whether a worker serves it now."""

    name: str  # models/<registry name>
    baseModelId: str  # noqa: N815
    version: str
    displayName: str  # noqa: N815
    description: str
    outputTokenLimit: int  # noqa: N815
    supportedGenerationMethods: list[str]  # noqa: N815


class GoogleModelList(Shape):
    models: list[GoogleModel]


class GoogleErrorDetail(Shape):
    code: int
    message: str
    status: str


class GoogleErrorOut(Shape):
    error: GoogleErrorDetail


