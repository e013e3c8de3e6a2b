"""Standard Webhooks signing: `whsec_<base64>` secrets, `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.

See https://www.standardwebhooks.com; receivers verify with any Standard Webhooks library.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time

SECRET_PREFIX = "whsec_"
_MIN_KEY_BYTES, _MAX_KEY_BYTES = 24, 64


def generate_secret() -> str:
    """A new random secret in the `whsec_<base64>` form."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(32)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key inside a `whsec_` secret; ValueError if it is not one."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"must look like {SECRET_PREFIX}<base64>")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"is not valid base64 after {SECRET_PREFIX}") from None
    if not _MIN_KEY_BYTES <= len(key) <= _MAX_KEY_BYTES:
        raise ValueError(f"must hold {_MIN_KEY_BYTES} to {_MAX_KEY_BYTES} bytes of key")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value for one message."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers; the timestamp is fresh for every attempt, the id is not."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }
