"""Jobs: one image + one prompt, answered asynchronously. POST /v1/jobs, then poll GET /v1/jobs/{id}."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue

from service import jobs
from service.api.common import (
    get_or_404,
    image_bytes_field,
    job_request_from,
    newest_first,
    page,
    request_fields,
)
from service.auth import current_caller
from service.blobs import BlobNotFound, get_blobs
from service.config import Settings
from service.db import get_db, get_session
from service.dispatch import get_dispatcher
from service.errors import ApiError
from service.fields import choice_option
from service.images import ACCEPTED_FORMATS
from service.job_endings import get_job_endings
from service.models import Job, JobStatus
from service.settings import get_settings

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")


@bp.post("")
def create_job() -> ResponseReturnValue:
    settings: Settings = get_settings()
    fields, files = request_fields()
    image_bytes = image_bytes_field(fields, files)
    job_request = job_request_from(settings, fields, image_bytes)
    key = request.headers.get("Idempotency-Key") or None
    if key is not None and len(key) > 255:
        raise ApiError(400, "invalid_header", "Idempotency-Key is longer than 255 characters.")

    job, replayed = jobs.submit(get_session(), get_blobs(), get_dispatcher(), job_request, image_bytes, key,
                                current_caller())
    headers = {"Location": f"/v1/jobs/{job.id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return jsonify(job.to_dict()), 202, headers


@bp.get("")
def list_jobs() -> ResponseReturnValue:
    status = choice_option(request.args.to_dict(), "status", choices=[s.value for s in JobStatus], default="")
    rows, limit = newest_first(Job, *([Job.status == status] if status else []))
    return jsonify(page(rows, limit, Job.to_dict))


@bp.get("/<job_id>")
def get_job(job_id: str) -> ResponseReturnValue:
    return jsonify(get_or_404(get_session(), Job, job_id, "job").to_dict())


@bp.get("/<job_id>/image")
def get_job_image(job_id: str) -> ResponseReturnValue:
    """The job's image as uploaded; its bytes never change (sha256-addressed), so browsers may keep it."""
    job = get_or_404(get_session(), Job, job_id, "job")
    if job.image_sha256 is None:
        raise ApiError(404, "not_found", f"Job {job_id!r} has no image: it was refused at ingest.", {"id": job_id})
    try:
        data = get_blobs().get(job.image_sha256)
    except BlobNotFound:
        raise ApiError(404, "not_found", f"The image of job {job_id!r} is no longer stored.", {"id": job_id}) from None
    response = Response(data, mimetype=ACCEPTED_FORMATS[job.image_format])
    response.set_etag(job.image_sha256)
    response.cache_control.private = True  # job images may be confidential: no shared caches
    response.cache_control.max_age = 365 * 24 * 3600
    response.cache_control.immutable = True
    return response.make_conditional(request)


@bp.post("/<job_id>/cancel")
def cancel_job(job_id: str) -> ResponseReturnValue:
    """Cancel a queued job at once; ask a running job's worker to stop it, and wait briefly for that."""
    session = get_session()
    job = get_or_404(session, Job, job_id, "job")
    if JobStatus(job.status).terminal:
        raise ApiError(409, "job_already_finished", f"The job already ended as {job.status}.",
                       {"status": job.status})
    if jobs.cancel(session, get_dispatcher(), job_id):
        get_job_endings().wait(job_id, lambda: jobs.ended(get_db(), job_id), get_settings().cancel_wait_s)
    session.expire_all()
    return jsonify(get_or_404(session, Job, job_id, "job").to_dict()), 202
