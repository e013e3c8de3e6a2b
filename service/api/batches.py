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

from service.adapters.db import Database
from service.api.auth import current_caller
from service.api.common import (
    get_or_404,
    idempotency_key,
    newest_first,
    options_form,
    owned_or_none,
    page,
    page_form,
    request_fields,
    tenant_scope,
    webhook_options,
)
from service.api.context import get_blobs, get_broker, get_db, get_session, get_settings
from service.api.openapi import JSON, MULTIPART, operation, text_response
from service.core import batches, jobs, logs
from service.core.config import Settings
from service.core.errors import ApiError
from service.core.fields import Choice, Field, Form, Text
from service.core.models import Batch, File, Job, Priority, new_id
from service.core.shapes import BatchOut, Timings, Usage

bp = Blueprint("batches", __name__, url_prefix="/v1/batches")

_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
_CSV_COLUMNS = ["custom_id", "status", "text", "prompt_tokens", "completion_tokens", "total_tokens",
                "queue_ms", "ttft_ms", "inference_ms", "total_ms", "error_code", "error_message", "job_id"]


class _Files(Field):
    """Uploaded files under one name, repeated (native batches: `images`, `archive`); read in the view."""

    codes = ("duplicate_custom_id", "invalid_archive", "missing_field")

    def schema(self) -> dict[str, Any]:
        return self._described({"type": "array", "items": {"type": "string", "format": "binary"}})


def _batch_options(settings: Settings) -> Form:
    window = Text(name="completion_window", max_chars=5, required=False, pattern=batches.WINDOW_PATTERN,
                  description="Like 24h (the default) or 90m; a batch still running past it ends expired.")
    return Form((window,)) + options_form(settings, priority=Priority.BULK)


def _options(settings: Settings, fields: dict[str, Any], key: str | None) -> dict[str, Any]:
    """create_batch's arguments that both forms share."""
    form = _batch_options(settings)
    batch_id = new_id("batch")
    logs.bind(batch_id=batch_id)  # the request's lines from here on are about this batch (reset when it ends)
    return {"completion_window": form.read("completion_window", fields) or "24h",
            "priority": form.read("priority", fields), "metadata": form.read("metadata", fields),
            "idempotency_key": key, "batch_id": batch_id, **webhook_options(settings, fields)}


def openai_form(settings: Settings) -> Form:
    """OpenAI's form (JSON): a JSONL file of chat requests, uploaded before with POST /v1/files."""
    return Form((
        Text(name="input_file_id", max_chars=64, description="An uploaded JSONL file (purpose batch)."),
        Choice(name="endpoint", choices=[batches.CHAT_ENDPOINT], required=True),
    )) + _batch_options(settings)


def native_form(settings: Settings) -> Form:
    """The native form (multipart): images and/or zips, with one prompt (or preset) and the job options."""
    return Form((
        _Files(name="images", description="The images, repeated; file names become custom_ids."),
        _Files(name="archive", description="Zips of images; paths inside become custom_ids."),
    )) + jobs.task_form(settings) + _batch_options(settings)


def list_form(settings: Settings) -> Form:
    return page_form()


def results_form(settings: Settings) -> Form:
    return Form((Choice(name="format", choices=["jsonl", "csv"], default="jsonl"),))


@bp.post("")
@operation("Create a batch", body={JSON: openai_form, MULTIPART: native_form}, headers=("Idempotency-Key",),
           tags=("batches",), responses={200: "Batch"},
           errors=("quota_exceeded", "broker_unavailable", "invalid_header"),
           links={"GetBatch": ("batches.get_batch", "batch_id"), "Results": ("batches.results", "batch_id"),
                  "CancelBatch": ("batches.cancel_batch", "batch_id")})
