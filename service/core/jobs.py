"""Accepting a job: store the image, insert the row, then hand it to the queue once it is committed."""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.adapters.blobs import BlobStore
from service.adapters.db import Database
from service.core import documents, lifecycle, logs
from service.core.config import Settings
from service.core.documents import Page, Source
from service.core.errors import ApiError, ErrorCode
from service.core.group_commit import GroupCommit
from service.core.images import ImageInfo
from service.core.models import Job, JobStatus, new_id
from service.core.ports import Sender
from service.core.requests import generation_model
from service.core.tenancy import Caller
from service.core.validation import parse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationOptions:
    """How to generate: shared by single jobs and every item of a batch."""

    model: str
    max_tokens: int
    temperature: float
    ignore_eos: bool
    top_p: float | None = None  # None: the engine's default
    seed: int | None = None  # sampling only; None: the worker draws a fresh one for each run

    def job_fields(self) -> dict[str, Any]:
        return dict(vars(self))  # its fields are plain values: no need for asdict's deep copy (once per batch item)


@dataclass(frozen=True)
class Pages:
    """A job's inputs read page by page: a document, several images, or page options. The first input is the
    job's `image`; every input's bytes are stored, and each page becomes a JobPage row."""

    sources: tuple[tuple[str, str], ...]  # (sha256, format) of each input, in order
    pages: tuple[Page, ...]  # the pages to read, in order
    mode: str  # "document" or "per_page"


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
    stream: bool = False  # the worker publishes the text as it is generated (service.adapters.token_stream)
    document: Pages | None = None  # None: one plain image, read whole (no page rows)

    def fingerprint(self) -> str:
        """Identifies the request's content, so an Idempotency-Key reused for a different request is caught."""
        fields = asdict(self) | {"image": None}
        fields.pop("stream")  # how the answer is delivered, not what is asked
        # Options added later count only when set, so requests from before them keep their fingerprints.
        for holder, name in ((fields["task"], "messages"), (fields["task"], "max_pixels"),
                             (fields["task"]["options"], "top_p"), (fields["task"]["options"], "seed"),
                             (fields, "document"), (fields["task"], "pages")):
            if holder[name] is None:
                del holder[name]
        if fields["task"]["page_mode"] == "document":  # the default, as every request before it had
            del fields["task"]["page_mode"]
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()

    def cache_key(self) -> str | None:
        """What makes two requests' results interchangeable; None if the result must not be reused.

        Sampled (temperature > 0) results are random draws unless the caller fixed the `seed`, and ignore_eos runs
        are load tests: neither is cached. The preset counts through what it resolved to (prompt, model, schema,
        max_tokens), not by name.
        """
        task, options = self.task, self.task.options
        sampled = options.temperature > 0
        # Pages are rendered and read per job (their images and results are the job's own): never shared.
        if (sampled and options.seed is None) or options.ignore_eos or self.document is not None:
            return None
        fields = {"image": self.image_sha256, "model": options.model, "prompt": task.prompt,
                  "max_tokens": options.max_tokens, "schema": task.response_schema, "ocr": task.ground_with_ocr}
        if sampled:  # a seeded draw is reproducible, from the same distribution only
            fields["sampling"] = [options.temperature, options.top_p, options.seed]
        if task.messages is not None:  # a conversation: every turn counts, not only the last prompt
            fields["messages"] = task.messages
        if task.max_pixels is not None:  # the model saw a smaller image
            fields["max_pixels"] = task.max_pixels
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Task:
    """What to ask and how, after presets are applied: shared by a job and every item of a native batch."""

    prompt: str
    options: GenerationOptions
    preset: str | None
    response_schema: dict[str, Any] | None
    ground_with_ocr: bool
    messages: list[dict[str, Any]] | None = None  # a conversation (see Job.messages); `prompt` is its last turn
    max_pixels: int | None = None  # the preset's bound on the image's size, below the model's; None: the model's
    pages: str | None = None  # which pages of the inputs to read ("1-3,7"); None: all
    page_mode: str = "document"  # "document" or "per_page" (see Pages)

    def job_fields(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "preset": self.preset, "response_schema": self.response_schema,
                "ground_with_ocr": self.ground_with_ocr, "messages": self.messages, "max_pixels": self.max_pixels,
                **self.options.job_fields()}


