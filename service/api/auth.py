"""Authentication: each request is resolved once, before its view, into the Caller it acts as (`flask.g.caller`).

What keeps tenants apart, for every endpoint, present and future:
- the tenant comes from the caller (`current_tenant()`), never from the request;
- rows are looked up with `service.api.common.get_or_404` and listed with `newest_first`, which both scope by
  tenant; any other query on a tenant-owned model adds `tenant_scope(Model)` from the same module;
- new rows are created with `tenant=current_tenant()` (outside requests: their parent row's tenant);
- an endpoint anyone may call, such as a health check, is marked `@public`.
With `disable_auth` every request acts as the default tenant, with no limits and no admin rights.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TypeVar

from flask import Flask, current_app, g, request

from service.api import openapi
from service.api.context import get_db, get_rate_limiter, get_session, get_settings
from service.core import keys
from service.core.errors import ApiError, ErrorCode
from service.core.tenancy import DEFAULT_TENANT, Caller

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., object])
# The API keys every view but the @public ones asks for, as the OpenAPI document shows them.
openapi.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer", "description": "An API key (vlq_sk_...)."})
openapi.security_scheme("googApiKey", {"type": "apiKey", "in": "header", "name": "x-goog-api-key",
                                       "description": "The same key, as Google's SDKs send it."})
DISABLED_WARNING = ("AUTHENTICATION IS DISABLED (disable_auth): anyone who can reach this server can read and submit "
                    "everything. Use it only on your own machine; set disable_auth: false and create keys with "
                    "`vlq keys create` before exposing it.")


def init_app(app: Flask) -> None:
    app.before_request(_resolve_caller)
    if get_settings(app).disable_auth:
        log.warning(DISABLED_WARNING)


def public(view: F) -> F:
    """Mark a view that needs no API key (health checks)."""
    view.vlq_public = True  # type: ignore[attr-defined]
    return view


def current_caller() -> Caller:
    caller = g.get("caller")
    if caller is None:
        raise RuntimeError("no caller: a @public view, or code running outside a request, asked for one")
    return caller


def current_tenant() -> str:
    return current_caller().tenant


def require_admin() -> Caller:
    """The caller, if it holds an admin key; otherwise 403."""
    caller = current_caller()
    if not caller.admin:
        raise ApiError(ErrorCode.FORBIDDEN, "This needs an admin API key.")
    return caller


def _resolve_caller() -> None:
    view = current_app.view_functions.get(request.endpoint or "")
    if getattr(view, "vlq_public", False) or request.endpoint == "static":  # the web UI's own files
        return
    settings = get_settings()
    if settings.disable_auth:
        g.caller = Caller(tenant=DEFAULT_TENANT)
        return
    caller = _authenticate(settings.rate_limit_rps, settings.max_queued_jobs)
    wait_s = get_rate_limiter().check(caller.key_id or "", caller.rate_limit_rps)
    if wait_s > 0:
        retry_after = max(1, math.ceil(wait_s))
        raise ApiError(ErrorCode.RATE_LIMITED,
                       f"Too many requests for this API key (its limit is {caller.rate_limit_rps:g} per second); "
                       f"retry in {retry_after} s.",
                       {"limit_rps": caller.rate_limit_rps, "retry_after_s": retry_after},
                       headers={"Retry-After": str(retry_after)})
    g.caller = caller


def _authenticate(default_rps: float, default_max_queued: int) -> Caller:
    """The caller behind the request's key; 401 if it has none, or a wrong or revoked one.

    The key comes as `Authorization: Bearer <key>`, or as `x-goog-api-key: <key>`, the header generateContent
    clients send.
    """
    credentials = request.authorization
    if credentials is not None and credentials.type == "bearer" and credentials.token:
        secret = credentials.token
    else:
        secret = request.headers.get("x-goog-api-key", "")
    if not secret:
        raise ApiError(ErrorCode.UNAUTHORIZED, "Send an API key as 'Authorization: Bearer <key>'.",
                       headers={"WWW-Authenticate": 'Bearer realm="vlq"'})
    key = keys.find_key(get_session(), secret)  # a read in the request's own session: no extra connection
    if key is None or key.revoked_at is not None:
        problem = "was revoked" if key is not None else "is not valid"
        raise ApiError(ErrorCode.UNAUTHORIZED, f"This API key {problem}.",
                       headers={"WWW-Authenticate": 'Bearer realm="vlq", error="invalid_token"'})
    if not keys.used_recently(key):
        with get_db().session() as session:  # its own short transaction, apart from the request's work
            keys.note_use(session, key.id)
    return Caller(
        tenant=key.tenant, key_id=key.id, admin=key.admin,
        rate_limit_rps=default_rps if key.rate_limit_rps is None else key.rate_limit_rps,
        max_queued_jobs=default_max_queued if key.max_queued_jobs is None else key.max_queued_jobs,
    )