def create_batch() -> ResponseReturnValue:
    """JSON: OpenAI's form (input_file_id, endpoint, completion_window). Multipart: images or a zip + one prompt.

    A batch that would take the tenant past its key's job quota is refused whole (429), before anything is stored.
    """
    settings = get_settings()
    request.max_content_length = settings.max_upload_bytes
    key = idempotency_key()
    session = get_session()
    if key:
        existing = session.scalars(select(Batch).where(Batch.idempotency_key == key, *tenant_scope(Batch))).first()
        if existing is not None:
            return jsonify(batches.render(session, existing).dump()), 200, {"Idempotent-Replayed": "true"}
    fields, _ = request_fields()
    native = not request.is_json
    try:
        batch = _create_native(settings, fields, key) if native else _create_openai(settings, fields, key)
    except IntegrityError:  # a concurrent request with the same Idempotency-Key won
        session.rollback()
        batch = session.scalars(select(Batch).where(Batch.idempotency_key == key, *tenant_scope(Batch))).one()
    return jsonify(batches.render(session, batch).dump())


def _create_openai(settings: Settings, fields: dict[str, Any], key: str | None) -> Batch:
    session = get_session()
    form = openai_form(settings)
    file_id = form.read("input_file_id", fields)
    file = owned_or_none(session, File, file_id)
    if file is None:
        raise ApiError(400, "invalid_field", f"No file with id {file_id!r}; upload it with POST /v1/files.",
                       {"field": "input_file_id"})
    if form.read("endpoint", fields) != batches.CHAT_ENDPOINT:
        raise ApiError(400, "invalid_field", f"'endpoint' must be {batches.CHAT_ENDPOINT}.", {"field": "endpoint"})
    caller = current_caller()
    if caller.max_queued_jobs:  # counting reads the whole file, so only when a quota needs the count now
        caller.admit_jobs(session, batches.count_requests(get_blobs(), file))
    batch = batches.create_batch(
        session, tenant=caller.tenant, endpoint=batches.CHAT_ENDPOINT, input_file_id=file.id,
        **_options(settings, fields, key))
    session.commit()
    get_broker().enqueue_ingest(batch.id)  # if the broker is down, the dispatcher pass sends it later
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
        **_options(settings, fields, key))
    session.flush()
    ingest = batches.Ingest(rows=[batches.item_row(settings, get_blobs(), batch, name, data, task.job_fields())
                                  for name, data in images])
    queued = batches.start(session, batch, ingest)
    session.commit()
    get_broker().enqueue(queued)
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
@operation("List batches, newest first", query=list_form, tags=("batches",), responses={200: "BatchList"})
def list_batches() -> ResponseReturnValue:
    rows, limit = newest_first(Batch)
    counts = batches.request_counts(get_session(), [row.id for row in rows])
    return jsonify(page(rows, limit, lambda batch: BatchOut.from_row(batch, counts[batch.id])))


@bp.get("/<batch_id>")
@operation("Get a batch", tags=("batches",), responses={200: "Batch"})
def get_batch(batch_id: str) -> ResponseReturnValue:
    session = get_session()
    return jsonify(batches.render(session, get_or_404(session, Batch, batch_id, "batch")).dump())


@bp.post("/<batch_id>/cancel")
@operation("Cancel a batch", tags=("batches",), responses={200: "Batch"}, errors=("batch_not_cancellable",))
def cancel_batch(batch_id: str) -> ResponseReturnValue:
    """Queued items are cancelled at once; running ones finish; finished results stay readable."""
    session = get_session()
    batch = get_or_404(session, Batch, batch_id, "batch")
    batches.cancel(session, batch)
    session.commit()
    batches.maybe_finalize(get_db(), get_blobs(), batch_id)
    session.expire_all()
    return jsonify(batches.render(session, get_or_404(session, Batch, batch_id, "batch")).dump())


@bp.get("/<batch_id>/results")
@operation("Every item so far, streamed", query=results_form, tags=("batches",),
           responses={200: text_response("JSONL (one item a line) or CSV.", "application/jsonl", "text/csv")})
def results(batch_id: str) -> ResponseReturnValue:
    """Every item so far, streamed: JSONL by default, or CSV with ?format=csv."""
    session = get_session()
    get_or_404(session, Batch, batch_id, "batch")
    fmt = results_form(get_settings()).read("format", request.args.to_dict())
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
    usage = Usage.of(job)
    return {
        "custom_id": job.custom_id, "status": job.status, "text": job.result_text, "json": job.result_json,
        "prompt_tokens": usage and usage.prompt_tokens, "completion_tokens": usage and usage.completion_tokens,
        "total_tokens": usage and usage.total_tokens, **Timings.of(job).dump(),
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

