"""One error type and one JSON body for every failure: {"error": {"code", "message", "details"?}}.

The codes are stable and documented in README.md ("Error codes").
"""
from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """Every code a client can meet, with its HTTP status and when it happens.

    API errors answer with the status; a job that was accepted but could not run ends `failed` (or `cancelled`)
    with a `job` code in `error.code`, and a synchronous endpoint waiting on that job answers with its status.
    README.md "Error codes" lists the same table (tests/service/core/test_errors.py checks it), and the OpenAPI
    document has one component per API code.
    """

    status: int
    when: str
    job: bool

    def __new__(cls, value: str, status: int, when: str, job: bool = False) -> ErrorCode:
        member = str.__new__(cls, value)
        member._value_ = value
        member.status = status
        member.when = when
        member.job = job
        return member

    @classmethod
    def of(cls, code: str | None) -> ErrorCode:
        """A failed job's stored code as a member; inference_error for none or one this version does not know."""
        return cls._value2member_map_.get(code or "", cls.INFERENCE_ERROR)  # type: ignore[return-value]

    BAD_REQUEST = "bad_request", 400, "The request could not be read (e.g. a malformed multipart body)."
    MISSING_FIELD = "missing_field", 400, "A required field is absent or empty (`details.field` names it)."
    INVALID_FIELD = "invalid_field", 400, "A field is out of range or of the wrong type (`details.field` names it)."
    INVALID_JSON = "invalid_json", 400, "The body is not a JSON object, or nests deeper than max_json_depth."
    INVALID_BASE64 = ("invalid_base64", 400,
                      "`image` is not valid base64 (standard or URL-safe, padded or not), or a data URL without "
                      "`;base64`.")
    INVALID_IMAGE = "invalid_image", 400, "Empty, truncated or undecodable image bytes."
    UNSUPPORTED_IMAGE_FORMAT = "unsupported_image_format", 400, "Not JPEG, PNG, WebP, PDF, TIFF or HEIC/HEIF."
    INVALID_DOCUMENT = "invalid_document", 400, "A PDF, TIFF or HEIC that is corrupt or truncated."
    PDF_ENCRYPTED = "pdf_encrypted", 400, "A PDF that needs a password to open (or an unsupported security handler)."
    DOCUMENT_EMPTY = "document_empty", 400, "A PDF with no pages."
    TOO_MANY_PAGES = ("too_many_pages", 400, "The inputs have more pages than `max_pages`, or a `document`-mode job "
                      "more than `max_pages_per_request`.")
    PAGE_TOO_LARGE = ("page_too_large", 400,
                      "A page whose size at `pdf_dpi` would pass `max_image_pixels` (checked before rendering).")
    PAGE_OUT_OF_RANGE = "page_out_of_range", 400, "`pages` names a page past the end of the inputs."
    IMAGE_TOO_MANY_PIXELS = "image_too_many_pixels", 400, "Over `max_image_pixels`, decompression bombs included."
    UNKNOWN_MODEL = "unknown_model", 400, "`model` is not in the registry (`details.available` lists them)."
    UNKNOWN_PRESET = "unknown_preset", 400, "`preset` is not configured (`details.available` lists them)."
    INVALID_RESPONSE_FORMAT = ("invalid_response_format", 400,
                               "`response_format` is not an accepted shape, or its schema is invalid.")
    INVALID_HEADER = "invalid_header", 400, "A header is malformed, e.g. an `Idempotency-Key` over 255 characters."
    INVALID_WEBHOOK_URL = ("invalid_webhook_url", 400,
                           "A webhook URL that is not http(s), is malformed, or does not resolve.")
    WEBHOOK_URL_FORBIDDEN = ("webhook_url_forbidden", 400,
                             "A webhook URL that resolves to a private, loopback or reserved address.")
    DUPLICATE_CUSTOM_ID = "duplicate_custom_id", 400, "Two images of a native batch share a file name."
    INVALID_ARCHIVE = ("invalid_archive", 400,
                       "`archive` is not a readable zip (corrupt, encrypted, or an unsupported compression).")
    UNSUPPORTED_IMAGE_URL = ("unsupported_image_url", 400,
                             "An `image_url` that is neither a `data:` URL nor, where `image_url_fetch` is on, an "
                             "`http(s)` URL.")
    INVALID_IMAGE_URL = "invalid_image_url", 400, "A fetched image URL that is malformed or does not resolve."
    IMAGE_URL_FORBIDDEN = ("image_url_forbidden", 400,
                           "A fetched image URL that resolves to a private, loopback or reserved address.")
    IMAGE_URL_UNREACHABLE = "image_url_unreachable", 400, "A fetched image URL that did not answer 2xx in time."
    MISSING_DATA_URL_HEADER = ("missing_data_url_header", 400,
                               "/api/v1/chat: `image` is base64 without its `data:image/...;base64,` header.")
    IMAGE_SIDE_TOO_LONG = ("image_side_too_long", 400,
                           "/api/v1/chat: an image side is over the family's documented limit.")
    INVALID_REQUEST = "invalid_request", 400, "A chat request that is not in OpenAI's shape (e.g. no user image)."
    UNAUTHORIZED = ("unauthorized", 401,
                    "No API key, or a wrong or revoked one: one answer for all (`WWW-Authenticate: Bearer`).")
    FORBIDDEN = "forbidden", 403, "Managing keys without an admin key, or another tenant's keys with one."
    NOT_FOUND = "not_found", 404, "No such resource in the caller's tenant, or no such route."
    METHOD_NOT_ALLOWED = ("method_not_allowed", 405,
                          "The route does not take this method (`Allow` lists those it takes).")
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused", 409, "The Idempotency-Key was used for a different request."
    JOB_ALREADY_FINISHED = "job_already_finished", 409, "Cancelling a job that already ended."
    BATCH_NOT_CANCELLABLE = "batch_not_cancellable", 409, "Cancelling a batch that already ended."
    FILE_IN_USE = "file_in_use", 409, "Deleting a file a running batch still reads."
    CANCELLED = "cancelled", 409, "A synchronous request's job was cancelled by someone else while it waited."
    WEBHOOK_ENDPOINT_DISABLED = ("webhook_endpoint_disabled", 409,
                                 "Redelivering to an endpoint that was disabled (410) or deleted.")
    TOO_MANY_WEBHOOK_ENDPOINTS = ("too_many_webhook_endpoints", 409,
                                  "The tenant already has `max_webhook_endpoints_per_tenant` endpoints; delete one.")
    IMAGE_TOO_LARGE = "image_too_large", 413, "The image is over `max_image_bytes`."
    REQUEST_TOO_LARGE = "request_too_large", 413, "The whole body is over the limit."
    ARCHIVE_TOO_LARGE = ("archive_too_large", 413,
                         "The zips hold more images than `max_archive_entries`, or more than `max_archive_bytes`.")
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type", 415, "Neither JSON nor multipart/form."
    RATE_LIMITED = ("rate_limited", 429, "The key's `rate_limit_rps`, or its address's allowance of failed "
                    "authentications, is spent; retry after `Retry-After` seconds.")
    QUOTA_EXCEEDED = "quota_exceeded", 429, "The tenant's queued + running jobs would pass the key's `max_queued_jobs`."
    INTERNAL_ERROR = "internal_error", 500, "A bug; it is logged."
    BROKER_UNAVAILABLE = "broker_unavailable", 503, "Redis is down: nothing was accepted; retry after `Retry-After`."
    DATABASE_UNAVAILABLE = "database_unavailable", 503, "The database is down; retry after `Retry-After`."
    STORAGE_UNAVAILABLE = ("storage_unavailable", 503,
                           "The blob store (S3) is unreachable or refuses the service: nothing was accepted; retry "
                           "after `Retry-After`. As a job's code: it stayed so through `max_attempts` attempts.")
    IMAGE_URL_BUSY = ("image_url_busy", 503,
                      "This API process is already fetching `image_url_max_concurrent` image URLs; retry after "
                      "`Retry-After`, or send a data URL.")
    NO_WORKER = ("no_worker", 503,
                 "Synchronous endpoints: no live worker serves the model (one may be starting); retry after "
                 "`Retry-After`.")
    MODEL_LOADING = "model_loading", 503, "Synchronous endpoints: the model is still loading; retry shortly."
    MODEL_UNAVAILABLE = ("model_unavailable", 503,
                         "Synchronous endpoints: every live worker failed to load the model or has no export of it "
                         "(the message names the fix; no `Retry-After`). A job: no live worker served its model "
                         "for `queue_timeout_s`.")
    OVERLOADED = ("overloaded", 503,
                  "Synchronous endpoints: too many requests are waiting already; retry after `Retry-After`.")
    SYNC_TIMEOUT = ("sync_timeout", 504,
                    "A synchronous request got no answer within `sync_timeout_s`; its job was cancelled.")

    # Job failure codes (`job`): how a failed job's `error.code` reads.
    # A deterministic failure is never a 5xx (clients and SDKs retry those): 422 says a retry cannot fix it.
    IMAGE_UNREADABLE = "image_unreadable", 422, "The stored image could not be read or decoded by the worker.", True
    INFERENCE_ERROR = "inference_error", 500, "The engine failed the request (the message says why).", True
    OUT_OF_MEMORY = "out_of_memory", 503, "The engine ran out of memory for the request.", True
    INVALID_OUTPUT = ("invalid_output", 422,
                      "A schema-constrained output ended (not cut off by max_tokens) but does not validate.", True)
    INFERENCE_TIMEOUT = "inference_timeout", 504, "Generation took longer than `job_timeout_s`.", True
    WORKER_LOST = "worker_lost", 503, "Its worker died on each of `max_attempts` attempts.", True


# A job can also end with these API codes (a cancelled job; a model no live worker served for queue_timeout_s; a
# blob store down throughout).
JOB_CODES = frozenset({ErrorCode.CANCELLED, ErrorCode.MODEL_UNAVAILABLE, ErrorCode.STORAGE_UNAVAILABLE}
                      | {code for code in ErrorCode if code.job})


class ApiError(Exception):
    """An error the client can act on: a stable code (which gives the HTTP status), a human message, details."""

    def __init__(self, code: ErrorCode, message: str, details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None, *, status: int | None = None) -> None:
        """`status` overrides the code's own only for a framework error whose status has no code of its own."""
        super().__init__(message)
        self.code = code
        self.status = status or code.status
        self.message = message
        self.details = details
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return {"error": error}
