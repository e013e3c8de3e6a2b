"""The OpenVINO engine in-process, on the tiny Qwen3-VL."""
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
from PIL import Image

from service.core.config import load_settings
from tests.conftest import ROOT, TINY
from workers.engines import create_engine
from workers.engines.base import EngineError, GenerationRequest
from workers.modelstore.registry import local_model

IMAGE = Image.new("RGB", (160, 120), (20, 120, 200))


@pytest.fixture(scope="module")
def engine(model_cache):
    settings = load_settings({"model_cache": str(model_cache), "batch_size": 4, "default_model": TINY}, environ={})
    engine = create_engine(local_model(settings, settings.registry[TINY]), settings)
    engine.load()
    engine.warmup()
    yield engine
    engine.close()


def test_concurrent_requests_share_steps_up_to_batch_size(engine):
    with ThreadPoolExecutor(max_workers=10) as pool:
        request = GenerationRequest("Describe.", IMAGE, 24, ignore_eos=True)
        handles = list(pool.map(lambda _: engine.submit(request), range(10)))
    results = [handle.result(timeout=60) for handle in handles]
    assert all(r.finish_reason == "length" and r.completion_tokens == 24 for r in results)
    assert max(r.batch_size for r in results) == 4  # never more than batch_size in the pipeline
    assert all(r.prompt_tokens > 20 for r in results)  # prompt + chat template + image tokens
    assert all(0 < r.ttft_ms <= r.inference_ms for r in results)


def test_results_time_the_image_encoding_and_the_first_token(engine):
    submitted = time.monotonic()
    result = engine.submit(GenerationRequest("Describe.", IMAGE, 16, ignore_eos=True)).result(timeout=60)
    assert result.encode_ms > 0
    # The engine process stamps the first token on the machine-wide monotonic clock: after the submit, before now.
    assert submitted < result.first_token_at < time.monotonic()


def test_scheduler_and_openvino_settings_reach_the_pipeline(model_cache):
    settings = load_settings({"model_cache": str(model_cache), "batch_size": 2, "default_model": TINY,
                              "scheduler": {"enable_prefix_caching": True, "max_num_batched_tokens": 512},
                              "openvino_properties": {"KV_CACHE_PRECISION": "f16"}}, environ={})
    engine = create_engine(local_model(settings, settings.registry[TINY]), settings)
    engine.load()
    try:
        result = engine.submit(GenerationRequest("Hi.", IMAGE, 4, ignore_eos=True)).result(timeout=60)
        assert result.completion_tokens == 4
    finally:
        engine.close()
    wrong = load_settings({"model_cache": str(model_cache), "default_model": TINY,
                           "scheduler": {"max_num_batched_tokenz": 512}}, environ={})
    with pytest.raises(EngineError, match="max_num_batched_tokenz"):
        create_engine(local_model(wrong, wrong.registry[TINY]), wrong).load()


def test_greedy_output_is_deterministic(engine):
    first = engine.submit(GenerationRequest("What is this?", IMAGE, 12)).result(timeout=60)
    second = engine.submit(GenerationRequest("What is this?", IMAGE, 12)).result(timeout=60)
    assert first.text == second.text and first.text


def test_sampling_runs_with_a_temperature(engine):
    result = engine.submit(GenerationRequest("What is this?", IMAGE, 12, temperature=1.0)).result(timeout=60)
    assert 1 <= result.completion_tokens <= 12


def test_cancel_mid_generation_keeps_the_partial_output(engine):
    handle = engine.submit(GenerationRequest("Go on.", IMAGE, 3000, ignore_eos=True))
    # Wait for some tokens: a short one finishing proves the engine has been stepping.
    engine.submit(GenerationRequest("Short.", IMAGE, 8)).result(timeout=60)
    handle.cancel()
    result = handle.result(timeout=60)
    assert result.finish_reason == "cancelled"
    assert 0 < result.completion_tokens < 3000
    assert result.text


def test_a_closed_engine_refuses_requests(model_cache):
    settings = load_settings({"model_cache": str(model_cache), "batch_size": 2, "default_model": TINY}, environ={})
    engine = create_engine(local_model(settings, settings.registry[TINY]), settings)
    engine.load()
    engine.close()
    with pytest.raises(EngineError):
        engine.submit(GenerationRequest("Hi.", IMAGE, 4))


