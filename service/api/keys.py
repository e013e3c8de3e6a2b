"""API keys, for admin keys only: create (the answer is the only place the secret appears), list, revoke.

An admin key acts within its own tenant: it creates keys (admin ones too) for that tenant only, and finds, lists
and revokes only that tenant's keys (another tenant's key id is a 404, as for any resource). Keys of other
tenants are the operator's: `vlq keys create --tenant ...` on the server, straight in the database.
"""
from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from service.api.auth import current_tenant, require_admin
from service.api.common import PageQuery, get_or_404, newest_first, page, read_query, request_fields
from service.api.context import get_session
from service.api.openapi import operation
from service.core import keys
from service.core.errors import ApiError, ErrorCode
from service.core.models import ApiKey
from service.core.shapes import ApiKeyOut

bp = Blueprint("keys", __name__, url_prefix="/v1/keys")


@bp.before_request
def _admins_only() -> None:
    require_admin()


@bp.post("")
@operation("Create an API key of the admin's tenant; the answer is the only place its secret appears", tags=("keys",),
           body=keys.KeySpec, responses={201: "ApiKey"}, errors=("forbidden",))
def create_key() -> ResponseReturnValue:
    fields, _ = request_fields()
    spec = keys.KeySpec.from_fields({"tenant": current_tenant(), **fields})
    if spec.tenant != current_tenant():
        raise ApiError(ErrorCode.FORBIDDEN,
                       f"An admin key creates keys for its own tenant ({current_tenant()}) only; keys of other "
                       "tenants are created by the operator with `vlq keys create --tenant ...`.",
                       {"tenant": spec.tenant})
    session = get_session()
    key, secret = keys.create_key(session, spec)
    session.commit()
    return jsonify(ApiKeyOut.from_row(key, secret=secret).dump()), 201, {"Location": f"/v1/keys/{key.id}"}


@bp.get("")
@operation("List the tenant's API keys, newest first (admin)", tags=("keys",), query=PageQuery,
           responses={200: "ApiKeyList"}, errors=("forbidden",))
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
