"""Accepting a job: store the image, insert the row, then hand it to the queue once it is committed."""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service import lifecycle, logs
from service.blobs import BlobStore
from service.config import Settings
from service.dispatch import Dispatcher
from service.errors import ApiError
from service.fields import Bool, Choice, Float, Form, Int, Text
from service.images import ImageInfo
from service.models import Job, JobEvent, JobStatus, new_id
from service.presets import apply_preset
from service.structured import ResponseFormat

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationOptions:
    """How to generate: shared by single jobs and every item of a batch."""

    model: str
    max_tokens: int
    temperature: float
    ignore_eos: bool

    def job_fields(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class JobRequest:
    """A validated job submission."""

    task: Task
    priority: str
    metadata: dict[str, Any] | None
    image_sha256: str
    image: ImageInfo
    webhook_url: str | None = None
    webhook_secret: str | None = None
    no_cache: bool = False  # run it even if an identical request already has a result

    def fingerprint(self) -> str:
        """Identifies the request's content, so an Idempotency-Key reused for a different request is caught."""
        fields = asdict(self) | {"image": None}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()

    def cache_key(self) -> str | None:
        """What makes two requests' results interchangeable; None if the result must not be reused.

        Sampled (temperature > 0) results are random draws, and ignore_eos runs are load tests: neither is cached.
        The preset counts through what it resolved to (prompt, model, schema, max_tokens), not by name.
        """
        task, options = self.task, self.task.options
        if options.temperature > 0 or options.ignore_eos:
            return None
        fields = {"image": self.image_sha256, "model": options.model, "prompt": task.prompt,
                  "max_tokens": options.max_tokens, "schema": task.response_schema, "ocr": task.ground_with_ocr}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Task:
    """What to ask and how, after presets are applied: shared by a job and every item of a native batch."""

    prompt: str
    options: GenerationOptions
    preset: str | None
    response_schema: dict[str, Any] | None
    ground_with_ocr: bool

    def job_fields(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "preset": self.preset, "response_schema": self.response_schema,
                "ground_with_ocr": self.ground_with_ocr, **self.options.job_fields()}


def task_form(settings: Settings) -> Form:
    """What to ask and how: the fields `resolve_task` reads, for a job and for every item of a native batch."""
    return Form((
        Choice(name="preset", choices=sorted(settings.presets), code="unknown_preset",
               description="Fills prompt, model, max_tokens, the schema and ground_with_ocr; set fields win."),
        Text(name="prompt", max_chars=settings.max_prompt_chars, required=False,
             description="Required unless a preset gives one or the model is an OCR engine."),
        *generation_form(settings).fields,
        ResponseFormat(name="response_format", description="Constrain the output to JSON, in OpenAI's shape."),
        Bool(name="ground_with_ocr", description="OCR the image first and add its text to the prompt."),
    ))


def generation_form(settings: Settings) -> Form:
    return Form((
        Choice(name="model", choices=sorted(settings.registry), default=settings.default_model, code="unknown_model"),
        Int(name="max_tokens", default=settings.default_max_tokens, low=1, high=settings.max_tokens_limit),
        Float(name="temperature", default=0.0, low=0.0, high=2.0, description="0 is greedy."),
        Bool(name="ignore_eos", description="Generate exactly max_tokens (benchmarks, load tests)."),
    ))


def resolve_task(settings: Settings, fields: dict[str, Any]) -> Task:
    """Apply the `preset`, then validate prompt, generation options, `response_format` and `ground_with_ocr`."""
    form = task_form(settings)
    form.read("preset", fields)  # refuses what is not a configured preset's name, before it is looked up
    fields, preset = apply_preset(settings.presets, fields)
    options = generation_options(settings, fields)
    ocr = settings.registry[options.model].engine == "rapidocr"
    prompt = form.read("prompt", fields)
    if prompt is None and not ocr:  # only an OCR model reads an image without a prompt
        raise ApiError(400, "missing_field", "'prompt' is required.", {"field": "prompt"})
    schema = form.read("response_format", fields)
    if schema is None and preset is not None:
        schema = preset.output_schema()
    ground_with_ocr = form.read("ground_with_ocr", fields)
    if ocr and (schema is not None or ground_with_ocr):
        field = "response_format" if schema is not None else "ground_with_ocr"
        raise ApiError(400, "invalid_field",
                       f"'{field}' needs a vision-language model; {options.model!r} is an OCR engine.",
                       {"field": field})
    return Task(prompt=prompt or "", options=options, preset=preset.name if preset else None, response_schema=schema,
                ground_with_ocr=ground_with_ocr)


def generation_options(settings: Settings, fields: dict[str, Any]) -> GenerationOptions:
    """model, max_tokens, temperature and ignore_eos, validated against the registry and the limits."""
    form = generation_form(settings)
    return GenerationOptions(**{field.name: field.read(fields) for field in form.fields})


def submit(
    session: Session, blobs: BlobStore, dispatcher: Dispatcher, request: JobRequest, image_bytes: bytes,
    idempotency_key: str | None,
) -> tuple[Job, bool]:
    """Create and enqueue a job; returns (job, replayed) where replayed means the key matched an earlier job."""
    fingerprint = request.fingerprint()
    if idempotency_key:
        existing = _by_idempotency_key(session, idempotency_key, fingerprint)
        if existing is not None:
            return existing, True

    blobs.put(image_bytes)
    cache_key = request.cache_key()
    job_id = new_id("job")
    logs.bind(job_id=job_id)  # the request's lines from here on are about this job (reset when it ends)
    job = lifecycle.create_job(
        session,
        id=job_id,
        priority=request.priority,
        image_sha256=request.image_sha256,
        image_format=request.image.format,
        image_width=request.image.width,
        image_height=request.image.height,
        metadata_=request.metadata,
        cache_key=cache_key,
        idempotency_key=idempotency_key,
        request_sha256=fingerprint,
        **request.task.job_fields(),
        webhook_url=request.webhook_url,
        webhook_secret=request.webhook_secret,
    )
    cached = cache_key is not None and not request.no_cache and _answer_from_cache(session, job, cache_key)
    try:
        session.commit()
    except IntegrityError:
        # Two requests with one Idempotency-Key raced; the other one's insert won.
        session.rollback()
        existing = _by_idempotency_key(session, idempotency_key, fingerprint) if idempotency_key else None
        if existing is None:
            raise
        return existing, True
    if cached:
        session.refresh(job)
        return job, False

    try:
        dispatcher.enqueue([job])
    except Exception as exc:
        # Not accepted after all: remove the row so nothing waits forever on a task never sent.
        log.warning("could not enqueue job %s: %s", job.id, exc)
        session.execute(delete(JobEvent).where(JobEvent.job_id == job.id))
        session.execute(delete(Job).where(Job.id == job.id))
        session.commit()
        raise ApiError(503, "broker_unavailable",
                       "The job queue (Redis) is not reachable, so the job was not accepted; retry shortly.",
                       headers={"Retry-After": "5"}) from None
    return job, False


def _answer_from_cache(session: Session, job: Job, cache_key: str) -> bool:
    """Finish `job` with the newest succeeded result of an identical request, if there is one."""
    source = session.scalars(
        select(Job).where(Job.cache_key == cache_key, Job.status == JobStatus.SUCCEEDED.value, Job.id != job.id)
        .order_by(Job.finished_at.desc()).limit(1)
    ).first()
    if source is None:
        return False
    session.flush()  # the new row must exist for its conditional UPDATE
    return lifecycle.complete_from_cache(session, job.id, source)


def _by_idempotency_key(session: Session, key: str, fingerprint: str) -> Job | None:
    job = session.scalars(select(Job).where(Job.idempotency_key == key)).first()
    if job is not None and job.request_sha256 != fingerprint:
        raise ApiError(409, "idempotency_key_reused",
                       "This Idempotency-Key was already used for a different request.",
                       {"job_id": job.id})
    return job
