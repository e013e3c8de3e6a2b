"""Presets: the configured task presets, for clients that offer them (the web UI's preset picker)."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from service.api.context import get_settings
from service.api.openapi import operation
from service.core.presets import Preset

bp = Blueprint("presets", __name__, url_prefix="/v1/presets")


@bp.get("")
@operation("The configured presets", tags=("presets",), responses={200: "PresetList"})
def list_presets() -> ResponseReturnValue:
    """Every preset with what it fills in; `model` null means the server's default_model."""
    presets = get_settings().presets
    return jsonify({"object": "list", "data": [_render(presets[name]) for name in sorted(presets)]})


def _render(preset: Preset) -> dict[str, Any]:
    return {"object": "preset", "name": preset.name, "prompt": preset.prompt, "model": preset.model,
            "max_tokens": preset.max_tokens, "schema": preset.output_schema(), "labels": list(preset.labels),
            "ground_with_ocr": preset.ground_with_ocr, "max_pixels": preset.max_pixels}
