"""Images given by URL (OpenAI's `image_url`): data URLs always; http(s) only where `image_url_fetch` allows it.

Remote images are fetched through the SSRF guard (`service.core.egress`): private and loopback addresses are
refused unless `egress_allow_cidrs` allows them, redirects are not followed, and both the time
(`image_url_timeout_s`) and the bytes read (`max_image_bytes`) are bounded.
"""
from __future__ import annotations

import logging
from typing import Any

from service.core import egress
from service.core.config import Settings
from service.core.errors import ApiError
from service.core.images import decode_image_field

log = logging.getLogger(__name__)


def load_image_url(settings: Settings, url: Any, field: str) -> bytes:
    """The image bytes an image_url names; ApiError (400, or 413 when too large) if they cannot be had."""
    if not isinstance(url, str) or not url:
        raise ApiError(400, "invalid_field", "image_url needs a url.", {"field": field})
    if url.startswith("data:"):
        return decode_image_field(url, field=field)
    if not url.startswith(("http://", "https://")):
        raise ApiError(400, "unsupported_image_url", "image_url must be a data: URL or an http(s) URL.",
                       {"field": field, "url": url[:200]})
    if not settings.image_url_fetch:
        raise ApiError(400, "unsupported_image_url",
                       "This server does not fetch image URLs (image_url_fetch is off); send the image as a data URL.",
                       {"field": field, "url": url[:200]})
    return _fetch(settings, url, field)


def _fetch(settings: Settings, url: str, field: str) -> bytes:
    details = {"field": field, "url": url[:200]}
    try:
        # One byte over the limit tells a too-large image from one exactly at it.
        response = egress.get(url, allow_cidrs=settings.egress_allow_cidrs, timeout_s=settings.image_url_timeout_s,
                              max_body_bytes=settings.max_image_bytes + 1, headers={"Accept": "image/*"})
    except egress.EgressDenied as exc:
        code = "image_url_forbidden" if exc.code == "forbidden_address" else "invalid_image_url"
        raise ApiError(400, code, f"The image URL is not fetched: {exc}.", {**details, "reason": exc.code}) from None
    except egress.EgressFailed as exc:
        raise ApiError(400, "image_url_unreachable", f"The image URL could not be fetched: {exc}.",
                       {**details, "reason": exc.kind}) from None
    if not 200 <= response.status < 300:
        raise ApiError(400, "image_url_unreachable", f"The image URL answered HTTP {response.status}.",
                       {**details, "status": response.status})
    if len(response.body) > settings.max_image_bytes:
        raise ApiError(413, "image_too_large",
                       f"The image at the URL is over the {settings.max_image_bytes}-byte limit.",
                       {**details, "limit": settings.max_image_bytes})
    log.info("fetched image %s (%d bytes)", url[:200], len(response.body))
    return response.body
