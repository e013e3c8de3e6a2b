"""Liveness (/healthz: the process answers) and readiness (/readyz: it can do useful work)."""
from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from service import presence
from service.db import get_db
from service.dispatch import get_dispatcher
from service.openapi import operation
from service.schemas import ref

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@operation("Liveness: the process answers", tags=("health",), responses={200: "Health"}, security=())
def healthz() -> ResponseReturnValue:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
@operation("Readiness: database, Redis and a live model", tags=("health",), security=(),
           responses={200: "Readiness", 503: {"description": "Not ready; `missing` says what.",
                                              "content": {"application/json": {"schema": ref("Readiness")}}}})
def readyz() -> ResponseReturnValue:
    """Ready when the database and Redis answer and a live worker has a model loaded; otherwise says what is missing."""
    checks: dict[str, Any] = {}
    missing: list[str] = []
    try:
        get_db().ping()
        checks["database"] = "ok"
    except Exception as exc:  # any failure means not ready; the reason is reported, not raised
        checks["database"] = f"unavailable: {exc.__class__.__name__}"
        missing.append("database")

    workers: dict[str, dict[str, Any]] = {}
    try:
        workers = presence.live_workers(get_dispatcher().redis)
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unavailable: {exc.__class__.__name__}"
        missing.append("redis")

    models = presence.live_models(workers)
    if "redis" not in missing and not models:
        missing.append("worker" if not workers else "model")
    body = {
        "status": "ready" if not missing else "not_ready",
        "missing": missing,
        "checks": checks,
        "models": models,
        "workers": [{"name": name, **info} for name, info in sorted(workers.items())],
    }
    return jsonify(body), 200 if not missing else 503
