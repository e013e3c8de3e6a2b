"""The API process's wiring, attached to the Flask app; views reach settings and adapters through here."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import redis
from flask import Flask, current_app, g
from sqlalchemy.orm import Session

from service.adapters.blobs import BlobStore
from service.adapters.broker import Broker
from service.adapters.db import DATABASE_UNAVAILABLE, Database
from service.adapters.job_endings import JobEndings
from service.adapters.ratelimit import RateLimiter
from service.core.config import Settings, load_settings
from service.core.group_commit import GroupCommit
from service.wiring import Wiring, wire

log = logging.getLogger(__name__)

# Multipart and JSON bodies carry one image plus small fields; base64 inflates by 4/3.
_BODY_OVERHEAD_BYTES = 1024 * 1024
# After a failed send, submits skip the broker this long and leave their jobs to the dispatcher pass.
_SEND_BACKOFF_S = 5.0


def init_app(app: Flask, config: Settings | Mapping[str, Any] | None = None) -> None:
    settings = config if isinstance(config, Settings) else load_settings(config)
    app.extensions["vlq"] = wire(settings, send_backoff_s=_SEND_BACKOFF_S)
    app.extensions["vlq.job_endings"] = JobEndings(settings.redis_url)
    app.extensions["vlq.ratelimit"] = RateLimiter(settings.redis_url)
    app.extensions["vlq.group_commit"] = GroupCommit(get_db(app), get_broker(app))
    app.config["MAX_CONTENT_LENGTH"] = settings.max_image_bytes * 4 // 3 + _BODY_OVERHEAD_BYTES
    app.json.sort_keys = False
    app.teardown_appcontext(_close_request_session)


def get_wiring(app: Flask | None = None) -> Wiring:
    return (app or current_app).extensions["vlq"]


def get_settings(app: Flask | None = None) -> Settings:
    return get_wiring(app).settings


def get_db(app: Flask | None = None) -> Database:
    return get_wiring(app).db


def get_blobs() -> BlobStore:
    return get_wiring().blobs


def get_broker(app: Flask | None = None) -> Broker:
    return get_wiring(app).broker


def get_group_commit() -> GroupCommit:
    """What inserts, commits and sends new jobs, in groups, for this process's requests."""
    return current_app.extensions["vlq.group_commit"]


def get_redis() -> redis.Redis:
    return get_wiring().redis


def get_job_endings() -> JobEndings:
    return current_app.extensions["vlq.job_endings"]


def get_rate_limiter() -> RateLimiter:
    return current_app.extensions["vlq.ratelimit"]


def get_session() -> Session:
    """The current request's session, opened on first use and closed at teardown."""
    if "db_session" not in g:
        g.db_session = get_db().sessions()
    return g.db_session


def _close_request_session(_exc: BaseException | None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        try:
            session.close()  # rolls back what the request left open
        except DATABASE_UNAVAILABLE as exc:
            # The answer is already made: a rollback the lost connection could not take must not turn it into a
            # 500 (the server ends the transaction itself, and the pool drops the connection).
            log.warning("request session not closed cleanly: %s", str(exc).splitlines()[0])
