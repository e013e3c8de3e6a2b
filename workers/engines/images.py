"""Turning a stored image into what an engine takes: upright RGB, no larger than the model's pixel budget.

Memory is bounded by what the engine sees, not by what the header claims: a JPEG is decoded at the smallest
DCT scale (1/2, 1/4, 1/8) still at least the target size (`draft`), and any other image is reduced by an
integer factor right after decoding, before the 16-bit or transparent conversions that would each copy it whole.
"""
from __future__ import annotations

import io
import math

from PIL import Image, ImageOps

_HIGH_BIT_GREY = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
# Qwen-VL's image processor scales an image so its pixels fit the model's budget, rounding each side down to a
# multiple of 32 (patch 16 x merge 2): a strip thinner than 1/64 of its length (the tiny model's budget of 65,536
# pixels; larger budgets allow more) rounds to a zero side, which OpenVINO fails on in a Reshape. Strips past
# this ratio are padded with white; the margin keeps the rounding clear of zero.
# (A small image, sides under 32, is safe: the processor scales it up to its min_pixels, rounding up.)
MAX_ASPECT = 50


def prepare_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode (at most what `max_pixels` needs), turn upright (EXIF), convert to RGB, pad a thin strip, scale down."""
    return fit(ImageOps.exif_transpose(decode(data, max_pixels)), max_pixels)


def fit(image: Image.Image, max_pixels: int) -> Image.Image:
    """A decoded image as the engine takes it: RGB, a thin strip padded, scaled down to `max_pixels`."""
    image = _pad_to_aspect(to_rgb(image))
    pixels = image.width * image.height
    if pixels > max_pixels:
        scale = math.sqrt(max_pixels / pixels)
        size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
    return image


def decode(data: bytes, max_pixels: int) -> Image.Image:
    """The image decoded at the least resolution that still gives `max_pixels` (or all it has), file closed."""
    with Image.open(io.BytesIO(data)) as opened:  # an animation gives its first frame
        if opened.format in ("JPEG", "MPO"):
            opened.draft(opened.mode if opened.mode in ("RGB", "L") else None, _target_size(opened.size, max_pixels))
        return reduce_to(opened, max_pixels)


def _target_size(size: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    """The size `size` scales down to within `max_pixels` (itself if it fits already)."""
    scale = min(1.0, math.sqrt(max_pixels / (size[0] * size[1])))
    return max(1, math.ceil(size[0] * scale)), max(1, math.ceil(size[1] * scale))


def reduce_to(image: Image.Image, max_pixels: int) -> Image.Image:
    """Decode `image`, shrunk by the largest integer factor that keeps it at or above `max_pixels`."""
    image.load()
    factor = math.isqrt(image.width * image.height // max_pixels)
    if factor < 2:
        return image.copy()
    try:
        return image.reduce(factor)
    except ValueError:  # a mode reduce() does not take (16-bit grey, palette): resize does, without a full copy
        return image.resize((image.width // factor, image.height // factor), Image.Resampling.BOX)


def _pad_to_aspect(image: Image.Image) -> Image.Image:
    """Pad a very long, thin strip (a barcode, a receipt line) with white, centred, so the model takes it."""
    long, short = max(image.size), min(image.size)
    if long <= short * MAX_ASPECT:
        return image
    target = math.ceil(long / MAX_ASPECT)
    return _pad(image, (image.width, target) if image.width >= image.height else (target, image.height))


def _pad(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`image` centred on white of `size` (itself when it has that size already)."""
    if image.size == size:
        return image
    canvas = Image.new("RGB", size, (255, 255, 255))
    canvas.paste(image, ((size[0] - image.width) // 2, (size[1] - image.height) // 2))
    return canvas


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB as a person would see the image.

    16-bit grey is scaled to 8 bits (a plain convert clips everything above 255 to white), and
    transparency is laid on white (a plain convert shows what lies under it, often black: black
    text on a transparent background would vanish).
    """
    if image.mode in _HIGH_BIT_GREY:
        image = image.convert("I").point(lambda value: value * (1 / 257)).convert("L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")
