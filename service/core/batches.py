"""Batches: many jobs under one id, OpenAI-style. Submission, ingest, cancel and finalize live here; the states
and their transitions are service.core.batch_lifecycle's.

An OpenAI batch is submitted `validating`, and a worker's ingest task streams its input file into job rows; a native
batch (images uploaded with one prompt) is ingested in the request that submits it. Either way the rows are
inserted and the batch moved on in one transaction, and the queued items are sent once it commits. When no item
is queued or running, the batch is finalized: output and error files are written, then it ends.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, BinaryIO

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.adapters.blobs import BlobNotFound, BlobStore, BlobStoreUnavailable
from service.adapters.db import DATABASE_UNAVAILABLE, Database
from service.core import batch_lifecycle, expiry, json_input, lifecycle, logs
from service.core.batch_lifecycle import claim_ending, transition
from service.core.config import Settings
from service.core.errors import ApiError, ErrorCode
from service.core.images import ImageInfo
from service.core.jobs import Pages, generation_options, page_rows, read_inputs
from service.core.models import Batch, BatchStatus, File, Job, JobPage, JobStatus, new_id, utcnow
from service.core.openai_format import ChatRequest, FileReader, parse_chat_request, parse_responses_request
from service.core.ports import Sender
from service.core.requests import responses_model
from service.core.shapes import BatchRequestOutput
from service.core.structured import parse_response_format
from service.core.tenancy import Caller
from service.core.validation import parse

log = logging.getLogger(__name__)

CHAT_ENDPOINT = "/v1/chat/completions"
RESPONSES_ENDPOINT = "/v1/responses"
OPENAI_ENDPOINTS = (CHAT_ENDPOINT, RESPONSES_ENDPOINT)
NATIVE_ENDPOINT = "/v1/jobs"
MAX_LISTED_ERRORS = 100
MAX_CUSTOM_ID_CHARS = 255  # the column's length, on every database
_NUL_ESCAPE = re.compile(rb"\\u0000", re.IGNORECASE)  # JSON text can carry a NUL only as this escape
WINDOW_PATTERN = r"[1-9][0-9]{0,3}[hm]"  # 24h, 90m: a whole number of hours or minutes, not zero
_WINDOW = re.compile(r"^(\d{1,4})([hm])$")
_SPOOL_BYTES = 8 * 1024 * 1024
# An ingest of at least this many items has the planner's statistics refreshed (`Database.refresh_statistics`).
_BULK_ROWS = 1000



@dataclass
class Ingest:
    """Job rows built from a batch's items, and the errors that fail the whole batch."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    pages: list[dict[str, Any]] = field(default_factory=list)  # JobPage rows of the items on documents
    errors: list[dict[str, Any]] = field(default_factory=list)
    error_count: int = 0
    _custom_ids: set[str] = field(default_factory=set)

    def fail_line(self, line: int, code: str, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_LISTED_ERRORS:
            self.errors.append({"code": code, "message": message, "param": None, "line": line})

    def add_item(self, batch: Batch, image: StoredImage, task_fields: dict[str, Any]) -> None:
        """One item's job row, and its page rows if it reads a document or several images."""
        row = item_row(batch, image, task_fields)
        self.rows.append(row)
        if image.document is not None and "error_code" not in row:
            self.pages.extend(page_rows(row["id"], image.document))

    def model(self) -> str | None:
        """The model the items ask for: None if they ask for several, or every item was refused."""
        models = {row["model"] for row in self.rows if not row.get("error_code")}
        return models.pop() if len(models) == 1 else None

    def claim_custom_id(self, custom_id: str, line: int) -> bool:
        if custom_id in self._custom_ids:
            self.fail_line(line, "duplicate_custom_id", f"custom_id {custom_id!r} appears more than once.")
            return False
        self._custom_ids.add(custom_id)
        return True


# -- creating ----------------------------------------------------------------------------------

def expires_at_for(window: str) -> Any:
    match = _WINDOW.match(window or "")
    if not match or int(match.group(1)) == 0:
        raise ApiError(ErrorCode.INVALID_FIELD, "'completion_window' must look like '24h' or '90m'.",
                       {"field": "completion_window"})
    amount, unit = int(match.group(1)), match.group(2)
    return utcnow() + (timedelta(hours=amount) if unit == "h" else timedelta(minutes=amount))


@dataclass(frozen=True)
class BatchRequest:
    """What a new batch asks for, whichever form it came in: OpenAI's (an uploaded JSONL file) or the native one
    (images, each with its custom_id, and one task for them all)."""

    endpoint: str
    completion_window: str
    priority: str
    metadata: dict[str, Any] | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = None
    input_file_id: str | None = None  # OpenAI's form
    output_expires_after_s: int | None = None  # OpenAI's output_expires_after: the output and error files' lifetime
    task_fields: dict[str, Any] | None = None  # the native form: the job columns of what to ask of every image
    images: tuple[StoredImage, ...] = ()  # the native form: each image, checked and stored as it was read

    def fingerprint(self) -> str:
        """Identifies the request's content, so an Idempotency-Key reused for a different request is caught."""
        content = {name: getattr(self, name) for name in (
            "endpoint", "completion_window", "priority", "metadata", "webhook_url", "webhook_secret",
            "input_file_id", "output_expires_after_s", "task_fields")}
        content["images"] = [[image.custom_id, image.sha256] for image in self.images]
        return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def submit(session: Session, db: Database, blobs: BlobStore, broker: Sender, settings: Settings, caller: Caller,
           request: BatchRequest, idempotency_key: str | None) -> tuple[Batch, bool]:
    """Create a batch for the caller's tenant and send it on; returns (batch, replayed), where replayed means the key
    matched an earlier batch of that tenant with the same request (a different one is a 409).

    The whole batch must fit the caller's quota (429 otherwise, nothing stored). An OpenAI batch is ingested by a
    worker; a native one's items are created here, and the batch is in progress when this returns.
    """
    fingerprint = request.fingerprint()
    if idempotency_key:
        existing = _by_idempotency_key(session, caller.tenant, idempotency_key, fingerprint)
        if existing is not None:
            return existing, True
    if request.input_file_id is None:
        caller.admit_jobs(session, len(request.images))
    else:
        file = _input_file(session, caller.tenant, request.input_file_id)
        if caller.max_queued_jobs:  # counting reads the whole file, so only when a quota needs the count now
            caller.admit_jobs(session, count_requests(blobs, file))
    batch_id = new_id("batch")
    logs.bind(batch_id=batch_id)  # the request's lines from here on are about this batch (reset when it ends)
    batch = create_batch(
        session, tenant=caller.tenant, endpoint=request.endpoint, input_file_id=request.input_file_id,
        completion_window=request.completion_window, priority=request.priority, metadata=request.metadata,
        idempotency_key=idempotency_key, webhook_url=request.webhook_url, webhook_secret=request.webhook_secret,
        batch_id=batch_id, request_sha256=fingerprint, output_expires_after_s=request.output_expires_after_s)
    queued: list[Job] = []
    if request.input_file_id is None:
        session.flush()
        items = Ingest()
        for image in request.images:
            items.add_item(batch, image, request.task_fields or {})
        queued = start(session, batch, items)
    try:
        session.commit()
    except IntegrityError:  # a concurrent request with the same Idempotency-Key won
        session.rollback()
        if not idempotency_key:
            raise
        existing = _by_idempotency_key(session, caller.tenant, idempotency_key, fingerprint)
        if existing is None:
            raise
        return existing, True
    if request.input_file_id is not None:
        broker.enqueue_ingest(batch.id)  # if the broker is down, the dispatcher pass sends it later
    else:
        send_started(db, blobs, broker, batch.id, queued)
    session.expire_all()
    return session.get(Batch, batch.id), False


def send_started(db: Database, blobs: BlobStore, broker: Sender, batch_id: str, queued: list[Job]) -> None:
    """Once a batch's start has committed: send its queued items, or end it if every item was refused."""
    broker.enqueue(queued)
    if not queued:
        maybe_finalize(db, blobs, batch_id)


def _input_file(session: Session, tenant: str, file_id: str) -> File:
    """The tenant's uploaded file; another tenant's, or an expired one, is refused as if it did not exist."""
    file = _live_file(session, tenant, file_id)
    if file is None:
        raise ApiError(ErrorCode.INVALID_FIELD, f"No file with id {file_id!r}; upload it with POST /v1/files.",
                       {"field": "input_file_id"})
    return file


def _live_file(session: Session, tenant: str, file_id: str) -> File | None:
    file = session.get(File, file_id)
    if file is None or file.tenant != tenant or expiry.expired(file):
        return None
    return file


def file_reader(session: Session, blobs: BlobStore, settings: Settings, tenant: str) -> FileReader:
    """Reads the tenant's uploaded file as an image, for an `input_image` that names it by `file_id`."""
    def read(file_id: str, field: str) -> bytes:
        file = _live_file(session, tenant, file_id)
        try:
            if file is not None:
                if file.bytes > settings.max_image_bytes:
                    raise ApiError(ErrorCode.IMAGE_TOO_LARGE, f"The file {file_id!r} is over the "
                                   f"{settings.max_image_bytes}-byte image limit.", {"field": field})
                with blobs.open(file.sha256) as stream:
                    return stream.read(settings.max_image_bytes + 1)
        except BlobNotFound:  # retention removed it a moment before the row
            pass
        raise ApiError(ErrorCode.INVALID_FIELD, f"No file with id {file_id!r}; upload it with POST /v1/files.",
                       {"field": field})
    return read


def _by_idempotency_key(session: Session, tenant: str, key: str, fingerprint: str) -> Batch | None:
    batch = session.scalars(select(Batch).where(Batch.tenant == tenant, Batch.idempotency_key == key)).first()
    if batch is not None and batch.request_sha256 not in (None, fingerprint):
        raise ApiError(ErrorCode.IDEMPOTENCY_KEY_REUSED,
                       "This Idempotency-Key was already used for a different request.", {"batch_id": batch.id})
    return batch


def create_batch(session: Session, *, tenant: str, endpoint: str, input_file_id: str | None, completion_window: str,
                 priority: str, metadata: dict[str, Any] | None, idempotency_key: str | None,
                 webhook_url: str | None = None, webhook_secret: str | None = None,
                 batch_id: str | None = None, request_sha256: str | None = None,
                 output_expires_after_s: int | None = None) -> Batch:
    """Add a new batch of `tenant` in `validating` to the session; its items and files will belong to that tenant."""
    return batch_lifecycle.create(
        session, id=batch_id or new_id("batch"), tenant=tenant, endpoint=endpoint, input_file_id=input_file_id,
        completion_window=completion_window, priority=priority, metadata_=metadata, idempotency_key=idempotency_key,
        request_sha256=request_sha256, expires_at=expires_at_for(completion_window), webhook_url=webhook_url,
        webhook_secret=webhook_secret, output_expires_after_s=output_expires_after_s)


@dataclass(frozen=True)
class StoredImage:
    """A batch item's image, checked and stored as soon as it is read, so a batch never holds its images in memory."""

    custom_id: str
    sha256: str  # of the bytes sent (the first input's, for several)
    info: ImageInfo | None = None
    error: ApiError | None = None  # why it was refused (then nothing was stored)
    document: Pages | None = None  # a document or several images: its pages


def store_image(settings: Settings, blobs: BlobStore, custom_id: str, inputs: bytes | list[bytes], *, model: str,
                pages: str | None = None, page_mode: str = "document",
                messages: list[dict[str, Any]] | None = None) -> StoredImage:
    """Check one item's image (or documents, or images) and store it; a bad one is kept as its error, to become a
    failed item."""
    inputs = [inputs] if isinstance(inputs, bytes) else inputs
    try:
        found = read_inputs(settings, inputs, model=model, pages=pages, page_mode=page_mode, messages=messages)
    except ApiError as error:
        # Without its traceback: its frames hold the image's bytes, and a batch keeps every item's error.
        return StoredImage(custom_id, hashlib.sha256(inputs[0]).hexdigest(), error=error.with_traceback(None))
    for data in inputs:
        blobs.put(data)
    return StoredImage(custom_id, found.digests[0], info=found.image, document=found.document)


def item_row(batch: Batch, image: StoredImage, task_fields: dict[str, Any]) -> dict[str, Any]:
    """One batch item as a job row; a bad image makes a row that is already failed, never a failed batch.

    `task_fields` are the job columns of what to ask and how (prompt, model, options, preset, schema).
    """
    row: dict[str, Any] = {"id": new_id("job"), "tenant": batch.tenant, "batch_id": batch.id,
                           "custom_id": image.custom_id, "priority": batch.priority, **task_fields}
    if image.info is None:
        assert image.error is not None
        return refused_row(row, image.error)
    row.update(image_sha256=image.sha256, image_format=image.info.format, image_width=image.info.width,
               image_height=image.info.height, page_mode=image.document.mode if image.document else None,
               request_sha256=hashlib.sha256(f"{batch.id}:{image.custom_id}".encode()).hexdigest())
    return row


def refused_row(row: dict[str, Any], error: ApiError) -> dict[str, Any]:
    """A row for an item refused at ingest: its error makes the state machine start it `failed`."""
    return {**row, "error_code": error.code, "error_message": error.message, "request_sha256": ""}


def read_openai_lines(lines: Iterable[bytes], batch: Batch, settings: Settings, blobs: BlobStore,
                      read_file: FileReader | None = None) -> Ingest:
    """Stream an OpenAI batch input file (JSONL of {custom_id, method, url, body}) into job rows; `read_file` reads
    the images that /v1/responses lines name by `file_id` (none are found without it)."""
    ingest = Ingest()
    read_file = read_file or _no_files
    for number, raw in enumerate(lines, start=1):
        if raw is None:
            ingest.fail_line(number, "line_too_long", f"Line {number} is over {max_line_bytes(settings)} bytes.")
            continue
        if not raw.strip():
            continue
        try:
            line = json_input.loads(raw, settings.max_json_depth)
        except (ValueError, UnicodeDecodeError) as exc:  # not JSON, or nested past max_json_depth
            ingest.fail_line(number, "invalid_json_line", f"Line {number} is not valid JSON: {exc}.")
            continue
        if not isinstance(line, dict):
            ingest.fail_line(number, "invalid_request", f"Line {number} is not a JSON object.")
            continue
        fault = json_input.fault(line, settings.max_json_depth)
        if fault is not None or _NUL_ESCAPE.search(raw):  # what the databases would store differently, or refuse
            problem = f"at {fault.path or 'the top'} {fault.problem}" if fault else "has a NUL character"
            ingest.fail_line(number, "invalid_request", f"Line {number} {problem}.")
            continue
        custom_id = line.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            ingest.fail_line(number, "missing_custom_id", f"Line {number} has no custom_id string.")
            continue
        if len(custom_id) > MAX_CUSTOM_ID_CHARS:
            ingest.fail_line(number, "invalid_custom_id",
                             f"Line {number}'s custom_id is over {MAX_CUSTOM_ID_CHARS} characters.")
            continue
        if line.get("method", "POST") != "POST" or line.get("url") != batch.endpoint:
            ingest.fail_line(number, "invalid_url",
                             f"Line {number} must be a POST to {batch.endpoint}, the batch's endpoint.")
            continue
        if not ingest.claim_custom_id(custom_id, number):
            continue
        try:
            request = line_request(batch.endpoint, line.get("body"), settings, read_file)
            options = generation_options(settings, request.job_fields())
            schema = parse_response_format(request.response_format)
        except ApiError as error:
            # The line is well-formed but its request is not: that item fails, its neighbours run.
            placeholder = {"id": new_id("job"), "tenant": batch.tenant, "batch_id": batch.id, "custom_id": custom_id,
                           "prompt": "", "priority": batch.priority, "model": settings.default_model, "max_tokens": 0,
                           "temperature": 0.0, "ignore_eos": False}
            ingest.rows.append(refused_row(placeholder, error))
            continue
        conversation = request.conversation
        stored = store_image(settings, blobs, custom_id, conversation.images, model=options.model,
                             messages=conversation.messages)
        ingest.add_item(batch, stored, {"prompt": conversation.prompt, "messages": conversation.messages,
                                        "response_schema": schema, **options.job_fields()})
    return ingest


def line_request(endpoint: str, body: Any, settings: Settings, read_file: FileReader) -> ChatRequest:
    """A batch line's `body`, read as the batch's endpoint reads it (a chat request, or a Responses request)."""
    if endpoint != RESPONSES_ENDPOINT:
        return parse_chat_request(body, settings)
    if not isinstance(body, dict):
        raise ApiError(ErrorCode.INVALID_REQUEST, "The request body must be a JSON object.")
    parse(responses_model(settings), body)
    return parse_responses_request(body, settings, read_file)


def _no_files(file_id: str, field: str) -> bytes:
    raise ApiError(ErrorCode.INVALID_FIELD, f"No file with id {file_id!r}.", {"field": field})


def max_line_bytes(settings: Settings) -> int:
    """The longest input line ingest reads: one image as base64 (a data URL) and the rest of a chat request."""
    return settings.max_image_bytes * 4 // 3 + 1024 * 1024


def bounded_lines(stream: BinaryIO, limit: int) -> Iterator[bytes | None]:
    """The stream's lines, each read into memory only up to `limit` bytes: a longer one is skipped, as None."""
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) <= limit:
            yield line
            continue
        while line and not line.endswith(b"\n"):  # skip the rest of the long line, a bounded piece at a time
            line = stream.readline(limit + 1)
        yield None


