"""The full-size benchmark: the real Qwen3-VL-2B compute, PyTorch baselines vs OpenVINO vs the service.

    python -m bench.full_bench [--images 8] [--tokens 64] [--batches 1,4,8,16] [--write docs/BENCHMARKS.md]

The model is the published Qwen3-VL-2B-Instruct architecture with random weights (`qwen3-vl-2b-random`),
built offline: per token it computes exactly what the real model does. The checkpoint and its OpenVINO
exports are cached under --cache (git-ignored). Every run generates --tokens tokens per image with EOS
ignored, on the same images: receipt-like 448x448 PNGs and one large scan that max_pixels scales down.

Each measurement runs in a fresh process (bench.full_bench_run), so its load time and peak RSS are its own.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis
import requests as http_client
import yaml

from bench.full_bench_run import MAX_PIXELS, PeakRss, receipt_images
from bench.markdown import write_section
from bench.service_bench import BENCH_PORT, BENCH_REDIS_URL, bench_jobs, bench_key, start_service
from service.adapters.migrate import upgrade
from service.core.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
MODEL = "qwen3-vl-2b-random"


@dataclass(frozen=True)
class Export:
    """One OpenVINO export of the random 2B checkpoint."""

    label: str  # what the table calls it
    weight_format: str
    extra_args: tuple[str, ...] = ()

    @property
    def dir_name(self) -> str:
        return f"{MODEL}-{self.label}"


EXPORTS = {
    "int8": Export("int8", "int8"),
    "int4": Export("int4", "int4"),
    "int4-g64": Export("int4-g64", "int4", ("--group-size", "64")),
    "int4-g32": Export("int4-g32", "int4", ("--group-size", "32")),
}


def checkpoint_dir(cache: Path) -> Path:
    """The random-weight Hugging Face checkpoint, built once."""
    from workers.modelstore.tiny import build_random_checkpoint

    path = cache / "checkpoints" / MODEL
    if not (path / "config.json").is_file() or not any(path.glob("*.safetensors")):
        started = time.monotonic()
        partial = path.with_name(path.name + ".partial")
        build_random_checkpoint(partial, MODEL)
        partial.rename(path)
        print(f"built {MODEL} checkpoint in {time.monotonic() - started:.0f}s", flush=True)
    return path


def export_dir(cache: Path, export: Export) -> Path:
    """The OpenVINO export, made once (atomically, by the service's own exporter)."""
    from workers.modelstore.export import export_model

    path = cache / export.dir_name
    if not (path / "openvino_language_model.xml").is_file():
        started = time.monotonic()
        export_model(checkpoint_dir(cache), path, export.weight_format, extra_args=export.extra_args)
        print(f"exported {export.label} in {time.monotonic() - started:.0f}s", flush=True)
    return path


def openvino(cache: Path, export: Export) -> dict[str, str]:
    """What a measurement needs to run the worker's OpenVINO engine on `export`."""
    return {"engine": "openvino", "model_dir": str(export_dir(cache, export)), "weight_format": export.weight_format}


@dataclass
class Row:
    """One line of the table: a configuration and what it measured."""

    name: str
    batch: int
    measured: dict = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.measured["requests"] / self.measured["elapsed_s"]

    @property
    def tokens_per_s(self) -> float:
        return self.measured["generated"] / self.measured["elapsed_s"]

    def markdown(self, baseline: float) -> str:
        m = self.measured
        ready = f"{m['ready_s']:.1f}" if "ready_s" in m else "-"
        ttft = f"{m['ttft_p50_s']:.1f} / {m['ttft_p95_s']:.1f}" if "ttft_p50_s" in m else "-"
        rss = f"{m['peak_rss_bytes'] / 2**30:.2f}" if "peak_rss_bytes" in m else "-"
        return (f"| {self.name} | {self.batch} | {m['requests']} | {self.images_per_s:.3f} | {self.tokens_per_s:.2f} "
                f"| {self.images_per_s / baseline:.1f}x | {ttft} | {ready} | {rss} |")


def measure(config: dict) -> dict:
    """Run one configuration in a fresh process (bench.full_bench_run) and return what it printed."""
    config = {**config, "launched_at": time.time()}
    process = subprocess.run([sys.executable, "-m", "bench.full_bench_run", json.dumps(config)], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if process.returncode != 0:
        raise RuntimeError(f"measurement failed ({process.returncode}): {config}")
    return json.loads(process.stdout.strip().splitlines()[-1])


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    flags = Path("/proc/cpuinfo").read_text()
    isa = ", ".join(name for name in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile") if f" {name}" in flags)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} vCPU {cpu} ({isa}), {memory:.0f} GiB RAM, Linux {platform.release()}"


def measure_service(cache: Path, images: int, requests: int, tokens: int, batch: int) -> dict:
    """HTTP -> API -> SQLite -> Redis -> one `vlq worker` -> SQLite, every image a job (as bench.service_bench).

    The client polls the oldest unfinished job every 0.25 s, as a polling client would; the end of the run is
    seen at most that late.
    """
    with tempfile.TemporaryDirectory(prefix="vlq-full-bench-") as tmp:
        config = {
            "database_url": f"sqlite:///{tmp}/bench.db", "redis_url": BENCH_REDIS_URL, "blob_dir": f"{tmp}/blobs",
            "model_cache": str(cache.resolve()), "batch_size": batch, "kv_cache_gb": 2, "port": BENCH_PORT,
            "default_model": MODEL,
            "models": {MODEL: {"source": f"builtin:{MODEL}", "weight_format": "int8", "max_pixels": MAX_PIXELS}},
        }
        settings_file = Path(tmp) / "config.yaml"
        settings_file.write_text(yaml.safe_dump(config))
        upgrade(config["database_url"])
        http = http_client.Session()
        api_key = bench_key(load_settings(environ={"VLQ_CONFIG": str(settings_file)}))
        http.headers["Authorization"] = f"Bearer {api_key}"
        broker = redis.Redis.from_url(BENCH_REDIS_URL)
        broker.flushdb()
        service = start_service(settings_file, MODEL, 1, api_key)
        processes = service.processes
        worker_rss = PeakRss(psutil.Process(processes[1].pid))
        try:
            sources = receipt_images(images)
            cpu_before = service_cpu_s(processes, broker)
            rate = bench_jobs(http, MODEL, [sources[i % len(sources)] for i in range(requests)], tokens, poll_s=0.25)
            cpu = {name: used - cpu_before[name] for name, used in service_cpu_s(processes, broker).items()}
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=300)
    return {"requests": requests, "elapsed_s": requests / rate, "generated": requests * tokens,
            "ready_s": service.worker_ready_s, "peak_rss_bytes": worker_rss.stop(), "cpu_s": cpu}


def service_cpu_s(processes: list[subprocess.Popen[bytes]], broker: redis.Redis) -> dict[str, float]:
    """CPU seconds used so far: the engine process, the rest of the worker, the API (gunicorn), and Redis.

    On a machine whose cores the engine keeps busy, whatever the service itself uses is taken from the engine:
    its share of the CPU is the service path's cost, measured without the noise of wall-clock time.
    """
    def used(process: psutil.Process) -> float:
        times = process.cpu_times()
        return times.user + times.system

    api, worker = (psutil.Process(process.pid) for process in processes[:2])
    engines = worker.children(recursive=True)
    redis_cpu = broker.info("cpu")
    return {"engine": sum(map(used, engines)), "worker": used(worker),
            "api": used(api) + sum(map(used, api.children(recursive=True))),
            "redis": redis_cpu["used_cpu_user"] + redis_cpu["used_cpu_sys"]}


def gemm_gflops(seconds: float = 2.0) -> dict[str, float]:
    """What this machine sustains on a large matrix product in fp32, bf16 and int8: the practical ceilings.

    torch's oneDNN GEMMs on every core; bf16 and int8 are fast only where the CPU has instructions for them
    (AVX512_BF16 / AMX, VNNI), which is also where OpenVINO computes in them.
    """
    import torch

    size = 2048
    a, b = torch.rand(size, size), torch.rand(size, size)
    a16, b16 = a.bfloat16(), b.bfloat16()
    a8, b8 = (torch.randint(-128, 128, (size, size), dtype=torch.int8) for _ in range(2))
    products = {"fp32": lambda: a @ b, "bf16": lambda: a16 @ b16, "int8": lambda: torch._int_mm(a8, b8)}
    ceilings = {}
    for name, product in products.items():
        product()
        runs, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            product()
            runs += 1
        ceilings[name] = runs * 2 * size**3 / (time.perf_counter() - started) / 1e9
    return ceilings


def memory_gib_s(seconds: float = 2.0) -> float:
    """Memory bandwidth: bytes read plus written per second copying a 1 GiB buffer (every core), decode's ceiling."""
    import torch

    source = torch.ones(2**28)  # 1 GiB of fp32, far beyond any cache
    target = torch.empty_like(source)
    target.copy_(source)
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        target.copy_(source)
        runs += 1
    return runs * 2 * source.nbytes / (time.perf_counter() - started) / 2**30


def flops_per_image(checkpoint: Path, prompt_tokens: int, image_tokens: int, generated: int) -> dict[str, float]:
    """About how much arithmetic one request is, from the model's config: vision, prefill, and each decode step."""
    config = json.loads((checkpoint / "config.json").read_text())
    text, vision = config["text_config"], config["vision_config"]
    hidden, head_dim = text["hidden_size"], text["head_dim"]
    attention = hidden * head_dim * (2 * text["num_attention_heads"] + 2 * text["num_key_value_heads"])
    llm = text["num_hidden_layers"] * (attention + 3 * hidden * text["intermediate_size"])
    patches = image_tokens * vision["spatial_merge_size"] ** 2
    width = vision["hidden_size"]
    vision_layer = 4 * width * width + 2 * width * vision["intermediate_size"]
    return {
        # weights x tokens (x2: multiply and add), plus attention's n^2 terms.
        "vision": 2 * vision["depth"] * (vision_layer * patches + 2 * width * patches**2),
        "prefill": 2 * llm * prompt_tokens + 2 * text["num_hidden_layers"] * hidden * prompt_tokens**2,
        "decode_step": 2 * (llm + hidden * text["vocab_size"]),  # the LM head runs on every generated token
        "generated": generated,
    }


# Tuning variants, each on int8 at batch 8 against the plain int8 batch-8 row: what moved the numbers.
TUNING = {
    "kv-f16": {"properties": {"KV_CACHE_PRECISION": "f16"}},
    "no-dynamic-quantization": {"properties": {"DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}},
    # Activations are quantized to int8 in groups of 32 by default (VNNI CPUs); larger groups are faster, coarser.
    "dq-group-128": {"properties": {"DYNAMIC_QUANTIZATION_GROUP_SIZE": 128}},
    "dq-group-256": {"properties": {"DYNAMIC_QUANTIZATION_GROUP_SIZE": 256}},
    "f32-compute": {"properties": {"INFERENCE_PRECISION_HINT": "f32"}},  # bf16 is the default where the CPU has it
    "no-pinning": {"properties": {"ENABLE_CPU_PINNING": False}},
    "batched-tokens-1024": {"scheduler": {"max_num_batched_tokens": 1024}},
    "prefix-caching": {"scheduler": {"enable_prefix_caching": True}},
    "threads-1": {"threads": 1},
    "max-pixels-100k": {"max_pixels": 100352},
    "int4-g64": {"export": "int4-g64"},
    "int4-g32": {"export": "int4-g32"},
}


def measure_variant(common: dict, cache: Path, name: str | None, requests: int) -> dict:
    """OpenVINO at batch 8 with the TUNING variant `name` (None: plain int8, the variants' baseline)."""
    variant = dict(TUNING[name]) if name else {}
    export = EXPORTS[variant.pop("export", "int8")]
    return measure({**common, **variant, **openvino(cache, export), "batch_size": 8, "requests": requests})


def section(rows: list[Row], pairs: list[tuple[Row, Row]], args: argparse.Namespace, load: float,
            ceilings: dict[str, float]) -> str:
    baseline = next((row.images_per_s for row in rows if row.name.startswith("PyTorch fp32")), rows[0].images_per_s)
    lines = [
        "## Full-size benchmark: Qwen3-VL-2B compute, PyTorch vs OpenVINO vs the service", "",
        f"Command: `make bench-full` (= `python -m bench.full_bench {' '.join(args.argv)}`)".replace(" `)", "`)"),
        f"Machine: {machine()}; load average {load:.1f} when the run started.",
        f"Workload: `{MODEL}` (the published Qwen3-VL-2B-Instruct architecture, random weights), {args.images} "
        f"images cycled ({args.images - 1} receipt-like 448x448 PNGs and one 1700x2200 scan scaled down to "
        f"max_pixels {MAX_PIXELS}), {args.tokens} generated tokens per image with EOS ignored.",
        "TTFT: from a request entering the engine (PyTorch: its generate call; OpenVINO: it got one of the "
        "batch's slots) until its first generated token; in a batch it includes encoding the other images that "
        "entered with it. Ready: from process start until the model answered a warm-up "
        "request. RSS: peak resident memory of the process and its children.", "",
        "| run | batch | requests | images/s | tokens/s | vs PyTorch fp32 | TTFT p50 / p95 s | ready s "
        "| peak RSS GiB |",
        "|---|---|---|---|---|---|---|---|---|",
        *(row.markdown(baseline) for row in rows),
    ]
    if pairs:
        lines += service_comparison(pairs, baseline)
    single = next((row for row in rows if row.name == "OpenVINO int8" and row.batch == 1), None)
    if single is not None:
        lines += where_time_goes(single, args, ceilings)
    return "\n".join(lines) + "\n"


def service_comparison(pairs: list[tuple[Row, Row]], baseline: float) -> list[str]:
    """The service path against the raw engine on the same requests, run alternately so drift hits both."""
    import statistics

    ratios = [service.images_per_s / engine.images_per_s for engine, service in pairs]
    cpu = {name: sum(service.measured["cpu_s"][name] for _, service in pairs) for name in pairs[0][1].measured["cpu_s"]}
    overhead = (cpu["worker"] + cpu["api"] + cpu["redis"]) / sum(cpu.values())
    engine, service = pairs[0]
    return [
        "", f"### Service path vs raw engine (int8, batch {engine.batch}, {engine.measured['requests']} requests, "
        f"{len(pairs)} alternating runs each)", "",
        "| run | batch | requests | images/s | tokens/s | vs PyTorch fp32 | TTFT p50 / p95 s | ready s "
        "| peak RSS GiB |",
        "|---|---|---|---|---|---|---|---|---|",
        *(row.markdown(baseline) for pair in pairs for row in pair), "",
        f"Service path / raw engine: {', '.join(f'{ratio:.2f}' for ratio in ratios)}; "
        f"median **{statistics.median(ratios):.2f}**. The service's ready time is from starting `vlq worker` "
        "(the API already up) until it reported the model live in /readyz (OpenVINO's compiled-model cache warm); "
        "its RSS is the worker's (Celery process and engine process together).", "",
        f"CPU during the service runs: engine process {cpu['engine']:.0f} s, the rest of the worker (Celery, claims, "
        f"image decoding, result writes) {cpu['worker']:.1f} s, API {cpu['api']:.1f} s, Redis {cpu['redis']:.1f} s: "
        f"the service's own share is **{overhead:.1%}** of the CPU, which is what it takes from the engine "
        "on a machine the engine keeps busy (wall-clock ratios move more than that with the machine's noise).",
    ]


def where_time_goes(row: Row, args: argparse.Namespace, ceilings: dict[str, float]) -> list[str]:
    """From the engine's own figures at batch 1: image encoding, prefill and decoding, against the machine."""
    import statistics

    m = row.measured
    encode_s = statistics.median(m["encode_ms"]) / 1000
    prefill_s = statistics.median(m["engine_ttft_ms"]) / 1000
    decode_s = statistics.median([(total - first) / (args.tokens - 1) for total, first
                                  in zip(m["engine_ms"], m["engine_ttft_ms"], strict=True)]) / 1000
    prompt = int(statistics.median(m["prompt_tokens"]))
    flops = flops_per_image(checkpoint_dir(args.cache), prompt, image_tokens=(448 // 32) ** 2, generated=args.tokens)
    weights = (export_dir(args.cache, EXPORTS["int8"]) / "openvino_language_model.bin").stat().st_size
    per_image = encode_s + prefill_s + decode_s * (args.tokens - 1)
    return [
        "", f"### Where the time goes ({row.name}, batch 1, the engine's own figures, medians)", "",
        "| stage | seconds per image | share | work | achieved |", "|---|---|---|---|---|",
        f"| image encoding (vision tower, in `add_request`) | {encode_s:.2f} | {encode_s / per_image:.0%} "
        f"| {flops['vision'] / 1e9:.0f} GFLOP | {flops['vision'] / encode_s / 1e9:.0f} GFLOP/s |",
        f"| prefill ({prompt} prompt tokens) | {prefill_s:.2f} | {prefill_s / per_image:.0%} "
        f"| {flops['prefill'] / 1e9:.0f} GFLOP | {flops['prefill'] / prefill_s / 1e9:.0f} GFLOP/s |",
        f"| decode ({args.tokens - 1} more tokens, {1000 * decode_s:.0f} ms each) | {decode_s * (args.tokens - 1):.2f} "
        f"| {decode_s * (args.tokens - 1) / per_image:.0%} | {weights / 2**30:.2f} GiB of weights read per step "
        f"| {weights / decode_s / 2**30:.1f} GiB/s |",
        "", "The machine's ceilings, measured at the start of the run: a large matrix product (torch's oneDNN, "
        f"every core) sustains {ceilings['fp32']:.0f} GFLOP/s in fp32, {ceilings['bf16']:.0f} in bf16 and "
        f"{ceilings['int8']:.0f} GOP/s in int8; copying 1 GiB moves {ceilings['memory_gib_s']:.1f} GiB/s "
        "(read + written).",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "bench-models")
    parser.add_argument("--images", type=int, default=8, help="distinct images; runs cycle through them")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--batches", default="1,4,8,16")
    parser.add_argument("--formats", default="int8,int4")
    parser.add_argument("--torch", default="fp32,bf16", help="PyTorch dtypes ('' for none)")
    parser.add_argument("--torch-requests", type=int, default=2)
    parser.add_argument("--min-requests", type=int, default=8, help="requests per OpenVINO run (at least the batch)")
    parser.add_argument("--tune", default="", help=f"comma-separated variants at int8 batch 8: {', '.join(TUNING)}")
    parser.add_argument("--service-requests", type=int, default=24, help="requests per service/engine run (0: none)")
    parser.add_argument("--service-runs", type=int, default=3, help="alternating engine and service runs")
    parser.add_argument("--write", type=Path, help="update this markdown file's section")
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    load = os.getloadavg()[0]
    ceilings = {**gemm_gflops(), "memory_gib_s": memory_gib_s()}
    common = {"images": args.images, "tokens": args.tokens, "cache": str(args.cache)}

    rows = []
    for dtype in filter(None, args.torch.split(",")):
        rows.append(Row(f"PyTorch {dtype} eager", 1, measure(
            {**common, "engine": "torch", "dtype": dtype, "checkpoint": str(checkpoint_dir(args.cache)),
             "requests": args.torch_requests})))
        print(rows[-1].markdown(rows[0].images_per_s), flush=True)
    batches = [int(batch) for batch in args.batches.split(",")]
    for label in filter(None, args.formats.split(",")):
        for batch in batches:
            rows.append(Row(f"OpenVINO {label}", batch, measure(
                {**common, **openvino(args.cache, EXPORTS[label]), "batch_size": batch,
                 "requests": max(batch, args.min_requests)})))
            print(rows[-1].markdown(rows[0].images_per_s), flush=True)
    for name in filter(None, args.tune.split(",")):
        rows.append(Row(f"OpenVINO int8, {name}" if "int4" not in name else f"OpenVINO {name}", 8,
                        measure_variant(common, args.cache, name, max(8, args.min_requests))))
        print(rows[-1].markdown(rows[0].images_per_s), flush=True)
    pairs = []
    for _ in range(args.service_runs if args.service_requests else 0):
        engine = Row("OpenVINO int8 (raw engine)", 8, measure(
            {**common, **openvino(args.cache, EXPORTS["int8"]), "batch_size": 8, "requests": args.service_requests}))
        service = Row("service path (HTTP, Redis, worker, DB), int8", 8, measure_service(
            args.cache, args.images, args.service_requests, args.tokens, 8))
        pairs.append((engine, service))
        print(engine.markdown(rows[0].images_per_s), service.markdown(rows[0].images_per_s), sep="\n", flush=True)
    text = section(rows, pairs, args, load, ceilings)
    print(text)
    if args.write:
        write_section(args.write, text)


if __name__ == "__main__":
    main()