def resolve_task(settings: Settings, fields: Any, messages: list[dict[str, Any]] | None = None) -> Task:
    """The task a request asks for: its fields (a `task_model`, presets applied) checked against each other.

    `messages` makes it a conversation, whose last user turn is the `prompt`.
    """
    preset = settings.presets.get(fields.preset) if fields.preset else None
    options = GenerationOptions(**{name: getattr(fields, name) for name in generation_model(settings).model_fields})
    ocr = settings.registry[options.model].engine == "rapidocr"
    if fields.prompt is None and not ocr:  # only an OCR model reads an image without a prompt
        raise ApiError(ErrorCode.MISSING_FIELD, "'prompt' is required.", {"field": "prompt"})
    schema = fields.response_format
    if schema is None and preset is not None:
        schema = preset.output_schema()
    if ocr and (schema is not None or fields.ground_with_ocr):
        field = "response_format" if schema is not None else "ground_with_ocr"
        raise ApiError(ErrorCode.INVALID_FIELD,
                       f"'{field}' needs a vision-language model; {options.model!r} is an OCR engine.",
                       {"field": field})
    if messages is not None and fields.ground_with_ocr:
        raise ApiError(ErrorCode.INVALID_FIELD, "'ground_with_ocr' works on a single prompt, not a conversation.",
                       {"field": "ground_with_ocr"})
    return Task(prompt=fields.prompt or "", options=options, preset=preset.name if preset else None,
                response_schema=schema, ground_with_ocr=fields.ground_with_ocr, messages=messages,
                max_pixels=preset.max_pixels if preset else None, pages=getattr(fields, "pages", None),
                page_mode=getattr(fields, "page_mode", "document"))


def generation_options(settings: Settings, fields: dict[str, Any]) -> GenerationOptions:
    """model, max_tokens, temperature, top_p and ignore_eos, validated against the registry and the limits."""
    return GenerationOptions(**parse(generation_model(settings), fields).model_dump())


def job_request(settings: Settings, fields: Any, inputs: bytes | list[bytes], *,
                messages: list[dict[str, Any]] | None = None, stream: bool = False,
                image_field: str = "image") -> JobRequest:
    """A job's fields (a `job_model`) and image or documents (and conversation) as a JobRequest.

    `image_field` names where the image came from in the family's request (`details.field` of an image error).
    """
    task = resolve_task(settings, fields, messages)
    try:
        found = read_inputs(settings, inputs, model=task.options.model, pages=task.pages,
                            page_mode=task.page_mode, messages=messages)
    except ApiError as error:
        error.details = {"field": image_field, **(error.details or {})}
        raise
    return JobRequest(
        task=task,
        priority=fields.priority,
        metadata=fields.metadata,
        image_sha256=found.digests[0],
        image=found.image,
        document=found.document,
        no_cache=fields.no_cache,
        stream=stream,
        **webhook(settings, fields.webhook_url, fields.webhook_secret),
    )


@dataclass(frozen=True)
class Inputs:
    """A request's inputs, checked: their digests, the first one's type and first page's size, and their pages
    (None: one plain image, read whole)."""

    digests: tuple[str, ...]
    image: ImageInfo
    document: Pages | None


