"""Jobs: one image + one prompt, answered asynchronously. POST /v1/jobs, then poll GET /v1/jobs/{id}."""
from __future__ import annotations

import hashlib
import time
from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from service import jobs, lifecycle
from service.api.common import (
    get_or_404,
    idempotency_key,
    newest_first,
    options_form,
    page,
    page_form,
    request_fields,
    webhook_options,
)
from service.blobs import get_blobs
from service.config import Settings
from service.db import get_session
from service.dispatch import get_dispatcher
from service.errors import ApiError
from service.fields import Bool, Choice, Form
from service.images import ImageField
from service.models import Job, JobStatus, Priority
from service.openapi import JSON, MULTIPART, operation
from service.settings import get_settings

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")


def job_form(settings: Settings) -> Form:
    """Everything POST /v1/jobs reads."""
    image = ImageField(name="image", max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
    return (Form((image,)) + jobs.task_form(settings) + options_form(settings, priority=Priority.INTERACTIVE)
            + Form((Bool(name="no_cache", description="Run even if an identical request already has a result."),),
                   extra_codes=("invalid_header", "idempotency_key_reused", "broker_unavailable")))


def list_form(settings: Settings) -> Form:
    return page_form() + Form((Choice(name="status", choices=[s.value for s in JobStatus]),))


@bp.post("")
@operation("Submit a job", body=job_form, media=(JSON, MULTIPART), headers=("Idempotency-Key",), tags=("jobs",),
           responses={202: "Job"}, links={"GetJob": ("jobs.get_job", "job_id"),
                                          "CancelJob": ("jobs.cancel_job", "job_id")})
def create_job() -> ResponseReturnValue:
    """Store the image and the job, then queue it; poll GET /v1/jobs/{id} for the result."""
    settings: Settings = get_settings()
    fields, files = request_fields()
    job_request, image_bytes = _parse_job_request(settings, {**fields, **files})
    key = idempotency_key()

    job, replayed = jobs.submit(get_session(), get_blobs(), get_dispatcher(), job_request, image_bytes, key)
    headers = {"Location": f"/v1/jobs/{job.id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return jsonify(job.to_dict()), 202, headers


@bp.get("")
@operation("List jobs, newest first", query=list_form, tags=("jobs",), responses={200: "JobList"})
def list_jobs() -> ResponseReturnValue:
    status = list_form(get_settings()).read("status", request.args.to_dict())
    rows, limit = newest_first(Job, *([Job.status == status] if status else []))
    return jsonify(page(rows, limit, Job.to_dict))


@bp.get("/<job_id>")
@operation("Get a job", tags=("jobs",), responses={200: "Job"})
def get_job(job_id: str) -> ResponseReturnValue:
    return jsonify(get_or_404(get_session(), Job, job_id, "job").to_dict())


@bp.post("/<job_id>/cancel")
@operation("Cancel a job", tags=("jobs",), responses={202: "Job"}, errors=("job_already_finished",))
def cancel_job(job_id: str) -> ResponseReturnValue:
    """Cancel a queued job at once; ask a running job's worker to stop it, and wait briefly for that."""
    session = get_session()
    job = get_or_404(session, Job, job_id, "job")
    if JobStatus(job.status).terminal:
        raise ApiError(409, "job_already_finished", f"The job already ended as {job.status}.",
                       {"status": job.status})
    if lifecycle.cancel_queued(session, job_id):
        session.commit()
    elif lifecycle.request_cancel(session, job_id):
        session.commit()
        get_dispatcher().publish_cancel(job_id)
        _wait_until_ended(session, job_id, get_settings().cancel_wait_s)
    else:
        session.commit()  # the job moved on meanwhile (or a cancel is already on its way)
    session.expire_all()
    return jsonify(get_or_404(session, Job, job_id, "job").to_dict()), 202


def _wait_until_ended(session: Any, job_id: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = session.scalar(select(Job.status).where(Job.id == job_id))
        session.commit()  # end the read transaction so the next poll sees the worker's write
        if JobStatus(status).terminal:
            return
        time.sleep(0.05)


def _parse_job_request(settings: Settings, fields: dict[str, Any]) -> tuple[jobs.JobRequest, bytes]:
    form = job_form(settings)
    image_bytes, info = form.read("image", fields)
    request_ = jobs.JobRequest(
        task=jobs.resolve_task(settings, fields),
        priority=form.read("priority", fields),
        metadata=form.read("metadata", fields),
        image_sha256=hashlib.sha256(image_bytes).hexdigest(),
        image=info,
        no_cache=form.read("no_cache", fields),
        **webhook_options(settings, fields),
    )
    return request_, image_bytes
