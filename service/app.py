"""The Flask application factory."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from service import blobs, db, dispatch, errors, logs, settings
from service.api import batches, docs, files, health, jobs, metrics, webhooks
from service.api.common import IdConverter
from service.config import Settings


def create_app(config: Settings | Mapping[str, Any] | None = None) -> Flask:
    """Build the API; `config` is a Settings, or overrides on top of config.yaml and VLQ_* variables."""
    app = Flask(__name__)
    settings.init_app(app, config)
    db.init_app(app)
    blobs.init_app(app)
    dispatch.init_app(app)
    errors.init_app(app)
    logs.init_app(app)
    app.url_map.converters["id"] = IdConverter
    app.register_blueprint(health.bp)
    app.register_blueprint(jobs.bp)
    app.register_blueprint(files.bp)
    app.register_blueprint(batches.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(docs.bp)
    return app