def count_requests(blobs: BlobStore, file: File) -> int:
    """The requests in a batch input file: its non-blank lines, as ingest will read them."""
    with blobs.open(file.sha256) as stream:
        # A long line is skipped unread (None) and still counts: counting needs no line held whole.
        return sum(1 for line in bounded_lines(stream, 64 * 1024) if line is None or line.strip())


def start(session: Session, batch: Batch, ingest: Ingest) -> list[Job]:
    """Insert the rows and move the batch on: `failed` if any line was malformed, else `in_progress`.

    Returns the queued jobs, to enqueue once the caller has committed.
    """
    if ingest.error_count:
        transition(session, batch.id, BatchStatus.VALIDATING, BatchStatus.FAILED,
                   errors={"object": "list", "data": ingest.errors})
        return []
    if not ingest.rows:
        transition(session, batch.id, BatchStatus.VALIDATING, BatchStatus.FAILED, errors={"object": "list", "data": [
            {"code": "empty_batch", "message": "The batch has no requests.", "param": None, "line": None}]})
        return []
    # The transition first: if an ingest task was delivered twice, only one of them inserts the rows.
    if not transition(session, batch.id, BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, model=ingest.model()):
        return []
    queued = lifecycle.create_jobs(session, ingest.rows)
    if ingest.pages:
        session.execute(insert(JobPage), ingest.pages)
    return [Job(id=row["id"], model=row["model"], priority=row["priority"], attempts=0) for row in queued]


