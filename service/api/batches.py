"""Batches: OpenAI's Batch API (a JSONL input file of chat requests), plus a native form (images + one prompt)."""
from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from service import batches, jobs
from service.api.common import (
    get_or_404,
    newest_first,
    owned_or_none,
    page,
    priority_option,
    request_fields,
    tenant_scope,
    webhook_options,
)
from service.auth import current_caller
from service.blobs import get_blobs
from service.config import Settings
from service.db import Database, get_db, get_session
from service.dispatch import get_dispatcher
from service.errors import ApiError
from service.fields import json_object_option
from service.models import Batch, File, Job, Priority
from service.settings import get_settings

bp = Blueprint("batches", __name__, url_prefix="/v1/batches")

_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
_CSV_COLUMNS = ["custom_id", "status", "text", "prompt_tokens", "completion_tokens", "total_tokens",
                "queue_ms", "ttft_ms", "inference_ms", "total_ms", "error_code", "error_message", "job_id"]


@bp.post("")
def create_batch() -> ResponseReturnValue:
    """JSON: OpenAI's form (input_file_id, endpoint, completion_window). Multipart: images or a zip + one prompt.

    A batch that would take the tenant past its key's job quota is refused whole (429), before anything is stored.
    """
    settings = get_settings()
    request.max_content_length = settings.max_upload_bytes
    key = request.headers.get("Idempotency-Key") or None
    session = get_session()
    if key:
        existing = session.scalars(select(Batch).where(Batch.idempotency_key == key, *tenant_scope(Batch))).first()
        if existing is not None:
            return jsonify(batches.render(session, existing)), 200, {"Idempotent-Replayed": "true"}
    fields, _ = request_fields()
    native = not request.is_json
    try:
        batch = _create_native(settings, fields, key) if native else _create_openai(settings, fields, key)
    except IntegrityError:  # a concurrent request with the same Idempotency-Key won
        session.rollback()
        batch = session.scalars(select(Batch).where(Batch.idempotency_key == key, *tenant_scope(Batch))).one()
    return jsonify(batches.render(session, batch))


def _create_openai(settings: Settings, fields: dict[str, Any], key: str | None) -> Batch:
    session = get_session()
    file_id = fields.get("input_file_id")
    file = owned_or_none(session, File, file_id) if isinstance(file_id, str) else None
    if file is None:
        raise ApiError(400, "invalid_field", f"No file with id {file_id!r}; upload it with POST /v1/files.",
                       {"field": "input_file_id"})
    if fields.get("endpoint") != batches.CHAT_ENDPOINT:
        raise ApiError(400, "invalid_field", f"'endpoint' must be {batches.CHAT_ENDPOINT}.", {"field": "endpoint"})
    caller = current_caller()
    if caller.max_queued_jobs:  # counting reads the whole file, so only when a quota needs the count now
        caller.admit_jobs(session, batches.count_requests(get_blobs(), file))
    batch = batches.create_batch(
        session, tenant=caller.tenant, endpoint=batches.CHAT_ENDPOINT, input_file_id=file.id,
        completion_window=fields.get("completion_window") or "24h",
        priority=priority_option(fields, default=Priority.BULK),
        metadata=json_object_option(fields, "metadata", max_bytes=settings.max_metadata_bytes),
        idempotency_key=key,
        **webhook_options(settings, fields),
    )
    session.commit()
    get_dispatcher().enqueue_ingest(batch.id)  # if the broker is down, the dispatcher pass sends it later
    return batch


def _create_native(settings: Settings, fields: dict[str, Any], key: str | None) -> Batch:
    task = jobs.resolve_task(settings, fields)
    images = list(_uploaded_images())
    if not images:
        raise ApiError(400, "missing_field", "Send images as 'images' files or a zip as 'archive'.",
                       {"field": "images"})
    names = [name for name, _ in images]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ApiError(400, "duplicate_custom_id", "Image file names must be unique; they become custom_ids.",
                       {"duplicates": duplicates[:20]})
    session = get_session()
    caller = current_caller()
    caller.admit_jobs(session, len(images))
    batch = batches.create_batch(
        session, tenant=caller.tenant, endpoint=batches.NATIVE_ENDPOINT, input_file_id=None,
        completion_window=fields.get("completion_window") or "24h",
        priority=priority_option(fields, default=Priority.BULK),
        metadata=json_object_option(fields, "metadata", max_bytes=settings.max_metadata_bytes),
        idempotency_key=key,
        **webhook_options(settings, fields),
    )
    session.flush()
    ingest = batches.Ingest(rows=[batches.item_row(settings, get_blobs(), batch, name, data, task.job_fields())
                                  for name, data in images])
    queued = batches.start(session, batch, ingest)
    session.commit()
    get_dispatcher().enqueue(queued)
    if not queued:
        batches.maybe_finalize(get_db(), get_blobs(), batch.id)
    session.expire_all()
    return session.get(Batch, batch.id)


