"""Counting a request's tokens without running it (Google's countTokens): the model's own tokenizer for text,
the Qwen-VL image processor's grid for an image.

Read from the model's export folder (tokenizer.json, preprocessor_config.json), which the API reaches where it
shares the workers' model cache (one host, or compose's `models` volume). The chat template's own tokens (role
markers, the image's start and end) are not counted, so an answer's promptTokenCount is a few tokens more.
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

from service.core.config import Settings
from service.core.errors import ApiError, ErrorCode
from service.core.images import inspect_image


def count(settings: Settings, model: str, texts: list[str], images: list[bytes]) -> int:
    """The tokens `texts` and `images` take for `model` (each image scaled into the model's budget on its own)."""
    folder = Path(settings.model_cache) / settings.registry[model].export_dir_name
    if settings.registry[model].engine != "openvino-vlm":
        raise ApiError(ErrorCode.INVALID_FIELD, f"{model!r} is an OCR engine: it reads no tokens.", {"model": model})
    tokenizer, processor = _load(str(folder))
    total = sum(len(tokenizer.encode(text, add_special_tokens=False).ids) for text in texts)
    for image in images:
        info = inspect_image(image, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
        total += image_tokens(info.width, info.height, settings.registry[model].max_pixels, processor)
    return total


def image_tokens(width: int, height: int, max_pixels: int, processor: dict[str, Any]) -> int:
    """An image's tokens: scaled into the model's pixel budget (as the worker does), then onto the processor's grid
    of patch x merge squares, each one token (Qwen-VL's `smart_resize`)."""
    if width * height > max_pixels:
        scale = math.sqrt(max_pixels / (width * height))
        width, height = max(1, int(width * scale)), max(1, int(height * scale))
    patch, merge = processor.get("patch_size", 16), processor.get("merge_size", 2)
    factor = patch * merge
    low, high = processor.get("min_pixels", factor * factor), processor.get("max_pixels", max_pixels)
    rows, columns = max(factor, round(height / factor) * factor), max(factor, round(width / factor) * factor)
    if rows * columns > high:
        beta = math.sqrt(height * width / high)
        rows = max(factor, math.floor(height / beta / factor) * factor)
        columns = max(factor, math.floor(width / beta / factor) * factor)
    elif rows * columns < low:
        beta = math.sqrt(low / (height * width))
        rows, columns = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return (rows // factor) * (columns // factor)


@functools.lru_cache(maxsize=8)
def _load(folder: str) -> tuple[Any, dict[str, Any]]:
    """The model's tokenizer and image processor settings, read once per process."""
    from tokenizers import Tokenizer  # imported on first use: only countTokens needs it in the API

    try:
        tokenizer = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
        processor = json.loads((Path(folder) / "preprocessor_config.json").read_text())
    except Exception as exc:  # OSError, ValueError, or the tokenizers library's own exception
        raise ApiError(ErrorCode.MODEL_UNAVAILABLE,
                       f"Tokens cannot be counted here: the model's export is not readable by the API ({exc}).",
                       {"folder": folder}) from None
    return tokenizer, processor