def ingest(db: Database, blobs: BlobStore, broker: Sender, settings: Settings, batch_id: str, *,
           give_up: Callable[[], bool]) -> str | None:
    """Validate a `validating` batch's input file line by line, insert its jobs in bulk and send them; returns the
    batch's new status, or None if it was not `validating` (a redelivered task, or a batch cancelled first).

    The ingest is one transaction, retried while the database is unavailable until `give_up()`.
    """

    def read_and_start(session: Session) -> tuple[list[Job], Ingest] | None:
        batch = session.get(Batch, batch_id)
        if batch is None or batch.status != BatchStatus.VALIDATING.value:
            return None
        file = session.get(File, batch.input_file_id)
        try:
            with blobs.open(file.sha256) as stream:
                result = read_openai_lines(bounded_lines(stream, max_line_bytes(settings)), batch, settings, blobs,
                                           file_reader(session, blobs, settings, batch.tenant))
        except (*DATABASE_UNAVAILABLE, BlobStoreUnavailable):  # not the file's fault: the caller tries again
            raise
        except Exception:  # a batch never stays validating: whatever breaks the read fails it, with a reason
            log.exception("batch %s: its input file could not be read", batch_id)
            result = Ingest()
            result.fail_line(0, "unreadable_input_file", "The input file could not be read.")
        return start(session, batch, result), result

    started = db.retrying(read_and_start, what=f"batch {batch_id}: ingest", give_up=give_up)
    if started is None:
        return None
    queued, result = started
    log.info("batch %s: %d items ingested, %d queued, %d malformed lines",
             batch_id, len(result.rows), len(queued), result.error_count)
    if len(result.rows) >= _BULK_ROWS:
        db.refresh_statistics(Job.__tablename__)  # before the sends' records look the new rows up
    send_started(db, blobs, broker, batch_id, queued)
    with db.session() as session:
        return session.scalar(select(Batch.status).where(Batch.id == batch_id))


