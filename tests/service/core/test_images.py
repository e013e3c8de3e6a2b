import base64
import io

import pytest
from PIL import Image

from service.core.errors import ApiError
from service.core.images import decode_checked, decode_image_field, inspect_image
from tests.conftest import jpeg_bomb, make_image

LIMITS = {"max_bytes": 1_000_000, "max_pixels": 1_000_000}


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_accepted_formats_report_their_size(fmt):
    info = inspect_image(make_image(fmt, size=(120, 80)), **LIMITS)
    assert (info.format, info.width, info.height) == (fmt, 120, 80)


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"", 400, "invalid_image"),
        (b"not an image at all", 400, "invalid_image"),
        (make_image("PNG")[:80], 400, "invalid_image"),  # truncated
        (make_image("GIF"), 400, "unsupported_image_format"),
        (make_image("BMP"), 400, "unsupported_image_format"),
        (make_image("PNG", size=(1100, 1000)), 400, "image_too_many_pixels"),
    ],
    ids=["empty", "garbage", "truncated", "gif", "bmp", "too-many-pixels"],
)
def test_bad_images_are_refused_with_a_stable_code(data, status, code):
    with pytest.raises(ApiError) as caught:
        inspect_image(data, **LIMITS)
    assert (caught.value.status, caught.value.code) == (status, code)


def test_byte_limit_is_a_413():
    with pytest.raises(ApiError) as caught:
        inspect_image(make_image("PNG"), max_bytes=100, max_pixels=10**6)
    assert (caught.value.status, caught.value.code) == (413, "image_too_large")


def test_decompression_bomb_is_refused_from_the_header_without_decoding():
    # A 20000x20000 PNG of one color compresses to a few hundred KB but would inflate to 1.2 GB.
    buffer = io.BytesIO()
    Image.new("L", (20000, 20000)).save(buffer, "PNG", optimize=False)
    with pytest.raises(ApiError) as caught:
        inspect_image(buffer.getvalue(), max_bytes=10**8, max_pixels=40_000_000)
    assert caught.value.code == "image_too_many_pixels"


def test_data_urls_and_raw_base64_decode_to_the_same_bytes():
    raw = make_image("PNG")
    encoded = base64.b64encode(raw).decode()
    assert decode_image_field(f"data:image/png;base64,{encoded}") == raw
    assert decode_image_field(encoded) == raw
    assert decode_image_field(encoded.rstrip("=")) == raw  # padding stripped by some clients


@pytest.mark.parametrize("value", ["%%%notbase64", "data:image/png,rawbytes", 42])
def test_malformed_base64_or_data_url_is_refused(value):
    with pytest.raises(ApiError) as caught:
        decode_image_field(value)
    assert caught.value.code in {"invalid_base64", "missing_field"}


def test_a_jpeg_bomb_header_is_checked_at_a_draft_scale():
    bomb = jpeg_bomb((6000, 6000))
    info = inspect_image(bomb, max_bytes=10_000, max_pixels=40_000_000)  # accepted: the header is within limits
    assert (info.width, info.height) == (6000, 6000)
    with Image.open(io.BytesIO(bomb)) as image:
        decode_checked(image)
        assert image.size == (750, 750)  # what was decoded: 1/8 scale, not 36 M pixels


def test_url_safe_base64_decodes_padded_or_not():
    raw = make_image("JPEG") + b"\xfb\xff\xfe"  # bytes whose base64 needs '+' and '/' (URL-safe: '-' and '_')
    safe = base64.urlsafe_b64encode(raw).decode()
    assert "-" in safe or "_" in safe
    for encoded in (safe, safe.rstrip("="), f"data:image/jpeg;base64,{safe}"):
        assert decode_image_field(encoded) == raw


@pytest.mark.parametrize("value", ["ab+c-d==", "QUJD/_==", "A", "QUJDR", "QU=JD"])
def test_mixed_alphabets_and_impossible_lengths_are_invalid_base64(value):
    with pytest.raises(ApiError) as caught:
        decode_image_field(value, field="x.data")
    error = caught.value
    assert (error.status, error.code, error.details) == (400, "invalid_base64", {"field": "x.data"})
