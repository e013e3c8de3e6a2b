"""Security headers: `nosniff` and no referrer on every response; a Content-Security-Policy and no framing on HTML.

The only HTML is the web UI page (service/templates/index.html). It loads its script and stylesheet from
/static, has no inline script (its `<script type="application/json">` config block is data, which CSP does not
govern) and no inline style; its script talks only to this server and shows images from `blob:` URLs of the
files it fetched or was given. So the policy allows exactly that, and nothing from elsewhere.
"""
from __future__ import annotations

from flask import Flask, Response

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' blob: data:",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",  # the page's forms are handled by its script, never submitted by the browser
    "frame-ancestors 'none'",
])
_EVERY_RESPONSE = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
_HTML = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Frame-Options": "DENY"}


def init_app(app: Flask) -> None:
    app.after_request(_add_headers)


def _add_headers(response: Response) -> Response:
    headers = {**_EVERY_RESPONSE, **(_HTML if response.mimetype == "text/html" else {})}
    for name, value in headers.items():
        response.headers.setdefault(name, value)
    return response
