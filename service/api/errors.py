"""Every failure rendered as the one JSON error body; framework errors and lost backends included."""
from __future__ import annotations

import logging
from collections.abc import Callable

import redis
import sqlalchemy.exc
from flask import Flask, Request, current_app, g, jsonify, request
from flask.typing import ResponseReturnValue
from kombu.exceptions import OperationalError as KombuOperationalError
from werkzeug.exceptions import HTTPException

from service.adapters.blobs import BlobStoreUnavailable
from service.adapters.db import DATABASE_UNAVAILABLE
from service.core.errors import ApiError, ErrorCode

log = logging.getLogger(__name__)

# Framework errors get the same body; these are their stable codes.
_HTTP_CODES = {
    400: ErrorCode.BAD_REQUEST,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.REQUEST_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
}



_FAMILIES = "vlq.error_families"
ErrorRenderer = Callable[[Exception], ResponseReturnValue]


def init_app(app: Flask) -> None:
    app.register_error_handler(Exception, _render_any)


def add_family(app: Flask, owns: Callable[[Request], bool], renderer: ErrorRenderer) -> None:
    """Render errors on the paths `owns` with `renderer`, where no view's blueprint does: an unknown path or method
    (routing matched no view), or a request refused before its view ran. A compatible family's paths, say."""
    app.extensions.setdefault(_FAMILIES, []).append((owns, renderer))


def _render_any(error: Exception) -> ResponseReturnValue:
    for owns, renderer in current_app.extensions.get(_FAMILIES, []):
        if owns(request):
            return renderer(error)
    return render(as_api_error(error))


def render(error: ApiError) -> ResponseReturnValue:
    return jsonify(error.body()), error.status, error.headers


def as_api_error(error: Exception) -> ApiError:
    """Any exception as the ApiError a client sees; compatible API families render the result in their own shapes.

    A framework error keeps its status; a lost backend is a 503 to retry; anything else is a logged 500, after the
    request's session is rolled back.
    """
    if isinstance(error, ApiError):
        return error
    if isinstance(error, HTTPException):
        status = error.code or 500
        # Keep the framework's own headers, e.g. a 405's `Allow`.
        headers = {name: value for name, value in error.get_headers() if name.lower() != "content-type"}
        code = _HTTP_CODES.get(status, ErrorCode.BAD_REQUEST if status < 500 else ErrorCode.INTERNAL_ERROR)
        return ApiError(code, error.description or error.name, status=status,
                        headers=headers)
    session = g.get("db_session")
    if session is not None:
        try:
            session.rollback()
        except Exception:  # a connection the database dropped cannot roll back; the pool discards it
            log.debug("rollback failed", exc_info=True)
    if isinstance(error, sqlalchemy.exc.DataError):  # the database refused a value the client sent (a NUL, say)
        log.info("refused data: %s", error)
        return ApiError(ErrorCode.BAD_REQUEST, "A value in the request cannot be stored.")
    unavailable = _unavailable_backend(error)
    if unavailable:
        log.warning("%s unavailable: %s", unavailable, error)
        return ApiError(ErrorCode(f"{unavailable}_unavailable"),
                        f"The {unavailable} is not reachable; try again shortly.",
                        headers={"Retry-After": "5"})
    log.exception("unhandled error", exc_info=error)
    return ApiError(ErrorCode.INTERNAL_ERROR, "Something went wrong on our side; it has been logged.")


def _unavailable_backend(error: Exception) -> str | None:
    """Name the backend behind a connection failure, so clients get a 503 they can retry, not a 500."""
    if isinstance(error, DATABASE_UNAVAILABLE):
        return "database"
    if isinstance(error, redis.ConnectionError | redis.TimeoutError | KombuOperationalError):
        return "broker"
    if isinstance(error, BlobStoreUnavailable):
        return "storage"
    return None