def _uploaded_images() -> Iterator[tuple[str, bytes]]:
    """(custom_id, bytes) for each uploaded image and each image inside an uploaded zip."""
    for upload in request.files.getlist("images"):
        yield upload.filename or "image", upload.read()
    for upload in request.files.getlist("archive"):
        try:
            archive = zipfile.ZipFile(upload.stream)
        except zipfile.BadZipFile:
            raise ApiError(400, "invalid_archive", "'archive' is not a readable zip file.") from None
        limit = get_settings().max_image_bytes
        for entry in archive.infolist():
            path = PurePosixPath(entry.filename)
            if entry.is_dir() or path.name.startswith(".") or "__MACOSX" in path.parts:
                continue
            if path.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            # Read at most one byte past the limit: a zip bomb never inflates into memory.
            with archive.open(entry) as member:
                yield entry.filename, member.read(limit + 1)


@bp.get("")
def list_batches() -> ResponseReturnValue:
    rows, limit = newest_first(Batch)
    counts = batches.request_counts(get_session(), [row.id for row in rows])
    return jsonify(page(rows, limit, lambda batch: batch.to_dict(counts[batch.id])))


@bp.get("/<batch_id>")
def get_batch(batch_id: str) -> ResponseReturnValue:
    session = get_session()
    return jsonify(batches.render(session, get_or_404(session, Batch, batch_id, "batch")))


@bp.post("/<batch_id>/cancel")
def cancel_batch(batch_id: str) -> ResponseReturnValue:
    """Queued items are cancelled at once; running ones finish; finished results stay readable."""
    session = get_session()
    batch = get_or_404(session, Batch, batch_id, "batch")
    batches.cancel(session, batch)
    session.commit()
    batches.maybe_finalize(get_db(), get_blobs(), batch_id)
    session.expire_all()
    return jsonify(batches.render(session, get_or_404(session, Batch, batch_id, "batch")))


@bp.get("/<batch_id>/results")
def results(batch_id: str) -> ResponseReturnValue:
    """Every item so far, streamed: JSONL by default, or CSV with ?format=csv."""
    session = get_session()
    get_or_404(session, Batch, batch_id, "batch")
    fmt = request.args.get("format", "jsonl")
    if fmt not in ("jsonl", "csv"):
        raise ApiError(400, "invalid_field", "'format' must be jsonl or csv.", {"field": "format"})
    items = _stream_items(get_db(), batch_id)
    if fmt == "csv":
        return Response(_csv(items), mimetype="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{batch_id}.csv"'})
    return Response((json.dumps(item) + "\n" for item in items), mimetype="application/jsonl")


def _stream_items(db: Database, batch_id: str) -> Iterator[dict[str, Any]]:
    # Its own session: the body streams after the request's session has been closed.
    query = select(Job).where(Job.batch_id == batch_id).order_by(Job.custom_id).execution_options(yield_per=500)
    with db.sessions() as session:
        for job in session.scalars(query):
            yield _result_row(job)


def _result_row(job: Job) -> dict[str, Any]:
    data = job.to_dict()
    usage = data["usage"] or {}
    return {
        "custom_id": job.custom_id, "status": job.status, "text": job.result_text, "json": job.result_json,
        "prompt_tokens": usage.get("prompt_tokens"), "completion_tokens": usage.get("completion_tokens"),
        "total_tokens": usage.get("total_tokens"), **data["timings"],
        "error_code": job.error_code, "error_message": job.error_message, "job_id": job.id,
    }


def _csv(items: Iterator[dict[str, Any]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_CSV_COLUMNS, extrasaction="ignore")  # `json` is in `text` already
    writer.writeheader()
    for item in items:
        writer.writerow(item)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()

