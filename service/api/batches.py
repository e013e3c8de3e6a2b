"""Batches: OpenAI's Batch API (a JSONL input file of chat requests), plus a native form (images + one prompt)."""
from __future__ import annotations

import json
import lzma
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Annotated, Any, ClassVar

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue
from pydantic import Field
from sqlalchemy import select

from service.adapters.db import Database
from service.api import model_warnings
from service.api.auth import current_caller
from service.api.common import (
    PageQuery,
    get_or_404,
    idempotency_key,
    newest_first,
    page,
    read_query,
    request_fields,
)
from service.api.context import get_blobs, get_broker, get_db, get_session, get_settings
from service.api.openapi import JSON, MULTIPART, operation, text_response
from service.core import batch_lifecycle, batches, expiry, jobs
from service.core.config import Settings
from service.core.errors import ApiError, ErrorCode
from service.core.exports import content_disposition, csv_lines, field_cells, field_columns
from service.core.models import Batch, Job, Priority
from service.core.requests import options_model, task_model
from service.core.shapes import Timings, Usage
from service.core.validation import Choice, RequestModel, Spec, Text, combine, parse, per_settings

bp = Blueprint("batches", __name__, url_prefix="/v1/batches")

# Which zip entries are items (not folders' notes, say); what each one is, its bytes tell.
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".pdf", ".tif", ".tiff", ".heic", ".heif"}
_CSV_COLUMNS = ["custom_id", "status", "text", "prompt_tokens", "completion_tokens", "total_tokens",
                "queue_ms", "ttft_ms", "inference_ms", "total_ms", "error_code", "error_message", "job_id"]


@dataclass(frozen=True, kw_only=True)
class _Files(Spec):
    """Uploaded files under one name, repeated (native batches: `images`, `archive`); the view hands over the list."""

    codes: ClassVar[tuple[str, ...]] = ("duplicate_custom_id", "invalid_archive", "missing_field")

    def read(self, value: Any, name: str) -> list[Any]:
        return list(value)

    def schema(self, required: bool) -> dict[str, Any]:
        return {"type": "array", "items": {"type": "string", "format": "binary"}}


@per_settings
def batch_options_model(settings: Settings) -> type[RequestModel]:
    """What both batch forms take besides their requests: the completion window and the job options."""
    class Window(RequestModel):
        completion_window: Annotated[str | None, Text(max_chars=5, pattern=batches.WINDOW_PATTERN)] = Field(
            None, description="Like 24h (the default) or 90m; a batch still running past it ends expired.")
    return combine("BatchOptions", Window, options_model(settings, Priority.BULK))


@per_settings
def openai_batch_model(settings: Settings) -> type[RequestModel]:
    """OpenAI's form (JSON): a JSONL file of chat or Responses requests, uploaded before with POST /v1/files."""
    class Input(RequestModel):
        input_file_id: Annotated[str, Text(max_chars=64)] = Field(description="An uploaded JSONL file (purpose batch).")
        endpoint: Annotated[str, Choice(choices=list(batches.OPENAI_ENDPOINTS))]
        output_expires_after: Annotated[int | None, expiry.ExpiresAfter()] = Field(
            None, description="{anchor: created_at, seconds: 3600..2592000}: the output and error files expire this "
                              "long after they are written.")
    return combine("OpenAIBatch", Input, batch_options_model(settings))


@per_settings
def native_batch_model(settings: Settings) -> type[RequestModel]:
    """The native form (multipart): images and/or zips, with one prompt (or preset) and the job options."""
    class Uploads(RequestModel):
        images: Annotated[list[Any], _Files()] = Field(
            default_factory=list, description="The images, repeated; file names become custom_ids.")
        archive: Annotated[list[Any], _Files()] = Field(
            default_factory=list, description="Zips of images; paths inside become custom_ids.")
    return combine("NativeBatch", Uploads, task_model(settings), batch_options_model(settings))


class BatchListQuery(PageQuery):
    """GET /v1/batches: a page, or the batch created with one Idempotency-Key (how `vlq submit` resumes)."""

    idempotency_key: Annotated[str | None, Text(max_chars=255)] = Field(
        None, description="Only the batch created with this Idempotency-Key (none if there is none).")


class ResultsQuery(RequestModel):
    """GET /v1/batches/{id}/results: JSONL, or CSV."""

    format: Annotated[str, Choice(choices=["jsonl", "csv"])] = "jsonl"


def _batch_request(settings: Settings, body: Any, endpoint: str, **content: Any) -> batches.BatchRequest:
    """The options both forms share, and the form's own content."""
    return batches.BatchRequest(
        endpoint=endpoint, completion_window=body.completion_window or "24h", priority=body.priority,
        metadata=body.metadata, **jobs.webhook(settings, body.webhook_url, body.webhook_secret), **content)


