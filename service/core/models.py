"""Database models. Every schema change here needs an Alembic revision in migrations/versions."""
from __future__ import annotations

import enum
import os
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """A time-ordered id (48-bit milliseconds + 80 random bits, Crockford base32), so ids sort by creation."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    return f"{prefix}_{''.join(reversed(chars))}"


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC and always returns aware UTC, so SQLite and Postgres read back alike."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; use service.core.models.utcnow()")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class TenantOwned:
    """A row that belongs to one tenant: the API finds it only for that tenant's keys (service/api/common.py).

    No default on purpose: a row created without a tenant fails its insert instead of landing in some tenant.
    """

    tenant: Mapped[str] = mapped_column(String(64))


class ApiKey(TenantOwned, Base):
    """An API key: only the SHA-256 of the secret is stored (see service/core/keys.py for why that hash).

    Tenant-owned like jobs: an admin key finds and lists only its own tenant's keys.
    """

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # hex SHA-256 of the whole secret
    prefix: Mapped[str] = mapped_column(String(16))  # the secret's first characters, to tell keys apart in lists
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    rate_limit_rps: Mapped[float | None] = mapped_column(Float)  # None: the configured default; 0: unlimited
    max_queued_jobs: Mapped[int | None] = mapped_column(Integer)  # None: the configured default; 0: unlimited
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class Priority(enum.StrEnum):
    INTERACTIVE = "interactive"
    BULK = "bulk"


class BatchStatus(enum.StrEnum):
    """OpenAI's batch states."""

    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


class File(TenantOwned, Base):
    """An uploaded or generated file (OpenAI Files API); the bytes live in the blob store."""

    __tablename__ = "files"
    __table_args__ = (Index("ix_files_tenant_id", "tenant", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime]
    # OpenAI's `expires_after` (an upload's) or the batch's `output_expires_after` (its output and error files):
    # past it the file answers 404, and retention deletes it. None: only retention_files_s applies.
    expires_at: Mapped[datetime | None] = mapped_column(index=True)


class Batch(TenantOwned, Base):
    __tablename__ = "batches"
    __table_args__ = (
        Index("ix_batches_tenant_id", "tenant", "id"),
        UniqueConstraint("tenant", "idempotency_key", name="uq_batches_tenant_idempotency_key"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    endpoint: Mapped[str] = mapped_column(String(64))
    input_file_id: Mapped[str | None] = mapped_column(String(40))
    completion_window: Mapped[str] = mapped_column(String(16))
    priority: Mapped[str] = mapped_column(String(16))
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata")
    errors: Mapped[dict[str, Any] | None]  # validation errors, OpenAI's {"object": "list", "data": [...]}
    output_file_id: Mapped[str | None] = mapped_column(String(40))
    error_file_id: Mapped[str | None] = mapped_column(String(40))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))  # unique per tenant
    request_sha256: Mapped[str | None] = mapped_column(String(64))  # what it asked for (None: created before 0010)
    webhook_url: Mapped[str | None] = mapped_column(String(2048))  # gets the batch's ending event
    webhook_secret: Mapped[str | None] = mapped_column(String(255))
    output_expires_after_s: Mapped[int | None]  # OpenAI's output_expires_after: its files expire this long after
    # When the ingest task was last handed to the broker; None while no message is known to be there
    # (never sent, or lost with the broker's data), so the dispatcher sends it (see workers.maintenance).
    enqueued_at: Mapped[datetime | None]
    # The model its items ask for (None while none was read, or if they ask for several).
    model: Mapped[str | None] = mapped_column(String(128))
    # Its items' counts and token totals, kept by the job state machine in the same transaction as each
    # transition (service.core.lifecycle), so reading a batch never counts its items.
    request_total: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    request_completed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    request_failed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    request_cancelled: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    in_progress_at: Mapped[datetime | None]
    finalizing_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    failed_at: Mapped[datetime | None]
    expired_at: Mapped[datetime | None]
    cancelling_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]


