"""Turning a stored image into what an engine takes: upright RGB, no larger than the model's pixel budget."""
from __future__ import annotations

import io
import math

from PIL import Image, ImageOps


def prepare_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode, apply EXIF rotation, convert to RGB and scale down (keeping aspect) to at most `max_pixels`."""
    with Image.open(io.BytesIO(data)) as opened:
        image = ImageOps.exif_transpose(opened)
        image = image.convert("RGB")
    pixels = image.width * image.height
    if pixels > max_pixels:
        scale = math.sqrt(max_pixels / pixels)
        size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
    return image