def read_inputs(settings: Settings, inputs: bytes | list[bytes], *, model: str, pages: str | None = None,
                page_mode: str = "document", messages: list[dict[str, Any]] | None = None) -> Inputs:
    """Check a job's (or batch item's) images and documents and plan its pages; ApiError on the first problem."""
    inputs = [inputs] if isinstance(inputs, bytes) else inputs
    sources = [documents.inspect_source(data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels,
                                        dpi=settings.pdf_dpi, max_pages=settings.max_pages) for data in inputs]
    digests = tuple(hashlib.sha256(data).hexdigest() for data in inputs)
    document = _pages(settings, model, sources, digests, pages, page_mode, messages)
    width, height = (document.pages[0].width, document.pages[0].height) if document else sources[0].sizes[0]
    return Inputs(digests=digests, image=ImageInfo(format=sources[0].format, width=width, height=height),
                  document=document)


def _pages(settings: Settings, model: str, sources: list[Source], digests: tuple[str, ...], spec: str | None,
           page_mode: str, messages: list[dict[str, Any]] | None) -> Pages | None:
    """The inputs as pages, unless the job is one plain image read whole as always (then None)."""
    plain = len(sources) == 1 and not sources[0].is_document
    if plain and spec is None and page_mode == "document":
        return None
    pages = documents.select_pages(sources, spec, max_pixels=settings.max_image_pixels, max_pages=settings.max_pages)
    # An OCR engine reads one image at a time: its pages are always read on their own.
    mode = "per_page" if settings.registry[model].engine == "rapidocr" else page_mode
    if mode == "document" and len(pages) > settings.max_pages_per_request:
        raise ApiError(ErrorCode.TOO_MANY_PAGES,
                       f"{len(pages)} pages are more than the model sees at once (max_pages_per_request "
                       f"{settings.max_pages_per_request}); choose fewer with 'pages', or page_mode \"per_page\".",
                       {"pages": len(pages), "limit": settings.max_pages_per_request, "field": "page_mode"})
    if messages is not None and len(pages) != len(_image_marks(messages)):
        raise ApiError(ErrorCode.INVALID_FIELD, "A conversation reads one page per image part; send documents as "
                       "a single user turn, or to /v1/jobs.", {"field": "messages"})
    return Pages(sources=tuple(zip(digests, (source.format for source in sources), strict=True)),
                 pages=tuple(pages), mode=mode)


def _image_marks(messages: list[dict[str, Any]]) -> list[int]:
    return [1 for message in messages if isinstance(message.get("content"), list)
            for part in message["content"] if isinstance(part, dict) and part.get("type") == "image"]


def webhook(settings: Settings, url: str | None, secret: str | None) -> dict[str, str]:
    """A job's or batch's own webhook; without a webhook_secret it is signed with the configured one."""
    if url is None:
        if secret is not None:
            raise ApiError(ErrorCode.MISSING_FIELD, "'webhook_secret' needs a 'webhook_url'.", {"field": "webhook_url"})
        return {}
    secret = secret or settings.webhook_secret or None
    if secret is None:
        raise ApiError(ErrorCode.MISSING_FIELD,
                       "'webhook_secret' is required: this server has no default webhook_secret.",
                       {"field": "webhook_secret"})
    return {"webhook_url": url, "webhook_secret": secret}


