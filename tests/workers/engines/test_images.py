"""Preparing images for the engine: decoded no larger than the engine sees, any aspect ratio accepted."""
import io

import pytest
from PIL import Image

from service.core.config import load_settings
from tests.conftest import TINY, jpeg_bomb
from workers.engines import create_engine
from workers.engines.base import GenerationRequest
from workers.engines.images import MAX_ASPECT, decode, prepare_image
from workers.modelstore.registry import local_model

BUDGET = 448 * 448


def _png(mode: str, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_jpeg_bomb_header_is_decoded_at_a_draft_scale():
    bomb = jpeg_bomb()
    assert len(bomb) < 1000
    assert decode(bomb, BUDGET).size == (750, 750)  # 1/8 scale: 0.56 M pixels decoded, not 36 M
    assert prepare_image(bomb, BUDGET).size == (448, 448)


@pytest.mark.parametrize("mode", ["I;16", "RGBA", "P"])
def test_large_16_bit_transparent_and_palette_images_are_reduced_as_they_are_decoded(mode):
    image = decode(_png(mode, (6300, 6300)), BUDGET)
    assert image.size == (450, 450)  # reduced 14 times before any conversion copies it
    assert prepare_image(_png(mode, (6300, 6300)), BUDGET).mode == "RGB"


@pytest.mark.parametrize("size", [(3000, 40), (4000, 40), (8000, 20), (30, 9000), (5, 5), (600, 3)])
def test_thin_strips_are_padded_to_what_the_vision_tower_takes(size):
    image = prepare_image(_png("L", size), BUDGET)
    # Within the ratio (give or take the rounding of the scale-down) and the budget (give or take the padding).
    assert max(image.size) <= (MAX_ASPECT + 1) * min(image.size)
    assert image.width * image.height <= BUDGET


@pytest.fixture(scope="module")
def engine(model_cache):
    settings = load_settings({"model_cache": str(model_cache), "batch_size": 4, "default_model": TINY}, environ={})
    engine = create_engine(local_model(settings, settings.registry[TINY]), settings)
    engine.load()
    yield engine, settings.registry[TINY].max_pixels
    engine.close()


@pytest.mark.parametrize("size", [(3000, 40), (4000, 40), (8000, 20), (30, 9000), (5, 5), (600, 3), (20, 60)])
def test_thin_strips_run_through_the_engine(engine, size):
    engine, max_pixels = engine
    image = prepare_image(_png("RGB", size), max_pixels)
    result = engine.submit(GenerationRequest("Read it.", image, 4, ignore_eos=True)).result(timeout=120)
    assert (result.finish_reason, result.completion_tokens) == ("length", 4)
