"""The OpenAPI document: GET /openapi.json, built from the app's routes and the forms its views read."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from service.api import openapi
from service.api.auth import public
from service.api.openapi import operation

bp = Blueprint("docs", __name__)


@bp.get("/openapi.json")
@public  # the document describes the API, it holds no data; clients and tools fetch it before they have a key
@operation("This document", responses={200: {"description": "The OpenAPI 3.1 document.",
                                             "content": {"application/json": {"schema": {"type": "object"}}}}})
def openapi_json() -> ResponseReturnValue:
    # Routes are fixed once the app serves, so the document is built once per app.
    doc = current_app.extensions.get("vlq.openapi")
    if doc is None:
        doc = current_app.extensions["vlq.openapi"] = openapi.document(current_app)
    return jsonify(doc)
