"""One measurement of bench.full_bench, alone in its process: load, run, print one JSON line.

    python -m bench.full_bench_run '{"engine": "openvino", "model_dir": ..., "batch_size": 8, ...}'

A process of its own gives each run its own load time (from process start, imports included) and peak
RSS (this process and its children together, sampled; the OpenVINO engine runs in a child process).
"""
from __future__ import annotations

import io
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from PIL import Image, ImageDraw

from workers.engines.images import prepare_image

PROMPT = "Read this receipt and give the merchant, the date and the total."
MAX_PIXELS = 448 * 448


def receipt_images(count: int) -> list[bytes]:
    """count-1 receipt-like 448x448 PNGs and, last, one large 1700x2200 scan (scaled down by max_pixels)."""
    images = []
    for index in range(count):
        large = index == count - 1
        width, height = (1700, 2200) if large else (448, 448)
        image = Image.new("RGB", (width, height), "white")
        draw = ImageDraw.Draw(image)
        step = height // 16
        for line in range(14):
            price = f"{line * 3 + index % 7}.{line:02d}"
            draw.text((width // 18, step + line * step), f"ITEM {index:03d}-{line:02d}   {price}", fill="black",
                      font_size=max(10, step // 2))
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        images.append(buffer.getvalue())
    return images


class PeakRss:
    """Samples the resident memory of a process (this one by default) and its children; keeps the highest sum."""

    def __init__(self, process: psutil.Process | None = None, interval_s: float = 0.1) -> None:
        self.peak = 0
        self._process = process or psutil.Process()
        self._interval_s = interval_s
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.wait(self._interval_s):
            total = 0
            for process in [self._process, *self._process.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)

    def stop(self) -> int:
        self._stop.set()
        return self.peak


def since_launch(config: dict[str, Any]) -> float:
    """Seconds since the parent started this process (psutil's create_time is only to the second)."""
    return time.time() - config["launched_at"]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def run_torch(config: dict[str, Any], images: list[Any]) -> dict[str, Any]:
    """transformers eager, one image at a time (the seed documents' approach), in fp32 or bf16."""
    import torch
    from transformers import AutoTokenizer, Qwen2VLImageProcessor, Qwen3VLForConditionalGeneration
    from transformers.generation.streamers import BaseStreamer

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[config["dtype"]]
    checkpoint = config["checkpoint"]
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    # The PIL image processor: the "fast" one, and the Qwen3VLProcessor that bundles a video processor,
    # need torchvision, which has no CPU build that loads with this torch.
    processor = Qwen2VLImageProcessor.from_pretrained(checkpoint)
    model = Qwen3VLForConditionalGeneration.from_pretrained(checkpoint, dtype=dtype).eval()
    ready_s = since_launch(config)

    class FirstToken(BaseStreamer):
        """generate() hands the streamer the prompt first, then each new token: the second call is the TTFT."""

        def __init__(self) -> None:
            self.calls, self.first_at = 0, None

        def put(self, value: Any) -> None:
            self.calls += 1
            if self.calls == 2:
                self.first_at = time.perf_counter()

        def end(self) -> None:
            pass

    ttfts, generated, prompt_tokens = [], 0, []
    started = time.perf_counter()
    for image in images:
        pixels = processor(images=[image], return_tensors="pt")
        image_tokens = int(pixels["image_grid_thw"].prod()) // processor.merge_size ** 2
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        text = text.replace("<|image_pad|>", "<|image_pad|>" * image_tokens)
        inputs = tokenizer(text, return_tensors="pt")
        streamer = FirstToken()
        submitted = time.perf_counter()
        with torch.inference_mode():
            output = model.generate(**inputs, pixel_values=pixels["pixel_values"].to(dtype),
                                    image_grid_thw=pixels["image_grid_thw"], max_new_tokens=config["tokens"],
                                    min_new_tokens=config["tokens"], do_sample=False, streamer=streamer)
        prompt_tokens.append(inputs["input_ids"].shape[1])
        generated += output.shape[1] - prompt_tokens[-1]
        ttfts.append(streamer.first_at - submitted)
    elapsed = time.perf_counter() - started
    return {"ready_s": ready_s, "elapsed_s": elapsed, "generated": generated, "ttft_s": ttfts,
            "prompt_tokens": prompt_tokens}


def run_openvino(config: dict[str, Any], images: list[Any]) -> dict[str, Any]:
    """The worker's own engine class: every request submitted at once, batch_size of them in the engine."""
    from service.core.config import ModelSpec, load_settings
    from workers.engines import create_engine
    from workers.engines.base import GenerationRequest
    from workers.modelstore.registry import LocalModel

    settings = load_settings({
        "batch_size": config["batch_size"], "kv_cache_gb": config.get("kv_cache_gb", 2),
        "model_cache": config["cache"], "inference_threads": config.get("threads", 0),
        "openvino_properties": config.get("properties", {}), "scheduler": config.get("scheduler", {}),
    }, environ={})
    # The service's registry name and format, so that both use (and warm) the same compiled-model cache.
    spec = ModelSpec(name="qwen3-vl-2b-random", source="builtin:qwen3-vl-2b-random",
                     weight_format=config["weight_format"], max_pixels=config["max_pixels"])
    engine = create_engine(LocalModel(spec=spec, path=Path(config["model_dir"])), settings)
    imported_s = since_launch(config)  # the interpreter, VLQ's and OpenVINO's imports, the settings
    engine.load()  # the engine process: reading the model, compiling it (or reading the compiled cache)
    loaded_s = since_launch(config)
    engine.warmup()  # one short generation, as the worker does before it takes jobs (llama-server does too)
    ready_s = since_launch(config)

    started = time.perf_counter()
    submitted, handles = [], []
    for image in images:  # submit blocks while all batch_size slots are taken: a request waits like a job
        handles.append(engine.submit(GenerationRequest(PROMPT, image, config["tokens"], ignore_eos=True)))
        submitted.append(time.monotonic())  # it has a slot: from here on it is the engine's time
    results = [handle.result(timeout=7200) for handle in handles]
    elapsed = time.perf_counter() - started
    engine.close()
    return {
        "ready_s": ready_s, "elapsed_s": elapsed,
        "ready_parts_s": {"imports": imported_s, "load": loaded_s - imported_s, "warmup": ready_s - loaded_s},
        "generated": sum(result.completion_tokens for result in results),
        "prompt_tokens": [result.prompt_tokens for result in results],
        "ttft_s": [result.first_token_at - at for result, at in zip(results, submitted, strict=True)],
        # The engine's own figures, for where the time goes.
        "encode_ms": [result.encode_ms for result in results],
        "engine_ttft_ms": [result.ttft_ms for result in results],
        "engine_ms": [result.inference_ms for result in results],
    }


def main() -> None:
    config = json.loads(sys.argv[1])
    rss = PeakRss()
    max_pixels = config.get("max_pixels", MAX_PIXELS)
    sources = receipt_images(config["images"])
    order = [sources[index % len(sources)] for index in range(config["requests"])]
    images = [prepare_image(data, max_pixels) for data in order]
    config["max_pixels"] = max_pixels
    run = run_torch if config["engine"] == "torch" else run_openvino
    measured = run(config, images)
    measured["peak_rss_bytes"] = rss.stop()
    measured["requests"] = len(images)
    measured["ttft_p50_s"] = statistics.median(measured["ttft_s"])
    measured["ttft_p95_s"] = percentile(measured["ttft_s"], 0.95)
    measured["cpu_load_1m"] = os.getloadavg()[0]
    print(json.dumps(measured))


if __name__ == "__main__":
    main()
