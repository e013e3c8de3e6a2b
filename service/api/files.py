"""Files, OpenAI-compatible: upload a batch input file, read generated output and error files."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from service.api.common import get_or_404, newest_first, page, request_fields
from service.auth import current_tenant
from service.batches import store_file
from service.blobs import BlobNotFound, get_blobs
from service.db import get_session
from service.errors import ApiError
from service.models import Batch, File
from service.settings import get_settings

bp = Blueprint("files", __name__, url_prefix="/v1/files")

PURPOSES = ("batch", "batch_output", "batch_errors", "vision", "user_data")


@bp.post("")
def upload() -> ResponseReturnValue:
    request.max_content_length = get_settings().max_upload_bytes  # batch input files are large
    fields, files = request_fields()
    upload = files.get("file")
    if upload is None:
        raise ApiError(400, "missing_field", "'file' is required (multipart).", {"field": "file"})
    purpose = fields.get("purpose")
    if purpose not in PURPOSES:
        raise ApiError(400, "invalid_field", f"'purpose' must be one of {', '.join(PURPOSES)}.", {"field": "purpose"})
    session = get_session()
    file = store_file(session, get_blobs(), upload.stream, upload.filename or "upload", purpose, current_tenant())
    session.commit()
    return jsonify(file.to_dict())


@bp.get("")
def list_files() -> ResponseReturnValue:
    purpose = request.args.get("purpose")
    rows, limit = newest_first(File, *([File.purpose == purpose] if purpose else []), max_limit=10_000)
    return jsonify(page(rows, limit, File.to_dict))


@bp.get("/<file_id>")
def get_file(file_id: str) -> ResponseReturnValue:
    return jsonify(get_or_404(get_session(), File, file_id, "file").to_dict())


@bp.get("/<file_id>/content")
def content(file_id: str) -> ResponseReturnValue:
    file = get_or_404(get_session(), File, file_id, "file")
    try:
        stream = get_blobs().open(file.sha256)
    except BlobNotFound:  # retention removed it a moment before the row
        raise ApiError(404, "not_found", f"File {file_id!r} has expired.", {"id": file_id}) from None
    mimetype = "application/jsonl" if file.filename.endswith(".jsonl") else "application/octet-stream"
    return Response(_chunks(stream), mimetype=mimetype,
                    headers={"Content-Length": str(file.bytes),
                             "Content-Disposition": f'attachment; filename="{file.filename}"'})


@bp.delete("/<file_id>")
def delete(file_id: str) -> ResponseReturnValue:
    session = get_session()
    file = get_or_404(session, File, file_id, "file")
    in_use = session.scalar(select(Batch.id).where(Batch.input_file_id == file_id,
                                                  Batch.status.in_(["validating", "in_progress", "cancelling"])))
    if in_use:
        raise ApiError(409, "file_in_use", f"Batch {in_use} is still reading this file.", {"batch_id": in_use})
    session.delete(file)
    session.commit()
    # The blob may be shared (content-addressed); the retention pass deletes it once nothing refers to it.
    return jsonify({"id": file_id, "object": "file", "deleted": True})


def _chunks(stream, size: int = 256 * 1024):  # type: ignore[no-untyped-def]
    with stream:
        while chunk := stream.read(size):
            yield chunk
