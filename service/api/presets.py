"""Presets: the configured task presets, for clients that offer them (the web UI's preset picker)."""
from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from service.api.context import get_settings
from service.api.openapi import operation
from service.core.shapes import ObjectList, PresetOut

bp = Blueprint("presets", __name__, url_prefix="/v1/presets")


@bp.get("")
@operation("The configured presets", tags=("presets",), responses={200: "PresetList"})
def list_presets() -> ResponseReturnValue:
    """Every preset with what it fills in; `model` null means the server's default_model."""
    presets = get_settings().presets
    return jsonify(ObjectList[PresetOut](data=[PresetOut.of(presets[name]) for name in sorted(presets)]).dump())