# -- reading -----------------------------------------------------------------------------------

def result_lines(session: Session, batch_id: str, *, succeeded: bool) -> Iterator[BatchRequestOutput]:
    """The batch's output-file lines (succeeded items) or error-file lines (the rest that ended), by custom_id."""
    ended = [JobStatus.FAILED.value, JobStatus.CANCELLED.value]
    wanted = Job.status == JobStatus.SUCCEEDED.value if succeeded else Job.status.in_(ended)
    endpoint = session.scalar(select(Batch.endpoint).where(Batch.id == batch_id)) or CHAT_ENDPOINT
    query = select(Job).where(Job.batch_id == batch_id, wanted).order_by(Job.custom_id)
    for job in session.scalars(query.execution_options(yield_per=500)):
        yield BatchRequestOutput.of(job, endpoint)


# -- cancelling, finalizing ----------------------------------------------------------------------

def cancel(db: Database, session: Session, blobs: BlobStore, batch: Batch) -> None:
    """Cancel the queued items now; running ones finish. Commits; the batch ends `cancelled` once none is running
    (at once if none is)."""
    if batch.status not in (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS):
        raise ApiError(ErrorCode.BATCH_NOT_CANCELLABLE, f"A batch that is {batch.status} cannot be cancelled.",
                       {"status": batch.status})
    # Its items first, then the batch: every transaction locks job rows before their batch's row (an item's
    # ending adds to the batch's counts), so a cancel and an item's ending never wait on each other in a cycle.
    lifecycle.cancel_queued_in_batch(session, batch.id)
    if not transition(session, batch.id, BatchStatus(batch.status), BatchStatus.CANCELLING):
        session.rollback()  # it moved on meanwhile (a concurrent cancel, or its ingest); it is shown as it is
        return
    session.commit()
    maybe_finalize(db, blobs, batch.id)
    session.expire_all()


