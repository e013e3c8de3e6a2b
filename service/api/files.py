"""Files, OpenAI-compatible: upload a batch input file, read generated output and error files."""
from __future__ import annotations

from typing import Annotated, Any

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue
from pydantic import Field
from sqlalchemy import select

from service.adapters.blobs import BlobNotFound
from service.api.auth import current_tenant
from service.api.common import PageQuery, get_or_404, newest_first, page, read_query, request_values
from service.api.context import get_blobs, get_session, get_settings
from service.api.openapi import MULTIPART, operation, text_response
from service.core import expiry
from service.core.batches import store_file
from service.core.errors import ApiError, ErrorCode
from service.core.exports import content_disposition
from service.core.models import Batch, File, utcnow
from service.core.shapes import FileDeleted, FileOut
from service.core.validation import Choice, Number, RequestModel, Upload, parse

bp = Blueprint("files", __name__, url_prefix="/v1/files")

PURPOSES = ("batch", "batch_output", "vision", "user_data")


class FileUpload(RequestModel):
    """POST /v1/files (multipart)."""

    file: Annotated[Any, Upload(missing_message="'{name}' is required (multipart).")] = Field(
        description="A JSONL batch input file.")
    purpose: Annotated[str, Choice(choices=PURPOSES)]
    expires_after: Annotated[int | None, expiry.ExpiresAfter()] = Field(
        None, description="OpenAI's {anchor: created_at, seconds: 3600..2592000}: the file is gone after it.")

    @classmethod
    def prefill(cls, values: dict[str, Any]) -> dict[str, Any]:
        return expiry.nest_form_fields(values, "expires_after")


class FileList(PageQuery):
    """GET /v1/files: longer pages (a batch's files), optionally of one purpose."""

    limit: Annotated[int, Number(low=1, high=10_000, integer=True)] = 20
    purpose: Annotated[str | None, Choice(choices=PURPOSES)] = None


@bp.post("")
@operation("Upload a file", body=FileUpload, media=(MULTIPART,), tags=("files",), responses={200: "File"},
           links={"GetFile": ("files.get_file", "file_id"), "Content": ("files.content", "file_id"),
                  "DeleteFile": ("files.delete", "file_id")})
def upload() -> ResponseReturnValue:
    request.max_content_length = get_settings().max_upload_bytes  # batch input files are large
    body = parse(FileUpload, request_values())
    session = get_session()
    file = store_file(session, get_blobs(), body.file.stream, body.file.filename or "upload", body.purpose,
                      current_tenant(), expires_after_s=body.expires_after)
    session.commit()
    return jsonify(FileOut.from_row(file).dump())


@bp.get("")
@operation("List files, newest first", query=FileList, tags=("files",), responses={200: "FileList"})
def list_files() -> ResponseReturnValue:
    query = read_query(FileList)
    filters = [expiry.live(utcnow()), *([File.purpose == query.purpose] if query.purpose else [])]
    rows, limit = newest_first(File, *filters, query=query)
    return jsonify(page(rows, limit, FileOut.from_row))


@bp.get("/<file_id>")
@operation("Get a file's description", tags=("files",), responses={200: "File"})
def get_file(file_id: str) -> ResponseReturnValue:
    return jsonify(FileOut.from_row(_live_file(file_id)).dump())


@bp.get("/<file_id>/content")
@operation("Download a file's bytes", tags=("files",),
           responses={200: text_response("The bytes.", "application/jsonl", "application/octet-stream"),
                      307: {"description": "With `blob_presign_s` set and blobs on S3: a presigned URL that "
                                           "serves the bytes straight from the bucket (Location)."}})
def content(file_id: str) -> ResponseReturnValue:
    file = _live_file(file_id)
    mimetype = "application/jsonl" if file.filename.endswith(".jsonl") else "application/octet-stream"
    disposition = content_disposition(file.filename)
    if get_settings().blob_presign_s > 0:
        url = get_blobs().presigned_url(file.sha256, get_settings().blob_presign_s, disposition=disposition,
                                        content_type=mimetype)
        if url is not None:  # large outputs then never pass through the API process
            return Response(status=307, headers={"Location": url, "Cache-Control": "no-store"})
    try:
        stream = get_blobs().open(file.sha256)
    except BlobNotFound:  # retention removed it a moment before the row
        raise ApiError(ErrorCode.NOT_FOUND, f"File {file_id!r} has expired.", {"id": file_id}) from None
    return Response(_chunks(stream), mimetype=mimetype,
                    headers={"Content-Length": str(file.bytes), "Content-Disposition": disposition})


@bp.delete("/<file_id>")
@operation("Delete a file", tags=("files",), responses={200: "FileDeleted"}, errors=("file_in_use",))
def delete(file_id: str) -> ResponseReturnValue:
    session = get_session()
    file = _live_file(file_id)
    in_use = session.scalar(select(Batch.id).where(Batch.input_file_id == file_id,
                                                  Batch.status.in_(["validating", "in_progress", "cancelling"])))
    if in_use:
        raise ApiError(ErrorCode.FILE_IN_USE, f"Batch {in_use} is still reading this file.", {"batch_id": in_use})
    session.delete(file)
    session.commit()
    # The blob may be shared (content-addressed); the retention pass deletes it once nothing refers to it.
    return jsonify(FileDeleted(id=file_id).dump())


def _live_file(file_id: str) -> File:
    """The caller's file; one past its `expires_at` is a 404 at once, as after retention has deleted it."""
    file = get_or_404(get_session(), File, file_id, "file")
    if expiry.expired(file):
        raise ApiError(ErrorCode.NOT_FOUND, f"No file with id {file_id!r}.", {"id": file_id})
    return file


def _chunks(stream, size: int = 256 * 1024):  # type: ignore[no-untyped-def]
    with stream:
        while chunk := stream.read(size):
            yield chunk