class Job(TenantOwned, Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_status_id", "status", "id"),
        Index("ix_jobs_batch_id_status", "batch_id", "status"),
        Index("ix_jobs_tenant_id", "tenant", "id"),
        Index("ix_jobs_tenant_status_id", "tenant", "status", "id"),  # the quota's count, and filtered lists
        Index("ix_jobs_status_enqueued_at", "status", "enqueued_at"),  # the dispatcher's query
        Index("ix_jobs_finished_at", "finished_at"),  # retention's query
        UniqueConstraint("batch_id", "custom_id", name="uq_jobs_batch_custom_id"),
        UniqueConstraint("tenant", "idempotency_key", name="uq_jobs_tenant_idempotency_key"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(128))
    prompt: Mapped[str] = mapped_column(Text)
    priority: Mapped[str] = mapped_column(String(16))
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    custom_id: Mapped[str | None] = mapped_column(String(255))

    # Null only for a batch item refused at ingest (its error says why).
    image_sha256: Mapped[str | None] = mapped_column(String(64), index=True)  # indexed: retention asks who uses a blob
    image_format: Mapped[str | None] = mapped_column(String(8))
    image_width: Mapped[int | None] = mapped_column(Integer)
    image_height: Mapped[int | None] = mapped_column(Integer)

    max_tokens: Mapped[int] = mapped_column(Integer)
    temperature: Mapped[float]
    top_p: Mapped[float | None]  # nucleus sampling; None leaves the engine's default (1.0)
    # Sampling (temperature > 0): the caller's seed, or after the run the one drawn for it; None while greedy.
    seed: Mapped[int | None] = mapped_column(BigInteger)
    ignore_eos: Mapped[bool] = mapped_column(default=False)
    # A conversation (chat requests): system/user/assistant turns, `{"type": "image"}` marking where the job's
    # image sits. The engine applies the model's chat template over all of them. None for a single prompt.
    messages: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    stream: Mapped[bool] = mapped_column(default=False)  # the worker publishes text as it is generated
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata")
    preset: Mapped[str | None] = mapped_column(String(64))
    response_schema: Mapped[dict[str, Any] | None]  # the output must validate against it (preset or response_format)
    ground_with_ocr: Mapped[bool] = mapped_column(default=False)
    max_pixels: Mapped[int | None]  # the preset's bound on the image's size, if lower than the model's
    # A job on a document or several images: "document" (the model sees its pages in one request) or "per_page"
    # (one request a page, each with its own result); its pages are JobPage rows. None: one plain image, no rows.
    page_mode: Mapped[str | None] = mapped_column(String(16))
    # Identical requests share a key (service.core.jobs.JobRequest.cache_key); None for requests never cached.
    cache_key: Mapped[str | None] = mapped_column(String(64), index=True)
    cached_from: Mapped[str | None] = mapped_column(String(40))  # the job whose result this one reused

    idempotency_key: Mapped[str | None] = mapped_column(String(255))  # unique per tenant
    request_sha256: Mapped[str] = mapped_column(String(64))

    result_text: Mapped[str | None] = mapped_column(Text)
    finish_reason: Mapped[str | None] = mapped_column(String(16))  # stop | length | cancelled
    result_json: Mapped[dict[str, Any] | None]  # the parsed output of a schema-constrained job
    result_lines: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)  # OCR: [{text, box, confidence}]
    # An extraction's grounded fields: {fields: {path: {value, confidence, page, bbox, grounded}}, review,
    # review_reasons} (service.core.grounding). None for other jobs.
    grounding: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    prompt_tokens: Mapped[int | None]
    completion_tokens: Mapped[int | None]
    ttft_ms: Mapped[float | None]
    inference_ms: Mapped[float | None]
    batch_size: Mapped[int | None]

    worker: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)

    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    cancel_requested_at: Mapped[datetime | None]
    # When the job's task was last handed to the broker; None while no message is known to be there
    # (not sent yet, requeued, or lost with the broker's data), so the dispatcher sends it.
    enqueued_at: Mapped[datetime | None]
    # Retention: when the image (its blob reference) and the result were removed; the row and its stats stay.
    image_expired_at: Mapped[datetime | None]
    result_expired_at: Mapped[datetime | None]

    webhook_url: Mapped[str | None] = mapped_column(Text)
    webhook_secret: Mapped[str | None] = mapped_column(String(128))  # never shown by the API

    # Read only (rows are added with the job, and changed through their own statements): loaded when asked for.
    pages: Mapped[list[JobPage]] = relationship("JobPage", order_by="JobPage.position", viewonly=True)


