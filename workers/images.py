"""Turning a stored image into what an engine takes: upright RGB, no larger than the model's pixel budget."""
from __future__ import annotations

import io
import math

from PIL import Image, ImageOps

_HIGH_BIT_GREY = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


def prepare_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode, apply EXIF rotation, convert to RGB and scale down (keeping aspect) to at most `max_pixels`."""
    with Image.open(io.BytesIO(data)) as opened:  # an animation gives its first frame
        image = to_rgb(ImageOps.exif_transpose(opened))
    pixels = image.width * image.height
    if pixels > max_pixels:
        scale = math.sqrt(max_pixels / pixels)
        size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
    return image


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
