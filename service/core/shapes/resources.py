"""VLQ's own resources as the API shows them: jobs, batches, files, keys, webhooks, presets, errors, health."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import MISSING, Field

from service.core import models
from service.core.models import BatchStatus, JobStatus, Priority
from service.core.presets import Preset
from service.core.shapes.base import Deleted, Shape, Timestamp, UnixSeconds
from service.core.shapes.pages import JobPageOut, JobResult, Usage, round_ms

EventType = Literal["job.succeeded", "job.failed", "job.cancelled",
                    "batch.completed", "batch.failed", "batch.cancelled", "batch.expired"]


class Timings(Shape):
    """Milliseconds, to one decimal: waiting in the queue, to the first token, generating, and submit to end."""

    queue_ms: float | None
    ttft_ms: float | None
    inference_ms: float | None
    total_ms: float | None

    @classmethod
    def of(cls, job: models.Job) -> Timings:
        return cls(queue_ms=_ms_between(job.created_at, job.started_at), ttft_ms=round_ms(job.ttft_ms),
                   inference_ms=round_ms(job.inference_ms), total_ms=_ms_between(job.created_at, job.finished_at))


class JobImage(Shape):
    sha256: str
    format: str | None
    width: int | None
    height: int | None


class JobError(Shape):
    code: str
    message: str | None


class ModelWarning(Shape):
    """Why a waiting job (or a batch's waiting items) may not start: no live worker serves its model
    (service.core.availability), and what fixes it."""

    code: Literal["no_worker", "model_loading", "model_unavailable"]
    message: str
    model: str


class WebhookRef(Shape):
    # A job's or batch's own webhook (never its secret).

    url: str


class JobOut(Shape):
    """A job as the API shows it."""

    id: str
    object: Literal["job"] = "job"
    status: JobStatus
    model: str
    prompt: str
    priority: Priority
    max_tokens: int
    temperature: float
    top_p: float | None
    seed: int | None
    messages: list[dict[str, Any]] | None
    image: JobImage | None
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    preset: str | None
    result: JobResult | None
    cached: bool
    cache_of: str | None
    usage: Usage | None
    timings: Timings
    batch_size: int | None
    worker: str | None
    attempts: int
    error: JobError | None
    metadata: dict[str, Any] | None
    batch_id: str | None
    custom_id: str | None
    webhook: WebhookRef | None
    image_expired_at: Timestamp | None
    result_expired_at: Timestamp | None
    page_mode: Literal["document", "per_page"] | None = Field(
        description="A job on a document or several images: how its pages were read; null for one plain image")
    pages: list[JobPageOut] | None = Field(description="Its pages in order (null for one plain image)")
    # While the job is queued and no live worker serves its model (set by the API; empty in webhook payloads).
    warnings: list[ModelWarning] = Field(default_factory=list)

    @classmethod
    def from_row(cls, job: models.Job) -> JobOut:
        image = None if job.image_sha256 is None else JobImage(
            sha256=job.image_sha256, format=job.image_format, width=job.image_width, height=job.image_height)
        return cls(
            id=job.id, status=job.status, model=job.model, prompt=job.prompt, priority=job.priority,
            max_tokens=job.max_tokens, temperature=job.temperature, top_p=job.top_p, seed=job.seed,
            messages=job.messages,
            image=image, created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
            preset=job.preset, result=JobResult.of(job, job.response_schema, job.grounding),
            cached=job.cached_from is not None, cache_of=job.cached_from,
            usage=Usage.of(job), timings=Timings.of(job), batch_size=job.batch_size, worker=job.worker,
            attempts=job.attempts,
            error=None if job.error_code is None else JobError(code=job.error_code, message=job.error_message),
            metadata=job.metadata_, batch_id=job.batch_id, custom_id=job.custom_id,
            webhook=None if job.webhook_url is None else WebhookRef(url=job.webhook_url),
            image_expired_at=job.image_expired_at, result_expired_at=job.result_expired_at,
            page_mode=job.page_mode,
            pages=None if job.page_mode is None else [JobPageOut.of(page, job.response_schema) for page in job.pages],
        )


class RequestCounts(Shape):
    """OpenAI's request_counts (failed counts refused and failed items; cancelled is VLQ's own)."""

    total: int
    completed: int
    failed: int
    cancelled: int


class InputTokensDetails(Shape):
    cached_tokens: int  # VLQ keeps no prompt cache that skips tokens: always 0 (a dedup-cached item costs none)


class OutputTokensDetails(Shape):
    reasoning_tokens: int  # the models VLQ serves do not reason apart from their answer: always 0


class BatchUsage(Shape):
    """OpenAI's batch usage: the tokens of the batch's ended items so far."""

    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class BatchOut(Shape):
    """A batch in OpenAI's shape, plus VLQ's priority and webhook."""

    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: dict[str, Any] | None
    input_file_id: str | None
    completion_window: str
    status: BatchStatus
    output_file_id: str | None
    error_file_id: str | None
    created_at: UnixSeconds
    expires_at: UnixSeconds
    in_progress_at: UnixSeconds
    finalizing_at: UnixSeconds
    completed_at: UnixSeconds
    failed_at: UnixSeconds
    expired_at: UnixSeconds
    cancelling_at: UnixSeconds
    cancelled_at: UnixSeconds
    request_counts: RequestCounts
    usage: BatchUsage
    model: str | None  # the model its items ask for; None before its file is read, or if they ask for several
    metadata: dict[str, Any] | None
    priority: Priority
    webhook: WebhookRef | None
    # While items wait for a model no live worker serves (set by the API), one per such model.
    warnings: list[ModelWarning] = Field(default_factory=list)

    @classmethod
    def from_row(cls, batch: models.Batch) -> BatchOut:
        """The batch; its counts and usage are the row's, kept by the job state machine (service.core.lifecycle)."""
        counts = RequestCounts(total=batch.request_total, completed=batch.request_completed,
                               failed=batch.request_failed, cancelled=batch.request_cancelled)
        usage = BatchUsage(input_tokens=batch.input_tokens, output_tokens=batch.output_tokens,
                           total_tokens=batch.input_tokens + batch.output_tokens,
                           input_tokens_details=InputTokensDetails(cached_tokens=0),
                           output_tokens_details=OutputTokensDetails(reasoning_tokens=0))
        return cls(
            id=batch.id, endpoint=batch.endpoint, errors=batch.errors, input_file_id=batch.input_file_id,
            completion_window=batch.completion_window, status=batch.status, output_file_id=batch.output_file_id,
            error_file_id=batch.error_file_id, **{stamp: getattr(batch, stamp) for stamp in _BATCH_STAMPS},
            request_counts=counts, usage=usage, model=batch.model, metadata=batch.metadata_,
            priority=batch.priority, webhook=None if batch.webhook_url is None else WebhookRef(url=batch.webhook_url),
        )


