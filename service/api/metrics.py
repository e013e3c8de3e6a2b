"""Prometheus metrics: GET /metrics, the same series from every API process (see service.adapters.metrics)."""
from __future__ import annotations

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.adapters import metrics
from service.api.auth import public
from service.api.context import get_db, get_redis, get_settings
from service.api.openapi import operation, text_response

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
@public  # for Prometheus on the private network the API serves; see README "Metrics"
@operation("Prometheus metrics", tags=("operations",),
           responses={200: text_response("Prometheus' text format.", "text/plain")})
def scrape() -> Response:
    """Queue depth, jobs by state, latency histograms, tokens and webhook outcomes, in Prometheus' text format."""
    return Response(metrics.render(get_settings(), get_redis(), get_db()), content_type=CONTENT_TYPE_LATEST)