def submit(
    session: Session, blobs: BlobStore, committer: GroupCommit, request: JobRequest, inputs: bytes | list[bytes],
    idempotency_key: str | None, caller: Caller,
) -> tuple[Job, bool]:
    """Create and enqueue a job for the caller's tenant; returns (job, replayed) where replayed means the key
    matched an earlier job of that tenant. A new job must fit the caller's quota (429 otherwise).

    The job is inserted, committed and sent by `committer`, with whatever other requests of this process submit
    at the same moment; an identical earlier request's result (`cache_key`) answers it at once instead.
    """
    fingerprint = request.fingerprint()
    tenant = caller.tenant
    if idempotency_key:
        existing = _by_idempotency_key(session, tenant, idempotency_key, fingerprint)
        if existing is not None:
            return existing, True
    caller.admit_jobs(session, 1)

    for data in [inputs] if isinstance(inputs, bytes) else inputs:
        blobs.put(data)
    cache_key = request.cache_key()
    job_id = new_id("job")
    logs.bind(job_id=job_id)  # the request's lines from here on are about this job (reset when it ends)
    fields = dict(
        id=job_id,
        tenant=tenant,
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
        stream=request.stream,
        page_mode=request.document.mode if request.document is not None else None,
    )
    source = _cached(session, tenant, cache_key) if cache_key is not None and not request.no_cache else None
    try:
        if source is not None:
            return _answer_from_cache(session, fields, source), False
        pages = page_rows(job_id, request.document) if request.document is not None else []
        # The request's reads end before the job is accepted: if the database went away, that fails now, as a
        # 503 the client retries, not after the job exists, where it would hide an accepted job behind an error.
        session.commit()
        job = committer.accept(fields, pages)
    except IntegrityError:
        # Two requests with one Idempotency-Key raced; the other one's insert won.
        session.rollback()
        existing = _by_idempotency_key(session, tenant, idempotency_key, fingerprint) if idempotency_key else None
        if existing is None:
            raise
        return existing, True
    log.info("job %s: queued (%s)", job.id, job.model)
    return job, False


def page_rows(job_id: str, document: Pages) -> list[dict[str, Any]]:
    """A job's JobPage rows: an image's page is the image itself; a document's is rendered when first needed."""
    rows = []
    for position, page in enumerate(document.pages):
        digest, kind = document.sources[page.source]
        rows.append({"job_id": job_id, "position": position, "number": page.number, "source_sha256": digest,
                     "source_format": kind, "source_index": page.index, "width": page.width, "height": page.height,
                     "blob_sha256": None if kind in documents.DOCUMENT_FORMATS else digest})
    return rows


def _cached(session: Session, tenant: str, cache_key: str) -> Job | None:
    """The newest succeeded result of an identical request of this tenant, if there is one.

    Tenants never share results: a hit would tell one tenant that another sent the same image and prompt.
    """
    return session.scalars(
        select(Job).where(Job.cache_key == cache_key, Job.tenant == tenant, Job.status == JobStatus.SUCCEEDED.value)
        .order_by(Job.finished_at.desc()).limit(1)
    ).first()


def _answer_from_cache(session: Session, fields: dict[str, Any], source: Job) -> Job:
    """Insert the job and finish it with `source`'s result, in the request's own transaction."""
    job = lifecycle.create_job(session, **fields)
    lifecycle.complete_from_cache(session, job.id, source)
    session.commit()
    session.refresh(job)  # the transition was an UPDATE of the row, not of this object
    return job


def _by_idempotency_key(session: Session, tenant: str, key: str, fingerprint: str) -> Job | None:
    job = session.scalars(select(Job).where(Job.tenant == tenant, Job.idempotency_key == key)).first()
    if job is not None and job.request_sha256 != fingerprint:
        raise ApiError(ErrorCode.IDEMPOTENCY_KEY_REUSED,
                       "This Idempotency-Key was already used for a different request.",
                       {"job_id": job.id})
    return job


def cancel(session: Session, broker: Sender, job_id: str) -> bool:
    """Cancel a queued job now, or signal a running one's worker; True if a running job was signalled.

    Commits. A job that already ended, or whose cancel is already on its way, is left as it is.
    """
    if lifecycle.cancel_queued(session, job_id):
        session.commit()
        return False
    signalled = lifecycle.request_cancel(session, job_id)
    session.commit()
    if signalled:
        broker.publish_cancel(job_id)
    return signalled


def ended(db: Database, job_id: str) -> bool:
    """Whether the job has reached a terminal state, read in a short transaction of its own (so it sees new writes)."""
    with db.session() as session:
        status = session.scalar(select(Job.status).where(Job.id == job_id))
    return status is None or JobStatus(status).terminal
