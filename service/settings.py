"""Attach one Settings object to the Flask app; everything else reads it from there."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask, current_app

from service.config import Settings, load_settings

# Multipart and JSON bodies carry one image plus small fields; base64 inflates by 4/3.
_BODY_OVERHEAD_BYTES = 1024 * 1024


def init_app(app: Flask, config: Settings | Mapping[str, Any] | None = None) -> None:
    resolved = config if isinstance(config, Settings) else load_settings(config)
    app.extensions["vlq.settings"] = resolved
    app.config["MAX_CONTENT_LENGTH"] = resolved.max_image_bytes * 4 // 3 + _BODY_OVERHEAD_BYTES
    app.json.sort_keys = False


def get_settings(app: Flask | None = None) -> Settings:
    return (app or current_app).extensions["vlq.settings"]
