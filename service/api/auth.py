"""Authentication: each request is resolved once, before its view, into the Caller it acts as (`flask.g.caller`).

What keeps tenants apart, for every endpoint, present and future:
- the tenant comes from the caller (`current_tenant()`), never from the request;
- rows are looked up with `service.api.common.get_or_404` and listed with `newest_first`, which both scope by
  tenant; any other query on a tenant-owned model adds `tenant_scope(Model)` from the same module;
- new rows are created with `tenant=current_tenant()` (outside requests: their parent row's tenant);
- an endpoint anyone may call, such as a health check, is marked `@public`; one that answers anyone but tells
  more to a caller with a key (/readyz) is also marked `@key_optional`, and a key sent to it is checked as anywhere.
An admin key manages keys of its own tenant only; the operator manages every tenant with `vlq keys` on the server.
Every failed authentication answers the same 401, and each client address may fail only
`auth_failure_rate_per_s` times a second (after a burst of `auth_failure_burst`); past that, its requests get 429
before any key is looked up.
With `disable_auth` every request acts as the default tenant, with no limits and no admin rights.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TypeVar

from flask import Flask, current_app, g, request

from service.adapters.db import DATABASE_UNAVAILABLE
from service.api import openapi
from service.api.context import get_db, get_rate_limiter, get_session, get_settings
from service.core import keys
from service.core.config import Settings
from service.core.errors import ApiError, ErrorCode
from service.core.tenancy import DEFAULT_TENANT, Caller

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., object])
# The API keys every view but the @public ones asks for, as the OpenAPI document shows them.
openapi.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer", "description": "An API key (vlq_sk_...)."})
openapi.security_scheme("googApiKey", {"type": "apiKey", "in": "header", "name": "x-goog-api-key",
                                       "description": "The same key, as Google's SDKs send it."})
# One answer for every failed authentication (no key, a malformed header, an unknown or a revoked key), so that a
# caller cannot tell a revoked key from one that never existed.
UNAUTHENTICATED = "Send a valid API key as 'Authorization: Bearer <key>'."
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="vlq"'}
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


def key_optional(view: F) -> F:
    """Mark a @public view that tells more to a caller with a valid key (`authenticated()`); a key it is sent is
    checked as on any other view (a wrong one is a 401)."""
    view.vlq_key_optional = True  # type: ignore[attr-defined]
    return view


def authenticated() -> bool:
    """Whether the request acts as a caller: it brought a valid key, or auth is off."""
    return g.get("caller") is not None


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
    settings = get_settings()
    if settings.disable_auth:
        g.caller = Caller(tenant=DEFAULT_TENANT)  # public views too: with auth off, everyone is this caller
        return
    if request.endpoint == "static":  # the web UI's own files
        return
    view = current_app.view_functions.get(request.endpoint or "")
    secret = _presented_secret()
    if getattr(view, "vlq_public", False) and (secret is None or not getattr(view, "vlq_key_optional", False)):
        return
    try:
        caller = _authenticate(settings, secret)
    except DATABASE_UNAVAILABLE:
        if getattr(view, "vlq_key_optional", False):
            return  # readiness must answer while the database is down: as to a caller without a key
        raise
    wait_s = get_rate_limiter().check(caller.key_id or "", caller.rate_limit_rps)
    if wait_s > 0:
        raise _rate_limited(wait_s, f"Too many requests for this API key (its limit is {caller.rate_limit_rps:g} "
                                    "per second)", {"limit_rps": caller.rate_limit_rps})
    g.caller = caller


def _presented_secret() -> str | None:
    """The key the request sends, as `Authorization: Bearer <key>` or as `x-goog-api-key: <key>` (the header
    generateContent clients send); None if it sends neither (another Authorization scheme counts as none)."""
    credentials = request.authorization
    if credentials is not None and credentials.type == "bearer" and credentials.token:
        return credentials.token
    return request.headers.get("x-goog-api-key") or None


def _authenticate(settings: Settings, secret: str | None) -> Caller:
    """The caller behind the request's key; 401 if it has none, or a wrong or revoked one; 429 if its address has
    failed too often, before the key is looked up."""
    limiter = get_rate_limiter()
    failures = f"authfail:{request.remote_addr or '-'}"
    rate, burst = settings.auth_failure_rate_per_s, settings.auth_failure_burst
    wait_s = limiter.check(failures, rate, burst, spend=False)
    if wait_s > 0:
        raise _rate_limited(wait_s, "Too many failed authentications from this address", {"limit_rps": rate})
    key = keys.find_key(get_session(), secret) if secret else None  # a read in the request's own session
    if key is None or key.revoked_at is not None:
        limiter.check(failures, rate, burst)
        raise ApiError(ErrorCode.UNAUTHORIZED, UNAUTHENTICATED, headers=dict(_CHALLENGE))
    if not keys.used_recently(key):
        with get_db().session() as session:  # its own short transaction, apart from the request's work
            keys.note_use(session, key.id)
    return Caller(
        tenant=key.tenant, key_id=key.id, admin=key.admin,
        rate_limit_rps=settings.rate_limit_rps if key.rate_limit_rps is None else key.rate_limit_rps,
        max_queued_jobs=settings.max_queued_jobs if key.max_queued_jobs is None else key.max_queued_jobs,
    )


def _rate_limited(wait_s: float, reason: str, details: dict[str, object]) -> ApiError:
    retry_after = max(1, math.ceil(wait_s))
    return ApiError(ErrorCode.RATE_LIMITED, f"{reason}; retry in {retry_after} s.",
                    {**details, "retry_after_s": retry_after}, headers={"Retry-After": str(retry_after)})
