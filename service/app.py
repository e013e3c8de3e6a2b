"""The Flask application factory."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from service.api import (
    auth,
    batches,
    context,
    docs,
    errors,
    files,
    headers,
    health,
    jobs,
    keys,
    metrics,
    presets,
    request_log,
    ui,
    webhooks,
)
from service.api.common import IdConverter, NameConverter
from service.api.compat import chat_completions, generate_content, responses, simple_chat
from service.core.config import Settings


def create_app(config: Settings | Mapping[str, Any] | None = None) -> Flask:
    """Build the API; `config` is a Settings, or overrides on top of config.yaml and VLQ_* variables."""
    app = Flask(__name__)
    context.init_app(app, config)
    errors.init_app(app)
    headers.init_app(app)
    request_log.init_app(app)  # before auth, so a refused request's lines carry its ids too
    auth.init_app(app)
    app.url_map.converters["id"] = IdConverter
    app.url_map.converters["name"] = NameConverter
    app.register_blueprint(health.bp)
    app.register_blueprint(jobs.bp)
    app.register_blueprint(files.bp)
    app.register_blueprint(batches.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(keys.bp)
    app.register_blueprint(chat_completions.bp)
    app.register_blueprint(responses.bp)
    app.register_blueprint(simple_chat.bp)
    app.register_blueprint(generate_content.bp)
    app.register_blueprint(presets.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(docs.bp)
    app.register_blueprint(ui.bp)
    return app
