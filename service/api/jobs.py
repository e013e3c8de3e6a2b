"""Jobs: an image (or a document, or several images) + one prompt, answered asynchronously. POST /v1/jobs, then poll
GET /v1/jobs/{id}."""
from __future__ import annotations

from typing import Annotated

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue

from service.adapters.blobs import BlobNotFound
from service.api import model_warnings
from service.api.auth import current_caller
from service.api.common import PageQuery, get_or_404, idempotency_key, newest_first, page, read_query, request_values
from service.api.context import (
    get_blobs,
    get_broker,
    get_db,
    get_group_commit,
    get_job_endings,
    get_session,
    get_settings,
)
from service.api.openapi import JSON, MULTIPART, operation, text_response
from service.core import jobs
from service.core.config import Settings
from service.core.documents import MEDIA_TYPES
from service.core.errors import ApiError, ErrorCode
from service.core.models import Job, JobPage, JobStatus
from service.core.requests import job_submit_model
from service.core.shapes import JobOut
from service.core.validation import Choice, parse

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")


class JobList(PageQuery):
    """GET /v1/jobs: a page, optionally of one status."""

    status: Annotated[str | None, Choice(choices=[s.value for s in JobStatus])] = None


@bp.post("")
@operation("Submit a job", body=job_submit_model, media=(JSON, MULTIPART), headers=("Idempotency-Key",),
           tags=("jobs",), responses={202: "Job"}, links={"GetJob": ("jobs.get_job", "job_id"),
                                          "CancelJob": ("jobs.cancel_job", "job_id")})
def create_job() -> ResponseReturnValue:
    """Store the image(s) or document and the job, then queue it; poll GET /v1/jobs/{id} for the result."""
    settings: Settings = get_settings()
    body = parse(job_submit_model(settings), request_values())
    job_request = jobs.job_request(settings, body, body.image)
    key = idempotency_key()

    job, replayed = jobs.submit(get_session(), get_blobs(), get_group_commit(), job_request, body.image, key,
                                current_caller())
    out = model_warnings.job_out(job, model_warnings.live_workers())
    headers = [("Location", f"/v1/jobs/{job.id}"), *model_warnings.headers(out.warnings)]
    if replayed:
        headers.append(("Idempotent-Replayed", "true"))
    return jsonify(out.dump()), 202, headers


@bp.get("")
@operation("List jobs, newest first", query=JobList, tags=("jobs",), responses={200: "JobList"})
def list_jobs() -> ResponseReturnValue:
    query = read_query(JobList)
    rows, limit = newest_first(Job, *([Job.status == query.status] if query.status else []), query=query)
    workers = model_warnings.live_workers() if any(row.status == JobStatus.QUEUED.value for row in rows) else None
    return jsonify(page(rows, limit, lambda job: model_warnings.job_out(job, workers)))


@bp.get("/<job_id>")
@operation("Get a job", tags=("jobs",), responses={200: "Job"})
def get_job(job_id: str) -> ResponseReturnValue:
    job = get_or_404(get_session(), Job, job_id, "job")
    out = model_warnings.job_out(job, model_warnings.live_workers() if job.status == JobStatus.QUEUED.value else None)
    return jsonify(out.dump()), 200, model_warnings.headers(out.warnings)


@bp.get("/<job_id>/image")
@operation("Get a job's image", tags=("jobs",),
           responses={200: text_response("The image (or document: its first input) as uploaded (cacheable: its bytes "
                                         "never change).", *MEDIA_TYPES.values()),
                      304: {"description": "Not modified (If-None-Match matched the image's sha256)."}})
def get_job_image(job_id: str) -> ResponseReturnValue:
    """The job's image as uploaded; its bytes never change (sha256-addressed), so browsers may keep it."""
    job = get_or_404(get_session(), Job, job_id, "job")
    if job.image_sha256 is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"Job {job_id!r} has no image: it was refused at ingest.", {"id": job_id})
    return _blob_response(job.image_sha256, MEDIA_TYPES[job.image_format], f"The image of job {job_id!r}", job_id)


@bp.get("/<job_id>/pages/<int:page>/image")
@operation("Get a page of a job as an image", tags=("jobs",),
           responses={200: text_response("The page's image: an image input as uploaded, a document's page rendered "
                                         "(PNG) once the worker read it (cacheable).", *MEDIA_TYPES.values()),
                      304: {"description": "Not modified (If-None-Match matched the image's sha256)."}})
def get_job_page_image(job_id: str, page: int) -> ResponseReturnValue:
    """Page `page` (its number, as in the job's `pages`) as an image: what thumbnails and field boxes draw on."""
    job = get_or_404(get_session(), Job, job_id, "job")
    row = next((row for row in job.pages if row.number == page), None) if job.page_mode is not None else None
    if row is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"Job {job_id!r} has no page {page}.", {"id": job_id, "page": page})
    if row.blob_sha256 is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"Page {page} of job {job_id!r} is not rendered yet.",
                       {"id": job_id, "page": page})
    return _blob_response(row.blob_sha256, _page_type(row), f"Page {page} of job {job_id!r}", job_id)


def _page_type(row: JobPage) -> str:
    return MEDIA_TYPES[row.source_format] if row.blob_sha256 == row.source_sha256 else "image/png"


def _blob_response(digest: str, mimetype: str, what: str, job_id: str) -> ResponseReturnValue:
    """A stored blob as an immutable, privately cacheable answer (its bytes never change: sha256-addressed)."""
    try:
        data = get_blobs().get(digest)
    except BlobNotFound:
        raise ApiError(ErrorCode.NOT_FOUND, f"{what} is no longer stored.", {"id": job_id}) from None
    response = Response(data, mimetype=mimetype)
    response.set_etag(digest)
    response.cache_control.private = True  # job images may be confidential: no shared caches
    response.cache_control.max_age = 365 * 24 * 3600
    response.cache_control.immutable = True
    return response.make_conditional(request)


@bp.post("/<job_id>/cancel")
@operation("Cancel a job", tags=("jobs",), responses={202: "Job"}, errors=("job_already_finished",))
def cancel_job(job_id: str) -> ResponseReturnValue:
    """Cancel a queued job at once; ask a running job's worker to stop it, and wait briefly for that."""
    session = get_session()
    job = get_or_404(session, Job, job_id, "job")
    if JobStatus(job.status).terminal:
        raise ApiError(ErrorCode.JOB_ALREADY_FINISHED, f"The job already ended as {job.status}.",
                       {"status": job.status})
    if jobs.cancel(session, get_broker(), job_id):
        get_job_endings().wait(job_id, lambda: jobs.ended(get_db(), job_id), get_settings().cancel_wait_s)
    session.expire_all()
    return jsonify(JobOut.from_row(get_or_404(session, Job, job_id, "job")).dump()), 202
