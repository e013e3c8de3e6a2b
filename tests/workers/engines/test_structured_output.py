"""Schema-constrained generation on the tiny random Qwen3-VL: valid JSON by construction, not by model quality."""
import json

import pytest
from PIL import Image

from service.core.config import load_settings
from service.core.structured import validation_error
from tests.conftest import TINY
from workers.engines import create_engine
from workers.engines.base import GenerationRequest
from workers.modelstore.registry import local_model

IMAGE = Image.new("RGB", (96, 96), (250, 250, 240))


@pytest.fixture(scope="module")
def setup(model_cache):
    settings = load_settings({"model_cache": str(model_cache), "batch_size": 4, "default_model": TINY}, environ={})
    engine = create_engine(local_model(settings, settings.registry[TINY]), settings)
    engine.load()
    yield engine, settings
    engine.close()


@pytest.mark.parametrize("preset", ["receipt", "invoice", "moderate"])
@pytest.mark.parametrize("temperature", [0.0, 1.5])
def test_every_extraction_preset_output_validates_against_its_schema(setup, preset, temperature):
    engine, settings = setup
    spec = settings.presets[preset]
    schema = spec.output_schema()
    result = engine.submit(GenerationRequest(spec.prompt, IMAGE, spec.max_tokens, temperature=temperature,
                                             json_schema=schema)).result(timeout=120)
    assert validation_error(json.loads(result.text), schema) is None
    assert result.finish_reason == "stop"  # ended by the grammar, not cut off by max_tokens
