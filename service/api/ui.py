"""The web UI at `/`: one server-rendered page; its script talks to the public API like any other client."""
from __future__ import annotations

from flask import Blueprint, render_template
from flask.typing import ResponseReturnValue

from service.api.auth import public
from service.api.context import get_settings
from service.api.openapi import operation, text_response

bp = Blueprint("ui", __name__)

# The page refuses larger files before uploading them (the API's own limit is max_image_bytes).
UI_MAX_IMAGE_BYTES = 10 * 1024 * 1024


@bp.get("/")
@public  # the page itself holds nothing; its API calls carry the key typed into it
@operation("The web UI", tags=("ui",), responses={200: text_response("The page.", "text/html")})
def index() -> ResponseReturnValue:
    settings = get_settings()
    models = sorted(settings.registry, key=lambda name: (name != settings.default_model, name))
    config = {
        "defaultModel": settings.default_model,
        # Not picked by default when a vision-language model is live: they read text and take no prompt.
        "ocrModels": sorted(name for name, spec in settings.registry.items() if spec.engine == "rapidocr"),
        "maxImageBytes": min(UI_MAX_IMAGE_BYTES, settings.max_image_bytes),
        "maxTokensLimit": settings.max_tokens_limit,
        "maxPagesPerRequest": settings.max_pages_per_request,
    }
    return render_template("index.html", models=models, config=config, flower_url=settings.flower_link,
                           auth_required=not settings.disable_auth)
