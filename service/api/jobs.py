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
    bool_option,
    choice_option,
    float_option,
    get_or_404,
    int_option,
    json_object_option,
    page,
    page_params,
    request_fields,
    required_text,
)
from service.blobs import get_blobs
from service.config import Settings
from service.db import get_session
from service.dispatch import get_dispatcher
from service.errors import ApiError
from service.images import decode_image_field, inspect_image
from service.models import Job, JobStatus, Priority
from service.presets import apply_preset
from service.settings import get_settings
from service.structured import parse_response_format

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")


@bp.post("")
def create_job() -> ResponseReturnValue:
    settings: Settings = get_settings()
    fields, files = request_fields()
    image_bytes = _image_bytes(fields, files)
    job_request = _parse_job_request(settings, fields, image_bytes)
    key = request.headers.get("Idempotency-Key") or None
    if key is not None and len(key) > 255:
        raise ApiError(400, "invalid_header", "Idempotency-Key is longer than 255 characters.")

    job, replayed = jobs.submit(get_session(), get_blobs(), get_dispatcher(), job_request, image_bytes, key)
    headers = {"Location": f"/v1/jobs/{job.id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return jsonify(job.to_dict()), 202, headers


@bp.get("")
def list_jobs() -> ResponseReturnValue:
    limit, cursor = page_params()
    query = select(Job).order_by(Job.id.desc()).limit(limit + 1)
    status = choice_option(request.args.to_dict(), "status", choices=[s.value for s in JobStatus], default="")
    if status:
        query = query.where(Job.status == status)
    if cursor:
        query = query.where(Job.id < cursor)
    rows = list(get_session().scalars(query))
    return jsonify(page(rows, limit, Job.to_dict, key=lambda job: job.id))


@bp.get("/<job_id>")
def get_job(job_id: str) -> ResponseReturnValue:
    return jsonify(get_or_404(get_session(), Job, job_id, "job").to_dict())


@bp.post("/<job_id>/cancel")
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


def _image_bytes(fields: dict[str, Any], files: dict[str, Any]) -> bytes:
    upload = files.get("image")
    if upload is not None:
        return upload.read()
    return decode_image_field(fields.get("image"))


def _parse_job_request(settings: Settings, fields: dict[str, Any], image_bytes: bytes) -> jobs.JobRequest:
    fields, preset = apply_preset(settings.presets, fields)
    model = fields.get("model") or settings.default_model
    spec = settings.model(model)
    if spec is None:
        raise ApiError(400, "unknown_model", f"No model named {model!r}.",
                       {"model": model, "available": sorted(settings.registry)})
    ocr = spec.engine == "rapidocr"
    prompt = "" if ocr and not fields.get("prompt") else required_text(fields, "prompt",
                                                                        max_chars=settings.max_prompt_chars)
    schema = parse_response_format(fields.get("response_format"))
    if schema is None and preset is not None:
        schema = preset.output_schema()
    ground_with_ocr = bool_option(fields, "ground_with_ocr", default=False)
    if ocr and (schema is not None or ground_with_ocr):
        field = "response_format" if schema is not None else "ground_with_ocr"
        raise ApiError(400, "invalid_field", f"'{field}' needs a vision-language model; {model!r} is an OCR engine.",
                       {"field": field})
    info = inspect_image(image_bytes, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
    return jobs.JobRequest(
        prompt=prompt,
        model=model,
        max_tokens=int_option(fields, "max_tokens", default=settings.default_max_tokens,
                              low=1, high=settings.max_tokens_limit),
        temperature=float_option(fields, "temperature", default=0.0, low=0.0, high=2.0),
        ignore_eos=bool_option(fields, "ignore_eos", default=False),
        priority=choice_option(fields, "priority", choices=[p.value for p in Priority],
                               default=Priority.INTERACTIVE.value),
        metadata=json_object_option(fields, "metadata", max_bytes=settings.max_metadata_bytes),
        image_sha256=hashlib.sha256(image_bytes).hexdigest(),
        image=info,
        preset=preset.name if preset else None,
        response_schema=schema,
        ground_with_ocr=ground_with_ocr,
        no_cache=bool_option(fields, "no_cache", default=False),
    )
