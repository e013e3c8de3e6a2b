"""Checks on uploaded images, done before anything is stored."""
from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

from PIL import Image, UnidentifiedImageError

from service.core.errors import ApiError, ErrorCode
from service.core.validation import Spec

ACCEPTED_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
# An 8x8 grey PNG: the document's example image, so API fuzzers also send requests that reach a worker.
EXAMPLE_DATA_URL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAFElEQVR4nGNsaGhgwAaYsIoOWgkA"
                    "MBcBkGHHl6YAAAAASUVORK5CYII=")
_URL_SAFE = str.maketrans("-_", "+/")
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w-]+=[^;,]*)*)(?P<b64>;base64)?,", re.I)


@dataclass(frozen=True)
class ImageInfo:
    format: str  # JPEG, PNG or WEBP
    width: int
    height: int


def decode_image_field(value: object, field: str = "image") -> bytes:
    """Bytes from a data URL (`data:image/png;base64,...`) or from raw base64.

    Standard and URL-safe alphabets are both accepted, padded or not: Google's SDKs send `inline_data.data`
    URL-safe (`_9j_4AAQ...`), as Google's own API accepts. The one place VLQ decodes base64 images.
    """
    if not isinstance(value, str) or not value.strip():
        raise ApiError(ErrorCode.MISSING_FIELD, f"'{field}' is required: a data URL or base64-encoded image bytes.",
                       {"field": field})
    payload = value.strip()
    match = _DATA_URL.match(payload)
    if match:
        if not match.group("b64"):
            raise ApiError(ErrorCode.INVALID_BASE64, f"'{field}' is a data URL without ';base64'; send base64 data.",
                           {"field": field})
        payload = payload[match.end():]
    payload = re.sub(r"\s+", "", payload)
    payload += "=" * (-len(payload) % 4)  # tolerate stripped padding
    if "-" in payload or "_" in payload:
        if "+" in payload or "/" in payload:  # one alphabet or the other, never both
            raise _invalid_base64(field)
        payload = payload.translate(_URL_SAFE)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid_base64(field) from None


def _invalid_base64(field: str) -> ApiError:
    return ApiError(ErrorCode.INVALID_BASE64,
                    f"'{field}' is not valid base64 (standard or URL-safe, padded or not).", {"field": field})


def inspect_image(data: bytes, *, max_bytes: int, max_pixels: int) -> ImageInfo:
    """Validate format, size and integrity without trusting the header alone; raise ApiError on any problem."""
    if not data:
        raise ApiError(ErrorCode.INVALID_IMAGE, "The image is empty (0 bytes).")
    if len(data) > max_bytes:
        raise ApiError(ErrorCode.IMAGE_TOO_LARGE, f"The image is {len(data)} bytes; the limit is {max_bytes}.",
                       {"bytes": len(data), "limit": max_bytes})
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ApiError(ErrorCode.INVALID_IMAGE, "The bytes are not a recognizable image.") from None
    except Image.DecompressionBombError as exc:  # Pillow's own header check, past twice its default limit
        raise ApiError(ErrorCode.IMAGE_TOO_MANY_PIXELS, f"The image has too many pixels: {exc}",
                       {"limit": max_pixels}) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # a header cut short or broken (e.g. a JPEG segment)
        raise ApiError(ErrorCode.INVALID_IMAGE, f"The image header could not be read: {exc}.") from None
    # Phones save photos as MPO: a JPEG with more pictures (depth, previews) after the first, which is what is read.
    image_format = "JPEG" if image.format == "MPO" else image.format
    if image_format not in ACCEPTED_FORMATS:
        raise ApiError(ErrorCode.UNSUPPORTED_IMAGE_FORMAT,
                       f"{image.format} images are not supported; send JPEG, PNG, WebP, PDF, TIFF or HEIC.",
                       {"format": image.format, "accepted": sorted(ACCEPTED_FORMATS)})
    width, height = image.size
    # Checked from the header before decoding, so a decompression bomb is refused without inflating it.
    if width * height > max_pixels:
        raise ApiError(ErrorCode.IMAGE_TOO_MANY_PIXELS,
                       f"The image is {width}x{height} ({width * height} pixels); the limit is {max_pixels}.",
                       {"width": width, "height": height, "limit": max_pixels})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            decode_checked(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        raise ApiError(ErrorCode.INVALID_IMAGE, f"The image could not be decoded: {exc}.") from None
    finally:
        image.close()
    return ImageInfo(format=image_format, width=width, height=height)


def decode_checked(image: Image.Image) -> None:
    """Decode the whole image stream, so a truncated or corrupt one raises, in as little memory as it allows.

    A JPEG decodes at 1/8 scale (libjpeg's DCT scaling still reads every byte): a header claiming 6000x6000
    inflates 750x750 pixels, not 36 million. Other formats decode at full size (bounded by max_image_pixels).
    """
    if image.format in ("JPEG", "MPO"):
        image.draft(image.mode if image.mode in ("RGB", "L") else None, (1, 1))
    image.load()


@dataclass(frozen=True, kw_only=True)
class ImageData(Spec):
    """An image's or document's bytes: an uploaded file in a multipart form, a data URL or base64 in JSON (checked
    by `inspect_image` / `documents.inspect_source` once the rest of the request is read). `several`: one or more
    (a repeated form file, or a JSON list), read as a list."""

    several: bool = False
    codes: ClassVar[tuple[str, ...]] = ("missing_field", "invalid_base64", "invalid_image", "unsupported_image_format",
                                        "image_too_many_pixels", "image_too_large")
    blank: ClassVar[bool] = True

    def read(self, value: Any, name: str) -> bytes | list[bytes]:
        if not self.several:
            return self._one(value, name)
        items = value if isinstance(value, list) else [value]
        if not items:
            raise self.missing(name)
        return [self._one(item, f"{name}[{index}]" if len(items) > 1 else name) for index, item in enumerate(items)]

    @staticmethod
    def _one(value: Any, name: str) -> bytes:
        return value.read() if hasattr(value, "read") else decode_image_field(value, name)

    def missing(self, name: str) -> ApiError:
        return ApiError(ErrorCode.MISSING_FIELD, f"'{name}' is required: a data URL or base64-encoded image bytes.",
                        {"field": name})

    def schema(self, required: bool) -> dict[str, Any]:
        formats = "JPEG, PNG, WebP, PDF, TIFF or HEIC" if self.several else "JPEG, PNG or WebP"
        one = {"type": "string", "description": f"{formats}: a data URL or raw base64.",
               "examples": [EXAMPLE_DATA_URL]}
        if not self.several:
            return one
        return {"anyOf": [one, {"type": "array", "items": one, "minItems": 1}],
                "description": "One image or document, or a list of them (their pages in order)."}

    def form_schema(self, required: bool) -> dict[str, Any]:
        # A form repeats the field for several files.
        return {"type": "string", "format": "binary", "contentMediaType": "*/*" if self.several else "image/*"}