@bp.post("")
@operation("Create a batch", body={JSON: openai_batch_model, MULTIPART: native_batch_model},
           headers=("Idempotency-Key",), tags=("batches",), responses={200: "Batch"},
           errors=("quota_exceeded", "broker_unavailable", "invalid_header", "idempotency_key_reused"),
           links={"GetBatch": ("batches.get_batch", "batch_id"), "Results": ("batches.results", "batch_id"),
                  "CancelBatch": ("batches.cancel_batch", "batch_id")})
def create_batch() -> ResponseReturnValue:
    """JSON: OpenAI's form (input_file_id, endpoint, completion_window). Multipart: images or a zip + one prompt.

    A batch that would take the tenant past its key's job quota is refused whole (429), before anything is stored.
    """
    settings = get_settings()
    request.max_content_length = settings.max_upload_bytes
    fields, _ = request_fields()
    if request.is_json:
        batch_request = _openai_request(settings, parse(openai_batch_model(settings), fields))
    else:
        uploads = {name: request.files.getlist(name) for name in ("images", "archive")}
        batch_request = _native_request(settings, parse(native_batch_model(settings), {**fields, **uploads}))
    session = get_session()
    batch, replayed = batches.submit(session, get_db(), get_blobs(), get_broker(), settings, current_caller(),
                                     batch_request, idempotency_key())
    models = [batch_request.task_fields["model"]] if batch_request.task_fields else []
    out = model_warnings.batch_out(session, batch, model_warnings.live_workers(), models)
    headers = [("Idempotent-Replayed", "true")] if replayed else []
    return jsonify(out.dump()), 200, [*headers, *model_warnings.headers(out.warnings)]


def _openai_request(settings: Settings, body: Any) -> batches.BatchRequest:
    return _batch_request(settings, body, body.endpoint, input_file_id=body.input_file_id,
                          output_expires_after_s=body.output_expires_after)


def _native_request(settings: Settings, body: Any) -> batches.BatchRequest:
    task = jobs.resolve_task(settings, body)
    images = tuple(batches.store_image(settings, get_blobs(), name, data, model=task.options.model, pages=task.pages,
                                       page_mode=task.page_mode)
                   for name, data in _uploaded_images(settings, body.images, body.archive))
    if not images:
        raise ApiError(ErrorCode.MISSING_FIELD, "Send images as 'images' files or a zip as 'archive'.",
                       {"field": "images"})
    duplicates = sorted(name for name, count in Counter(image.custom_id for image in images).items() if count > 1)
    if duplicates:
        raise ApiError(ErrorCode.DUPLICATE_CUSTOM_ID, "Image file names must be unique; they become custom_ids.",
                       {"duplicates": duplicates[:20]})
    return _batch_request(settings, body, batches.NATIVE_ENDPOINT, task_fields=task.job_fields(), images=images)


def _uploaded_images(settings: Settings, images: list[Any], archives: list[Any]) -> Iterator[tuple[str, bytes]]:
    """(custom_id, bytes) for each uploaded image and each image inside an uploaded zip, one at a time.

    A zip is bounded before it is read, from its directory (`max_archive_entries` images, `max_archive_bytes` once
    inflated), and while it is read: no entry is inflated past `max_image_bytes` + 1, nor the whole past the cap.
    """
    for upload in images:
        yield upload.filename or "image", upload.read()
    entries, inflated = 0, 0
    for upload in archives:
        try:
            archive = zipfile.ZipFile(upload.stream)
            members = [entry for entry in archive.infolist() if _is_image_entry(entry)]
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise ApiError(ErrorCode.INVALID_ARCHIVE, f"'archive' is not a readable zip file: {exc}.") from None
        entries += len(members)
        if entries > settings.max_archive_entries:
            raise _archive_too_large("max_archive_entries", settings.max_archive_entries, "images")
        if inflated + sum(entry.file_size for entry in members) > settings.max_archive_bytes:
            raise _archive_too_large("max_archive_bytes", settings.max_archive_bytes, "bytes once inflated")
        for entry in members:
            if len(entry.filename) > batches.MAX_CUSTOM_ID_CHARS or any(ord(c) < 32 for c in entry.filename):
                raise ApiError(ErrorCode.INVALID_ARCHIVE, "A path in 'archive' is over 255 characters or has control "
                               "characters; paths become custom_ids.", {"entry": entry.filename[:300]})
            data = _read_entry(archive, entry, settings.max_image_bytes + 1)
            inflated += len(data)
            if inflated > settings.max_archive_bytes:  # a directory that understated its sizes
                raise _archive_too_large("max_archive_bytes", settings.max_archive_bytes, "bytes once inflated")
            yield entry.filename, data


def _is_image_entry(entry: zipfile.ZipInfo) -> bool:
    path = PurePosixPath(entry.filename)
    return (not entry.is_dir() and not path.name.startswith(".") and "__MACOSX" not in path.parts
            and path.suffix.lower() in _IMAGE_SUFFIXES)


