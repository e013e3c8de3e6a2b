"""Images given by URL (OpenAI's `image_url`): data URLs always; http(s) only where `image_url_fetch` allows it.

Remote images are fetched through the SSRF guard (`service.core.egress`): private and loopback addresses are
refused unless `egress_allow_cidrs` allows them, redirects are not followed, and both the total time
(`image_url_timeout_s`, connect to last byte) and the bytes read (`max_image_bytes`) are bounded. A process makes
at most `image_url_max_concurrent` fetches at once and refuses more (503 `image_url_busy`), so slow URLs can never
hold every thread of the API.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from service.core import egress
from service.core.config import Settings
from service.core.errors import ApiError, ErrorCode
from service.core.images import decode_image_field

log = logging.getLogger(__name__)

_slots: dict[int, threading.BoundedSemaphore] = {}  # per configured bound: this process's fetches in flight
_slots_lock = threading.Lock()


def load_image_url(settings: Settings, url: Any, field: str) -> bytes:
    """The image bytes an image_url names; ApiError (400, or 413 when too large) if they cannot be had."""
    if not isinstance(url, str) or not url:
        raise ApiError(ErrorCode.INVALID_FIELD, "image_url needs a url.", {"field": field})
    if url.startswith("data:"):
        return decode_image_field(url, field=field)
    if not url.startswith(("http://", "https://")):
        raise ApiError(ErrorCode.UNSUPPORTED_IMAGE_URL, "image_url must be a data: URL or an http(s) URL.",
                       {"field": field, "url": url[:200]})
    if not settings.image_url_fetch:
        raise ApiError(ErrorCode.UNSUPPORTED_IMAGE_URL,
                       "This server does not fetch image URLs (image_url_fetch is off); send the image as a data URL.",
                       {"field": field, "url": url[:200]})
    return _fetch(settings, url, field)


def _fetch(settings: Settings, url: str, field: str) -> bytes:
    details = {"field": field, "url": url[:200]}
    slots = _fetch_slots(settings.image_url_max_concurrent)
    if not slots.acquire(blocking=False):
        raise ApiError(ErrorCode.IMAGE_URL_BUSY,
                       f"This server is already fetching {settings.image_url_max_concurrent} image URLs; retry "
                       "shortly, or send the image as a data URL.", details, headers={"Retry-After": "1"})
    try:
        return _fetch_now(settings, url, details)
    finally:
        slots.release()


def _fetch_slots(limit: int) -> threading.BoundedSemaphore:
    with _slots_lock:
        return _slots.setdefault(limit, threading.BoundedSemaphore(limit))


def _fetch_now(settings: Settings, url: str, details: dict[str, Any]) -> bytes:
    try:
        # One byte over the limit tells a too-large image from one exactly at it.
        response = egress.get(url, allow_cidrs=settings.egress_allow_cidrs, timeout_s=settings.image_url_timeout_s,
                              max_body_bytes=settings.max_image_bytes + 1, headers={"Accept": "image/*"})
    except egress.EgressDenied as exc:
        code = ErrorCode.IMAGE_URL_FORBIDDEN if exc.code == "forbidden_address" else ErrorCode.INVALID_IMAGE_URL
        raise ApiError(code, f"The image URL is not fetched: {exc}.", {**details, "reason": exc.code}) from None
    except egress.EgressFailed as exc:
        raise ApiError(ErrorCode.IMAGE_URL_UNREACHABLE, f"The image URL could not be fetched: {exc}.",
                       {**details, "reason": exc.kind}) from None
    if not 200 <= response.status < 300:
        raise ApiError(ErrorCode.IMAGE_URL_UNREACHABLE, f"The image URL answered HTTP {response.status}.",
                       {**details, "status": response.status})
    if len(response.body) > settings.max_image_bytes:
        raise ApiError(ErrorCode.IMAGE_TOO_LARGE,
                       f"The image at the URL is over the {settings.max_image_bytes}-byte limit.",
                       {**details, "limit": settings.max_image_bytes})
    log.info("fetched image %s (%d bytes)", url[:200], len(response.body))
    return response.body