def test_a_crashed_engine_process_fails_its_requests_and_is_restarted(model_cache):
    settings = load_settings({"model_cache": str(model_cache), "batch_size": 2, "default_model": TINY}, environ={})
    engine = create_engine(local_model(settings, settings.registry[TINY]), settings)
    engine.load()
    try:
        running = engine.submit(GenerationRequest("Go on.", IMAGE, 4000, ignore_eos=True))
        engine.submit(GenerationRequest("Short.", IMAGE, 4)).result(timeout=60)  # the long one is generating now
        engine._process.kill()  # what an out-of-memory kill or a crash in native code looks like
        with pytest.raises(EngineError, match="died"):
            running.result(timeout=60)
        assert engine.submit(GenerationRequest("Again.", IMAGE, 4)).result(timeout=120).completion_tokens == 4
    finally:
        engine.close()


def test_a_conversation_is_templated_over_every_turn(engine, model_cache):
    import openvino_genai

    single = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}]
    conversation = [{"role": "system", "content": "Be brief."}, *single,
                    {"role": "assistant", "content": "A blue card."}, {"role": "user", "content": "Which blue?"}]
    plain = engine.submit(GenerationRequest("Describe.", IMAGE, 2)).result(timeout=60)
    one = engine.submit(GenerationRequest("", IMAGE, 2, messages=single)).result(timeout=60)
    many = engine.submit(GenerationRequest("", IMAGE, 2, messages=conversation)).result(timeout=60)
    assert one.prompt_tokens == plain.prompt_tokens  # one turn templated here == the pipeline's own templating

    # The conversation costs exactly the tokens the model's chat template adds for the other turns.
    tokenizer = openvino_genai.Tokenizer(str(model_cache / f"{TINY}-fp16"))
    def count(messages):  # noqa: E306
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        return tokenizer.encode(text, add_special_tokens=False).input_ids.shape[1]
    assert many.prompt_tokens - one.prompt_tokens == count(conversation) - count(single)


def test_a_streamed_request_hands_over_its_text_step_by_step(engine):
    handle = engine.submit(GenerationRequest("Go on.", IMAGE, 16, ignore_eos=True, stream=True))
    pieces = list(handle.stream(timeout=60))
    result = handle.result(timeout=0)
    assert len(pieces) > 1 and result.completion_tokens == 16
    assert result.text.startswith("".join(pieces))  # the last piece may still be held back mid-character


def test_engine_failures_that_mean_out_of_memory_are_told_apart():
    from workers.engines.pipeline_process import _OutOfMemory, error_code

    assert error_code(MemoryError()) == "out_of_memory"
    assert error_code(RuntimeError("Exception from src/core: std::bad_alloc")) == "out_of_memory"
    assert error_code(_OutOfMemory("the engine dropped the request (IGNORED)")) == "out_of_memory"
    assert error_code(RuntimeError("shape mismatch")) == "inference_error"


def test_the_engine_process_exits_when_its_worker_is_killed(model_cache, tmp_path):
    script = tmp_path / "worker.py"
    # The engine's spawned process imports this file again (as __mp_main__): only __main__ runs the worker part.
    script.write_text(
        "import time\n"
        "from service.core.config import load_settings\n"
        "from workers.engines import create_engine\n"
        "from workers.modelstore.registry import local_model\n"
        "if __name__ == '__main__':\n"
        f"    settings = load_settings({{'model_cache': {str(model_cache)!r}, 'default_model': {TINY!r}}},\n"
        "                             environ={})\n"
        f"    engine = create_engine(local_model(settings, settings.registry[{TINY!r}]), settings)\n"
        "    engine.load()\n"
        "    print(engine._process.pid, flush=True)\n"
        "    time.sleep(600)\n")
    worker = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        engine = psutil.Process(int(worker.stdout.readline()))
        worker.kill()  # SIGKILL: no atexit, no daemon-process cleanup
        worker.wait()
        gone, _ = psutil.wait_procs([engine], timeout=30)
        assert gone, "the engine process outlived its worker"
    finally:
        worker.kill()


def test_a_request_for_logprobs_gets_each_tokens_logprob_and_end_in_the_text(engine):
    schema = {"type": "object", "additionalProperties": False, "required": ["vendor", "total"],
              "properties": {"vendor": {"type": "string", "maxLength": 12}, "total": {"type": ["number", "null"]}}}
    request = GenerationRequest("Extract.", IMAGE, 64, json_schema=schema, logprobs=True)
    result = engine.submit(request).result(timeout=60)
    assert len(result.token_ends) == len(result.token_logprobs) == result.completion_tokens
    assert result.token_ends == sorted(result.token_ends) and result.token_ends[-1] == len(result.text)
    assert all(logprob <= 0 for logprob in result.token_logprobs) and any(lp < 0 for lp in result.token_logprobs)
    plain = engine.submit(GenerationRequest("Extract.", IMAGE, 8, json_schema=schema)).result(timeout=60)
    assert plain.token_ends is None and plain.token_logprobs is None
