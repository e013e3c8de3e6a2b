"""API keys, for admin keys only: create (the answer is the only place the secret appears), list, revoke."""
from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from service.api.auth import require_admin
from service.api.common import PageQuery, get_or_404, newest_first, page, read_query, request_fields
from service.api.context import get_session
from service.api.openapi import operation
from service.core import keys
from service.core.models import ApiKey
from service.core.shapes import ApiKeyOut

bp = Blueprint("keys", __name__, url_prefix="/v1/keys")


@bp.before_request
def _admins_only() -> None:
    require_admin()


@bp.post("")
@operation("Create an API key (admin); the answer is the only place its secret appears", tags=("keys",),
           body=keys.KeySpec, responses={201: "ApiKey"}, errors=("forbidden",))
def create_key() -> ResponseReturnValue:
    fields, _ = request_fields()
    session = get_session()
    key, secret = keys.create_key(session, keys.KeySpec.from_fields(fields))
    session.commit()
    return jsonify(ApiKeyOut.from_row(key, secret=secret).dump()), 201, {"Location": f"/v1/keys/{key.id}"}


@bp.get("")
@operation("List API keys, newest first (admin)", tags=("keys",), query=PageQuery, responses={200: "ApiKeyList"},
           errors=("forbidden",))
def list_keys() -> ResponseReturnValue:
    rows, limit = newest_first(ApiKey, query=read_query(PageQuery))
    return jsonify(page(rows, limit, ApiKeyOut.from_row))


@bp.get("/<key_id>")
@operation("Get an API key (admin)", tags=("keys",), responses={200: "ApiKey"}, errors=("forbidden",))
def get_key(key_id: str) -> ResponseReturnValue:
    return jsonify(ApiKeyOut.from_row(get_or_404(get_session(), ApiKey, key_id, "API key")).dump())


@bp.delete("/<key_id>")
@operation("Revoke an API key (admin)", tags=("keys",), responses={200: "ApiKey"}, errors=("forbidden",))
def revoke_key(key_id: str) -> ResponseReturnValue:
    """Revoke a key: it stops working at once, and stays listed with its revoked_at."""
    session = get_session()
    get_or_404(session, ApiKey, key_id, "API key")
    key = keys.revoke_key(session, key_id)
    session.commit()
    return jsonify(ApiKeyOut.from_row(key).dump())
