"""One error type and one JSON body for every failure: {"error": {"code", "message", "details"?}}.

The codes are stable and documented in README.md ("Error codes").
"""
from __future__ import annotations

from typing import Any

# Every code the API answers with: (HTTP status, when). README.md "Error codes" shows the same table,
# and the OpenAPI document has one component per code.
ERROR_CODES: dict[str, tuple[int, str]] = {
    "bad_request": (400, "The request could not be read (e.g. a malformed multipart body)."),
    "missing_field": (400, "A required field is absent or empty (`details.field` names it)."),
    "invalid_field": (400, "A field is out of range or of the wrong type (`details.field` names it)."),
    "invalid_json": (400, "The body is not a JSON object."),
    "invalid_base64": (400, "`image` is not valid base64, or a data URL without `;base64`."),
    "invalid_image": (400, "Empty, truncated or undecodable image bytes."),
    "unsupported_image_format": (400, "Not JPEG, PNG or WebP."),
    "image_too_many_pixels": (400, "Over `max_image_pixels`, decompression bombs included."),
    "unknown_model": (400, "`model` is not in the registry (`details.available` lists them)."),
    "unknown_preset": (400, "`preset` is not configured (`details.available` lists them)."),
    "invalid_response_format": (400, "`response_format` is not an accepted shape, or its schema is invalid."),
    "invalid_header": (400, "A header is malformed, e.g. an `Idempotency-Key` over 255 characters."),
    "invalid_webhook_url": (400, "A webhook URL that is not http(s), is malformed, or does not resolve."),
    "webhook_url_forbidden": (400, "A webhook URL that resolves to a private, loopback or reserved address."),
    "duplicate_custom_id": (400, "Two images of a native batch share a file name."),
    "invalid_archive": (400, "`archive` is not a readable zip."),
    "unsupported_image_url": (400, "An `image_url` that is neither a `data:` URL nor, where `image_url_fetch` is on, "
                                   "an `http(s)` URL."),
    "invalid_image_url": (400, "A fetched image URL that is malformed or does not resolve."),
    "image_url_forbidden": (400, "A fetched image URL that resolves to a private, loopback or reserved address."),
    "image_url_unreachable": (400, "A fetched image URL that did not answer 2xx in time."),
    "missing_data_url_header": (400, "/api/v1/chat: `image` is base64 without its `data:image/...;base64,` header."),
    "image_side_too_long": (400, "/api/v1/chat: an image side is over the family's documented limit."),
    "invalid_request": (400, "A chat request that is not in OpenAI's shape (e.g. no user image)."),
    "unauthorized": (401, "No API key, or a wrong or revoked one (`WWW-Authenticate: Bearer`)."),
    "forbidden": (403, "Managing keys without an admin key."),
    "not_found": (404, "No such resource in the caller's tenant, or no such route."),
    "method_not_allowed": (405, "The route does not take this method (`Allow` lists those it takes)."),
    "idempotency_key_reused": (409, "The Idempotency-Key was used for a different request."),
    "job_already_finished": (409, "Cancelling a job that already ended."),
    "batch_not_cancellable": (409, "Cancelling a batch that already ended."),
    "file_in_use": (409, "Deleting a file a running batch still reads."),
    "cancelled": (409, "A synchronous request's job was cancelled by someone else while it waited."),
    "webhook_endpoint_disabled": (409, "Redelivering to an endpoint that was disabled (410) or deleted."),
    "image_too_large": (413, "The image is over `max_image_bytes`."),
    "request_too_large": (413, "The whole body is over the limit."),
    "unsupported_media_type": (415, "Neither JSON nor multipart/form."),
    "rate_limited": (429, "The key's `rate_limit_rps` is spent; retry after `Retry-After` seconds."),
    "quota_exceeded": (429, "The tenant's queued + running jobs would pass the key's `max_queued_jobs`."),
    "internal_error": (500, "A bug; it is logged."),
    "broker_unavailable": (503, "Redis is down: nothing was accepted; retry after `Retry-After`."),
    "database_unavailable": (503, "The database is down; retry after `Retry-After`."),
    "no_worker": (503, "Synchronous endpoints: no live worker serves the model."),
    "model_loading": (503, "Synchronous endpoints: the model is still loading; retry shortly."),
    "model_unavailable": (503, "Synchronous endpoints: no worker could load the model."),
    "overloaded": (503, "Synchronous endpoints: too many requests are waiting already; retry after `Retry-After`."),
    "sync_timeout": (504, "A synchronous request got no answer within `sync_timeout_s`; its job was cancelled."),
}

class ApiError(Exception):
    """An error the client can act on: HTTP status, stable machine code, human message."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return {"error": error}
