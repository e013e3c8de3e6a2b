"""The engine process on the tiny Qwen3-VL: a request that fails inside a shared step fails alone."""
import pytest
from PIL import Image

from service.core.config import load_settings
from service.core.errors import ErrorCode
from tests.conftest import TINY
from workers.engines import create_engine
from workers.engines.base import ENGINE_FAILED, EngineError, GenerationRequest
from workers.modelstore.registry import local_model

IMAGE = Image.new("RGB", (96, 96), (250, 250, 240))
# Refused at submit since the API compiles schemas with xgrammar; sent straight to the engine here, it is what
# fails the engine's step (the grammar is built there), as any failure the submit checks miss would.
POISONED = {"type": "object", "properties": {"a": {"$ref": "#/definitions/nope"}}, "required": ["a"]}


@pytest.fixture(scope="module")
def engine(model_cache):
    settings = load_settings({"model_cache": str(model_cache), "batch_size": 4, "default_model": TINY}, environ={})
    engine = create_engine(local_model(settings, settings.registry[TINY]), settings)
    engine.load()
    yield engine
    engine.close()


def _innocent(prompt: str) -> GenerationRequest:
    return GenerationRequest(prompt, IMAGE, 24, ignore_eos=True)


def test_a_step_failure_fails_only_the_request_that_caused_it(engine):
    prompts = ["Describe.", "What colour?", "Read it."]
    alone = [engine.submit(_innocent(p)).result(timeout=120).text for p in prompts]  # greedy: the reference

    neighbours = [engine.submit(_innocent(p)) for p in prompts]
    poisoned = engine.submit(GenerationRequest("x", IMAGE, 24, json_schema=POISONED))
    results = [handle.result(timeout=120) for handle in neighbours]

    assert [(r.finish_reason, r.completion_tokens) for r in results] == [("length", 24)] * 3
    assert [r.text for r in results] == alone  # started over in a fresh pipeline, the same greedy answer
    with pytest.raises(EngineError) as failed:
        poisoned.result(timeout=120)
    assert failed.value.code == ErrorCode.INFERENCE_ERROR
    assert str(failed.value) == ENGINE_FAILED  # the library's message (build paths and all) stays in the log


def test_a_failing_request_alone_fails_and_the_engine_goes_on(engine):
    with pytest.raises(EngineError, match=ENGINE_FAILED):
        engine.submit(GenerationRequest("x", IMAGE, 8, json_schema=POISONED)).result(timeout=120)
    assert engine.submit(_innocent("Describe.")).result(timeout=120).completion_tokens == 24


def test_a_generated_nul_is_dropped_from_the_text(model_cache):
    # A byte-level vocabulary has a token for the byte 0; Postgres text cannot hold it, so the engine's text never
    # carries it (else a sampled answer would fail on Postgres alone).
    import openvino_genai

    from workers.engines.pipeline_process import _Loop

    loop = _Loop.__new__(_Loop)
    loop._tokenizer = openvino_genai.Tokenizer(str(model_cache / f"{TINY}-fp16"))
    ids = loop._tokenizer.encode("a\x00b").input_ids.data[0].tolist()
    assert loop._tokenizer.decode(ids, skip_special_tokens=True) == "a\x00b"  # the token is there
    assert loop._decode(ids) == "ab"
    assert loop._decode(ids).startswith(loop._decode(ids[:2]))  # a shorter decode is still a prefix (streaming)