class JobPage(Base):
    """One page of a job on a document or several images, in order: where it comes from, the page as an image,
    and (per_page mode) its own result.

    `number` counts from 1 across the job's inputs (a PDF's own page number when it is the only input). The
    page's image is `blob_sha256`: an image input's own bytes, or the page rendered to PNG by the worker when it
    first needs it (None until then). Retention removes both blobs with the job's image.
    """

    __tablename__ = "job_pages"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)  # 0-based order in the job
    number: Mapped[int] = mapped_column(Integer)
    source_sha256: Mapped[str] = mapped_column(String(64), index=True)  # the input (document or image) it is from
    source_format: Mapped[str] = mapped_column(String(8))  # JPEG, PNG, WEBP, PDF, TIFF or HEIF
    source_index: Mapped[int] = mapped_column(Integer)  # the page of a PDF, the frame of a TIFF; 0 for an image
    blob_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    width: Mapped[int] = mapped_column(Integer)  # pixels, as rendered
    height: Mapped[int] = mapped_column(Integer)

    # per_page mode: the page's own outcome (None in document mode, where the job holds the one answer).
    status: Mapped[str | None] = mapped_column(String(16))  # succeeded | failed
    result_text: Mapped[str | None] = mapped_column(Text)
    result_json: Mapped[dict[str, Any] | None]
    result_lines: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    finish_reason: Mapped[str | None] = mapped_column(String(16))
    prompt_tokens: Mapped[int | None]
    completion_tokens: Mapped[int | None]
    ttft_ms: Mapped[float | None]
    inference_ms: Mapped[float | None]
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)


class JobEvent(Base):
    """One row per state transition, written in the same transaction as the transition itself.

    It is the audit trail ("ended exactly once" is checkable) and the outbox that webhooks deliver from.
    """

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(32))  # "job.<status>"
    attempt: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]


class WebhookEndpoint(TenantOwned, Base):
    """A receiver registered once (POST /v1/webhooks) for every event of its tenant that its filter matches."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_tenant_id", "tenant", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(128))
    events: Mapped[list[str] | None] = mapped_column(JSON)  # None: every event type (of its format)
    # The bodies it gets: "vlq" (WebhookEvent, every event type) or "openai" (OpenAI's batch events, which name
    # the batch only: service.core.webhooks).
    format: Mapped[str] = mapped_column(String(16), default="vlq")
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # "active" | "disabled" (a 410 from the receiver)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]


class WebhookDelivery(TenantOwned, Base):
    """One event to one receiver: its id is the `webhook-id`, the same on every attempt.

    Created in the transaction that records the event (the outbox); delivered by workers, retried
    from `next_attempt_at`, and held by one worker at a time through `lease_until`.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_type", "subject_id", "target", name="uq_webhook_deliveries_event_target"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_tenant_id", "tenant", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(40), index=True)  # the job (or batch) the event is about
    target: Mapped[str] = mapped_column(String(40))  # an endpoint id, or "request" for the job's own webhook_url
    endpoint_id: Mapped[str | None] = mapped_column(ForeignKey("webhook_endpoints.id"))
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(128))
    body: Mapped[str] = mapped_column(Text)  # the exact JSON sent on every attempt
    status: Mapped[str] = mapped_column(String(16))  # pending | succeeded | failed | cancelled
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    lease_until: Mapped[datetime | None]
    enqueued_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


class WebhookAttempt(Base):
    """The log of one delivery attempt."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(String(64))  # timeout | connection_error | forbidden_address
    latency_ms: Mapped[float]
    response_body: Mapped[str | None] = mapped_column(Text)  # truncated
    next_attempt_at: Mapped[datetime | None]
    created_at: Mapped[datetime]

