"""Liveness (/healthz: the process answers) and readiness (/readyz, and /health in the OpenAI servers' shape)."""
from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from service.adapters import presence
from service.api.auth import authenticated, key_optional, public
from service.api.context import get_blobs, get_db, get_redis, get_settings
from service.api.openapi import operation, ref
from service.core import availability
from service.core.shapes import HealthOut, ModelWarning, OpenAIHealthOut, ReadinessOut

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@public
@operation("Liveness: the process answers", tags=("health",), responses={200: "Health"})
def healthz() -> ResponseReturnValue:
    return jsonify(HealthOut().dump())


@bp.get("/readyz")
@public
@key_optional
@operation("Readiness: database, Redis, blob store, a live model; the checks, models and workers only with a key",
           tags=("health",),
           responses={200: "Readiness", 503: {"description": "Not ready; `missing` says what.",
                                              "content": {"application/json": {"schema": ref("Readiness")}}}})
def readyz() -> ResponseReturnValue:
    """Ready when the database, Redis and the blob store answer and a live worker has a model loaded; otherwise
    says what is missing.

    `unserved` names each configured model no live worker has live, why, and the command that fixes it.

    Worker host names, PIDs and model states are for callers with a key: anyone else gets the status and `missing`.
    """
    body = readiness()
    if not authenticated():
        body = body.summary()
    return jsonify(body.dump()), 200 if not body.missing else 503


@bp.get("/health")
@public
@operation("Health in the OpenAI-compatible servers' shape", tags=("health",),
           responses={200: "OpenAIHealth", 503: {"description": "Not ready; `missing` says what.",
                                                 "content": {"application/json": {"schema": ref("OpenAIHealth")}}}})
def health() -> ResponseReturnValue:
    """The OpenAI-compatible servers' health check: {"status": "healthy"} when ready."""
    body = readiness()
    if not body.missing:
        return jsonify(OpenAIHealthOut(status="healthy").dump())
    return jsonify(OpenAIHealthOut(status="unhealthy", missing=body.missing).dump()), 503


def readiness() -> ReadinessOut:
    """What /readyz reports: the checks, what is missing (empty when ready), the live models and workers."""
    checks: dict[str, Any] = {}
    missing: list[str] = []
    try:
        get_db().ping()
        checks["database"] = "ok"
    except Exception as exc:  # any failure means not ready; the reason is reported, not raised
        checks["database"] = f"unavailable: {exc.__class__.__name__}"
        missing.append("database")

    try:
        get_blobs().check()
        checks["storage"] = "ok"
    except Exception as exc:  # a wrong bucket or credentials is said here and in the start-up log, not at a job
        checks["storage"] = f"unavailable: {exc}"
        missing.append("storage")

    workers: dict[str, dict[str, Any]] = {}
    try:
        workers = presence.live_workers(get_redis())
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unavailable: {exc.__class__.__name__}"
        missing.append("redis")

    models = presence.live_models(workers)
    unserved = []
    if "redis" not in missing:
        settings = get_settings()
        unserved = [ModelWarning(**notice.warning()) for notice in availability.warnings(settings, settings.registry,
                                                                                         workers)]
        if not models:
            missing.append("worker" if not workers else "model")
    return ReadinessOut(status="ready" if not missing else "not_ready", missing=missing, checks=checks, models=models,
                        unserved=unserved, workers=[{"name": name, **info} for name, info in sorted(workers.items())])