def pending(batch: Batch) -> int:
    """Its items not ended yet, from the counts the job state machine keeps on the row."""
    return batch.request_total - batch.request_completed - batch.request_failed - batch.request_cancelled


def maybe_finalize(db: Database, blobs: BlobStore, batch_id: str) -> bool:
    """If no item is pending, write the output and error files and end the batch. Safe to call from anywhere."""
    with db.session() as session:
        batch = session.get(Batch, batch_id)
        if batch is None or pending(batch):
            return False
        if not claim_ending(session, batch_id, BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING):
            return False
        if batch.status == BatchStatus.IN_PROGRESS.value:
            transition(session, batch_id, BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING)
    with db.session() as session:
        batch = session.get(Batch, batch_id, populate_existing=True)
        ending = BatchStatus.COMPLETED if batch.status == BatchStatus.FINALIZING.value else BatchStatus.CANCELLED
        _end_with_files(session, blobs, batch_id, BatchStatus(batch.status), ending)
    return True


def expire_overdue(db: Database, blobs: BlobStore) -> int:
    """Batches past their completion_window: queued items are cancelled and the batch ends `expired`,
    with what finished so far in its files (items still running finish, but after the batch ended)."""
    with db.session() as session:
        overdue = session.execute(select(Batch.id, Batch.status).where(
            Batch.status.in_([BatchStatus.VALIDATING.value, BatchStatus.IN_PROGRESS.value]),
            Batch.expires_at < utcnow(), Batch.finalizing_at.is_(None))).all()
    expired = 0
    for batch_id, status in overdue:  # a validating one has no items yet: it ends with no files
        with db.session() as session:
            lifecycle.cancel_queued_in_batch(session, batch_id)  # the items before the batch's row, as in cancel()
            if not claim_ending(session, batch_id, BatchStatus(status)):
                session.rollback()  # someone else ends it
                continue
            _end_with_files(session, blobs, batch_id, BatchStatus(status), BatchStatus.EXPIRED)
            expired += 1
    return expired


