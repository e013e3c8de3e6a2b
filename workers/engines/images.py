"""Turning a stored image into what an engine takes: upright RGB, no larger than the model's pixel budget."""
from __future__ import annotations

import io
import math

from PIL import Image, ImageOps

_HIGH_BIT_GREY = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
# Qwen-VL's processor refuses images whose sides differ more than 200 times; a strip this narrow is padded.
MAX_ASPECT = 100


def prepare_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode, turn upright (EXIF), convert to RGB, pad a thin strip, scale down (keeping aspect) to `max_pixels`."""
    with Image.open(io.BytesIO(data)) as opened:  # an animation gives its first frame
        image = _pad_to_aspect(to_rgb(ImageOps.exif_transpose(opened)))
    pixels = image.width * image.height
    if pixels > max_pixels:
        scale = math.sqrt(max_pixels / pixels)
        size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
    return image


def _pad_to_aspect(image: Image.Image) -> Image.Image:
    """Pad a very long, thin strip (a barcode, a receipt line) with white, centred, so the model takes it."""
    long, short = max(image.size), min(image.size)
    if long <= short * MAX_ASPECT:
        return image
    target = math.ceil(long / MAX_ASPECT)
    size = (image.width, target) if image.width >= image.height else (target, image.height)
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