def _read_entry(archive: zipfile.ZipFile, entry: zipfile.ZipInfo, limit: int) -> bytes:
    """At most `limit` bytes of one entry; a corrupt, encrypted or oddly compressed one is the client's error."""
    try:
        with archive.open(entry) as member:
            return member.read(limit)
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError, OSError, zlib.error,
            lzma.LZMAError) as exc:
        raise ApiError(ErrorCode.INVALID_ARCHIVE, f"'archive' entry {entry.filename!r} cannot be read: {exc}.",
                       {"entry": entry.filename}) from None


def _archive_too_large(setting: str, limit: int, unit: str) -> ApiError:
    return ApiError(ErrorCode.ARCHIVE_TOO_LARGE,
                    f"The zips hold more than {limit} {unit} ({setting}); split the batch.", {setting: limit})


@bp.get("")
@operation("List batches, newest first", query=BatchListQuery, tags=("batches",), responses={200: "BatchList"})
def list_batches() -> ResponseReturnValue:
    query = read_query(BatchListQuery)
    keyed = [Batch.idempotency_key == query.idempotency_key] if query.idempotency_key is not None else []
    rows, limit = newest_first(Batch, *keyed, query=query)
    session = get_session()
    waiting = any(row.status in model_warnings.WAITING_BATCH for row in rows)
    workers = model_warnings.live_workers() if waiting else None
    return jsonify(page(rows, limit, lambda batch: model_warnings.batch_out(session, batch, workers)))


@bp.get("/<batch_id>")
@operation("Get a batch", tags=("batches",), responses={200: "Batch"})
def get_batch(batch_id: str) -> ResponseReturnValue:
    session = get_session()
    batch = get_or_404(session, Batch, batch_id, "batch")
    waiting = batch.status in model_warnings.WAITING_BATCH
    out = model_warnings.batch_out(session, batch, model_warnings.live_workers() if waiting else None)
    return jsonify(out.dump()), 200, model_warnings.headers(out.warnings)


@bp.post("/<batch_id>/cancel")
@operation("Cancel a batch", tags=("batches",), responses={200: "Batch"}, errors=("batch_not_cancellable",))
def cancel_batch(batch_id: str) -> ResponseReturnValue:
    """Queued items are cancelled at once; running ones finish; finished results stay readable."""
    session = get_session()
    batches.cancel(get_db(), session, get_blobs(), get_or_404(session, Batch, batch_id, "batch"))
    return jsonify(batch_lifecycle.render(get_or_404(session, Batch, batch_id, "batch")).dump())


@bp.get("/<batch_id>/results")
@operation("Every item so far, streamed", query=ResultsQuery, tags=("batches",),
           responses={200: text_response("JSONL (one item a line) or CSV.", "application/jsonl", "text/csv")})
def results(batch_id: str) -> ResponseReturnValue:
    """Every item so far, streamed: JSONL by default, or CSV with ?format=csv."""
    session = get_session()
    get_or_404(session, Batch, batch_id, "batch")
    fmt = read_query(ResultsQuery).format
    items = _stream_items(get_db(), batch_id)
    if fmt == "csv":
        # `json` is not a column: it is in `text` already, and an extraction's fields get a column each, with their
        # confidence (a first pass reads which fields there are). Cells are neutralised for spreadsheets (exports).
        columns = _CSV_COLUMNS + field_columns(_stream_groundings(get_db(), batch_id))
        rows = ({**item, **field_cells(item if "fields" in item else None)} for item in items)
        return Response(csv_lines(columns, rows), mimetype="text/csv",
                        headers={"Content-Disposition": content_disposition(f"{batch_id}.csv")})
    return Response((json.dumps(item) + "\n" for item in items), mimetype="application/jsonl")


def _stream_items(db: Database, batch_id: str) -> Iterator[dict[str, Any]]:
    # Its own session: the body streams after the request's session has been closed.
    query = select(Job).where(Job.batch_id == batch_id).order_by(Job.custom_id).execution_options(yield_per=500)
    with db.sessions() as session:
        for job in session.scalars(query):
            yield _result_row(job)


def _stream_groundings(db: Database, batch_id: str) -> Iterator[dict[str, Any] | None]:
    query = select(Job.grounding).where(Job.batch_id == batch_id, Job.grounding.is_not(None)).order_by(
        Job.custom_id).execution_options(yield_per=500)
    with db.sessions() as session:
        yield from session.scalars(query)


def _result_row(job: Job) -> dict[str, Any]:
    usage = Usage.of(job)
    return {
        "custom_id": job.custom_id, "status": job.status, "text": job.result_text, "json": job.result_json,
        "prompt_tokens": usage and usage.prompt_tokens, "completion_tokens": usage and usage.completion_tokens,
        "total_tokens": usage and usage.total_tokens, **Timings.of(job).dump(),
        "error_code": job.error_code, "error_message": job.error_message, "job_id": job.id,
        **(job.grounding or {}),  # an extraction's fields, review and review_reasons
    }