_BATCH_STAMPS = ("created_at", "expires_at", "in_progress_at", "finalizing_at", "completed_at", "failed_at",
                 "expired_at", "cancelling_at", "cancelled_at")


class FileOut(Shape):
    """A file in OpenAI's shape."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: UnixSeconds
    filename: str
    purpose: str
    status: str = "processed"
    expires_at: UnixSeconds = Field(description="Unix seconds; null for a file that does not expire on its own")

    @classmethod
    def from_row(cls, file: models.File) -> FileOut:
        return cls(id=file.id, bytes=file.bytes, created_at=file.created_at, filename=file.filename,
                   purpose=file.purpose, expires_at=file.expires_at)


class FileDeleted(Deleted):
    object: Literal["file"] = "file"


class ApiKeyOut(Shape):
    """An API key: never its hash, and its secret only in the answer that created it."""

    id: str
    object: Literal["api_key"] = "api_key"
    name: str
    tenant: str
    admin: bool
    prefix: str
    rate_limit_rps: float | None
    max_queued_jobs: int | None
    created_at: Timestamp
    last_used_at: Timestamp | None
    revoked_at: Timestamp | None
    key: str | MISSING = Field(MISSING, description="The secret: only in the answer that created the key.")

    @classmethod
    def from_row(cls, key: models.ApiKey, *, secret: str | None = None) -> ApiKeyOut:
        shown = cls(id=key.id, name=key.name, tenant=key.tenant, admin=key.admin, prefix=key.prefix,
                    rate_limit_rps=key.rate_limit_rps, max_queued_jobs=key.max_queued_jobs,
                    created_at=key.created_at, last_used_at=key.last_used_at, revoked_at=key.revoked_at)
        if secret is not None:
            shown.key = secret
        return shown


class WebhookEndpointOut(Shape):
    """A registered receiver; its signing secret only in the answer that created it."""

    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    url: str
    events: list[EventType] | None
    description: str | None
    format: Literal["vlq", "openai"]
    status: Literal["active", "disabled"]
    disabled_reason: str | None
    created_at: Timestamp
    disabled_at: Timestamp | None
    secret: str | MISSING = Field(MISSING, description="Only in the answer that created the endpoint.")

    @classmethod
    def from_row(cls, endpoint: models.WebhookEndpoint, *, with_secret: bool = False) -> WebhookEndpointOut:
        shown = cls(id=endpoint.id, url=endpoint.url, events=endpoint.events, description=endpoint.description,
                    format=endpoint.format, status=endpoint.status, disabled_reason=endpoint.disabled_reason,
                    created_at=endpoint.created_at, disabled_at=endpoint.disabled_at)
        if with_secret:
            shown.secret = endpoint.secret
        return shown


class WebhookEndpointDeleted(Deleted):
    object: Literal["webhook_endpoint"] = "webhook_endpoint"


class WebhookAttemptOut(Shape):
    attempt: int
    status_code: int | None
    error: str | None
    latency_ms: float
    response_body: str | None
    next_attempt_at: Timestamp | None
    at: Timestamp

    @classmethod
    def from_row(cls, attempt: models.WebhookAttempt) -> WebhookAttemptOut:
        return cls(attempt=attempt.attempt, status_code=attempt.status_code, error=attempt.error,
                   latency_ms=round(attempt.latency_ms, 1), response_body=attempt.response_body,
                   next_attempt_at=attempt.next_attempt_at, at=attempt.created_at)


class WebhookDeliveryOut(Shape):
    """One event to one receiver and its attempt log (never the secret)."""

    id: str
    object: Literal["webhook_delivery"] = "webhook_delivery"
    event_type: EventType
    subject_id: str
    endpoint_id: str | None
    url: str
    status: Literal["pending", "succeeded", "failed", "cancelled"]
    attempts: int
    next_attempt_at: Timestamp | None
    last_status_code: int | None
    last_error: str | None
    created_at: Timestamp
    finished_at: Timestamp | None
    log: list[WebhookAttemptOut]

    @classmethod
    def from_row(cls, delivery: models.WebhookDelivery, attempts: list[models.WebhookAttempt]) -> WebhookDeliveryOut:
        return cls(
            id=delivery.id, event_type=delivery.event_type, subject_id=delivery.subject_id,
            endpoint_id=delivery.endpoint_id, url=delivery.url, status=delivery.status, attempts=delivery.attempts,
            next_attempt_at=delivery.next_attempt_at if delivery.status == "pending" else None,
            last_status_code=delivery.last_status_code, last_error=delivery.last_error,
            created_at=delivery.created_at, finished_at=delivery.finished_at,
            log=[WebhookAttemptOut.from_row(attempt) for attempt in attempts],
        )


class WebhookEvent(Shape):
    """The body POSTed to a receiver: the event, when it happened, and its subject as the API shows it."""

    type: EventType
    timestamp: Timestamp
    data: JobOut | BatchOut


class PresetOut(Shape):
    """A configured preset and what it fills in; `model` null means the server's default_model."""

    object: Literal["preset"] = "preset"
    name: str
    prompt: str | None
    model: str | None
    max_tokens: int | None
    schema_: dict[str, Any] | None = Field(alias="schema")
    labels: list[str]
    ground_with_ocr: bool
    max_pixels: int | None

    @classmethod
    def of(cls, preset: Preset) -> PresetOut:
        return cls(name=preset.name, prompt=preset.prompt, model=preset.model, max_tokens=preset.max_tokens,
                   schema=preset.output_schema(), labels=list(preset.labels), ground_with_ocr=preset.ground_with_ocr,
                   max_pixels=preset.max_pixels)


class ErrorDetail(Shape):
    code: str
    message: str
    details: dict[str, Any] | MISSING = MISSING


class ErrorOut(Shape):
    """Every VLQ error (service.core.errors.ApiError.body)."""

    error: ErrorDetail


class HealthOut(Shape):
    status: Literal["ok"] = "ok"


class ReadinessOut(Shape):
    """Ready when the database and Redis answer and a live worker has a model loaded; `missing` says what is not.

    `checks`, `models` and `workers` (host names, PIDs, model states) are shown only to callers with a valid key.
    """

    status: Literal["ready", "not_ready"]
    missing: list[str]
    checks: dict[str, str] | MISSING = MISSING
    models: list[str] | MISSING = MISSING
    # Each configured model that no live worker has live: why (no_worker, model_loading, model_unavailable) and
    # what fixes it.
    unserved: list[ModelWarning] | MISSING = MISSING
    workers: list[dict[str, Any]] | MISSING = MISSING

    def summary(self) -> ReadinessOut:
        """The same answer without the detail, for callers without a key."""
        return ReadinessOut(status=self.status, missing=self.missing)


def _ms_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds() * 1000, 1)