def _end_with_files(session: Session, blobs: BlobStore, batch_id: str, source: BatchStatus,
                    ending: BatchStatus) -> None:
    """Write the output and error files of everything ended so far, and move the batch to `ending`."""
    tenant, lifetime = session.execute(
        select(Batch.tenant, Batch.output_expires_after_s).where(Batch.id == batch_id)).one()
    output = _write_file(session, blobs, batch_id, tenant, lifetime, succeeded=True)
    errors = _write_file(session, blobs, batch_id, tenant, lifetime, succeeded=False)
    transition(session, batch_id, source, ending,
               output_file_id=output.id if output else None, error_file_id=errors.id if errors else None)
    log.info("batch %s ended as %s", batch_id, ending.value)


def _write_file(session: Session, blobs: BlobStore, batch_id: str, tenant: str, expires_after_s: int | None, *,
                succeeded: bool) -> File | None:
    # Spooled: a large batch's file goes to disk past a few MB instead of being held whole in memory.
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as buffer:
        for line in result_lines(session, batch_id, succeeded=succeeded):
            buffer.write(json.dumps(line.dump(), separators=(",", ":")).encode() + b"\n")
        if not buffer.tell():
            return None
        kind = "output" if succeeded else "errors"
        buffer.seek(0)
        # OpenAI's purpose for both files is batch_output (there is no batch_errors); the name tells them apart.
        return store_file(session, blobs, buffer, f"{batch_id}_{kind}.jsonl", "batch_output", tenant,
                          expires_after_s=expires_after_s)


def store_file(session: Session, blobs: BlobStore, stream: BinaryIO, filename: str, purpose: str,
               tenant: str, *, expires_after_s: int | None = None) -> File:
    """Store the bytes and add the file row of `tenant` to the session (expiring `expires_after_s` after now)."""
    sha256, size = blobs.put_stream(stream)
    now = utcnow()
    file = File(id=new_id("file"), tenant=tenant, filename=filename, purpose=purpose, bytes=size, sha256=sha256,
                created_at=now, expires_at=expiry.expires_at(now, expires_after_s))
    session.add(file)
    return file
