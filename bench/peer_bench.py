"""VLQ's engine beside llama.cpp, the engine a CPU user would pick instead: same checkpoint, images, tokens, one run.

    python -m bench.peer_bench [--rounds 2] [--write docs/BENCHMARKS.md]

The peer is built here, once, into the git-ignored --cache: llama.cpp as vendored by the llama-cpp-python 0.3.36
sdist from PyPI, compiled with the CPU's own instruction sets (GGML_NATIVE), and the same random-weight
Qwen3-VL-2B checkpoint that `make bench-full` builds, converted by llama.cpp's own converter to GGUF (Q8_0 and
Q4_K_M, from f16) with an f16 mmproj. It runs as users run it: `llama-server` and its OpenAI-compatible HTTP API,
with 1, 4 and 8 parallel slots (continuous batching on), a client keeping every slot busy.

VLQ runs its worker's engine (int8 and int4, batch 1, 4 and 8) and the whole service path at batch 8, exactly as
bench.full_bench does. Both see the same pixels (each image prepared once by VLQ's `prepare_image` at max_pixels
448x448, and llama.cpp's image token limit set to the same 196 tokens), the same prompt, 64 generated tokens with
EOS ignored, greedy decoding, and no prompt cache. The configurations alternate within each round, and the table
keeps each one's median round, since the machine is noisy.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests as http_client

from bench.full_bench import EXPORTS, Row, checkpoint_dir, machine, measure, measure_service, openvino
from bench.full_bench_run import MAX_PIXELS, PROMPT, PeakRss, percentile, receipt_images
from bench.markdown import write_section
from workers.engines.images import prepare_image

ROOT = Path(__file__).resolve().parent.parent
PEER = "llama-cpp-python==0.3.36"
QUANTS = ("Q8_0", "Q4_K_M")
IMAGE_TOKENS = MAX_PIXELS // (32 * 32)  # Qwen3-VL: 16-pixel patches merged 2x2, one token per 32x32 pixels


# -- building the peer ------------------------------------------------------------------------------------------

def llama_source(cache: Path) -> Path:
    """llama.cpp's source as the llama-cpp-python sdist vendors it (downloaded from PyPI once)."""
    name, version = PEER.split("==")
    source = cache / f"{name.replace('-', '_')}-{version}" / "vendor" / "llama.cpp"
    if not (source / "CMakeLists.txt").is_file():
        # pip reads the sdist's metadata in an isolated environment with its build backend (scikit-build-core,
        # from the index): nothing is compiled, and nothing lands in VLQ's environment.
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        "-d", str(cache), PEER], check=True)
        with tarfile.open(next(cache.glob(f"{name.replace('-', '_')}-{version}.tar.gz"))) as archive:
            archive.extractall(cache, filter="data")
    return source


def llama_build(cache: Path) -> Path:
    """`llama-server` and `llama-quantize`, compiled for this CPU (-march=native via GGML_NATIVE); their folder."""
    build = cache / "build"
    binaries = build / "bin"
    if not (binaries / "llama-server").is_file() or not (binaries / "llama-quantize").is_file():
        started = time.monotonic()
        subprocess.run(["cmake", "-S", str(llama_source(cache)), "-B", str(build), "-G", "Ninja",
                        "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DBUILD_SHARED_LIBS=OFF",
                        "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=ON",
                        "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_OPENSSL=OFF"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", str(build), "-j", str(os.cpu_count()), "--target", "llama-server",
                        "llama-quantize"], check=True, stdout=subprocess.DEVNULL)
        print(f"built llama-server in {time.monotonic() - started:.0f}s", flush=True)
    return binaries


def converter_packages(cache: Path) -> Path:
    """What llama.cpp's converter needs beyond VLQ's own packages (sentencepiece), in a folder of the cache.

    Kept out of the product's environment: the peer is a benchmark-only dependency.
    """
    target = cache / "converter-packages"
    if not (target / "sentencepiece").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "--no-deps", "--target", str(target), "sentencepiece==0.2.1"], check=True)
    return target


def gguf_files(cache: Path, bench_cache: Path, binaries: Path) -> tuple[dict[str, Path], Path]:
    """The checkpoint in GGUF, one file per quantization, and its f16 mmproj (the vision tower)."""
    out = cache / "gguf"
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = checkpoint_dir(bench_cache)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(converter_packages(cache)), str(ROOT)])}
    f16, mmproj = out / "qwen3-vl-2b-random-f16.gguf", out / "mmproj-qwen3-vl-2b-random-f16.gguf"
    for target, extra in ((f16, []), (mmproj, ["--mmproj"])):
        if not target.is_file():
            partial = target.with_suffix(".partial")
            with (out / "convert.log").open("w") as log:  # the converter's progress bars; read it on a failure
                subprocess.run([sys.executable, "-m", "bench.peer_convert", str(llama_source(cache)), "--",
                                str(checkpoint), "--outtype", "f16", "--outfile", str(partial), *extra],
                               check=True, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            # --mmproj names its output itself in some converter versions: take whatever it wrote.
            written = partial if partial.is_file() else next(out.glob("mmproj-*.partial*"))
            written.rename(target)
    models = {}
    for quant in QUANTS:
        models[quant] = out / f"qwen3-vl-2b-random-{quant}.gguf"
        if not models[quant].is_file():
            partial = models[quant].with_suffix(".partial")
            subprocess.run([str(binaries / "llama-quantize"), str(f16), str(partial), quant], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            partial.rename(models[quant])
    return models, mmproj


# -- running the peer -------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def data_urls(count: int) -> list[str]:
    """The benchmark's images, prepared by VLQ's own code (the pixels VLQ's engine sees), as PNG data URLs."""
    urls = []
    for data in receipt_images(count):
        buffer = io.BytesIO()
        prepare_image(data, MAX_PIXELS).save(buffer, "PNG")
        urls.append("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode())
    return urls


def run_llama(binaries: Path, model: Path, mmproj: Path, slots: int, urls: list[str], requests: int,
              tokens: int) -> dict:
    """Start llama-server with `slots` slots, keep every slot busy with `requests` requests, measure from outside."""
    port = free_port()
    launched = time.monotonic()
    with tempfile.NamedTemporaryFile("w+", prefix="llama-server-", suffix=".log") as log:
        server = subprocess.Popen(
            [str(binaries / "llama-server"), "-m", str(model), "--mmproj", str(mmproj), "--host", "127.0.0.1",
             "--port", str(port), "-np", str(slots), "-c", str(1024 * slots), "--cont-batching",
             "-t", str(os.cpu_count()), "--image-min-tokens", str(IMAGE_TOKENS // 2),
             "--image-max-tokens", str(IMAGE_TOKENS), "--cache-ram", "0", "--no-webui"],
            stdout=log, stderr=subprocess.STDOUT)
        rss = PeakRss(psutil.Process(server.pid))
        try:
            url = f"http://127.0.0.1:{port}"
            while not _healthy(url):  # 503 while the model loads
                if server.poll() is not None:
                    raise RuntimeError(f"llama-server exited {server.returncode}: {Path(log.name).read_text()[-2000:]}")
                time.sleep(0.2)
            ready_s = time.monotonic() - launched
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=slots) as pool:  # a slot is never idle while requests remain
                results = list(pool.map(lambda index: _chat(url, urls[index % len(urls)], tokens), range(requests)))
            elapsed = time.perf_counter() - started
        finally:
            server.terminate()
            server.wait(timeout=60)
            peak = rss.stop()
    ttfts = [result["ttft_s"] for result in results]
    return {
        "ready_s": ready_s, "elapsed_s": elapsed, "requests": requests, "peak_rss_bytes": peak,
        "generated": sum(result["generated"] for result in results),
        "ttft_p50_s": statistics.median(ttfts), "ttft_p95_s": percentile(ttfts, 0.95),
        "prompt_tokens": [result["prompt_tokens"] for result in results],
        # llama.cpp's own figures: the prompt (encoding the image, then prefill), and each decoded token.
        "prompt_ms": [result["prompt_ms"] for result in results],
        "decode_ms_per_token": [result["decode_ms_per_token"] for result in results],
    }


def _healthy(url: str) -> bool:
    try:
        return http_client.get(f"{url}/health", timeout=5).status_code == 200
    except http_client.ConnectionError:
        return False


def _chat(url: str, image_url: str, tokens: int) -> dict:
    """One streamed chat completion; the time to its first token, as VLQ's TTFT: from entering a free slot."""
    body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url}},
                                                      {"type": "text", "text": PROMPT}]}],
            "max_tokens": tokens, "temperature": 0, "ignore_eos": True, "cache_prompt": False, "stream": True,
            "stream_options": {"include_usage": True}}
    sent = time.monotonic()
    first, timings, usage = None, {}, {}
    with http_client.post(f"{url}/v1/chat/completions", json=body, stream=True, timeout=3600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first is None and any(choice.get("delta", {}).get("content") for choice in chunk.get("choices", [])):
                first = time.monotonic()
            timings = chunk.get("timings", timings)
            usage = chunk.get("usage") or usage
    return {"ttft_s": (first or time.monotonic()) - sent, "generated": usage.get("completion_tokens", 0),
            "prompt_tokens": usage.get("prompt_tokens", 0), "prompt_ms": timings.get("prompt_ms", 0.0),
            "decode_ms_per_token": timings.get("predicted_per_token_ms", 0.0)}


# -- the run ----------------------------------------------------------------------------------------------------

def configurations(args: argparse.Namespace) -> list[tuple[str, int]]:
    """(name, batch or slots), llama.cpp and VLQ alternating so that drift in the machine hits both."""
    slots = [int(value) for value in args.batches.split(",")]
    peers = [(f"llama.cpp {quant}", n) for quant in QUANTS for n in slots]
    ours = [(f"VLQ engine OpenVINO {label}", n) for label in ("int8", "int4") for n in slots]
    mixed = [config for pair in zip(peers, ours, strict=True) for config in pair]
    return mixed + ([("VLQ service path (HTTP, Redis, worker, DB), int8", 8)] if args.service else [])


def run_one(name: str, batch: int, args: argparse.Namespace, peer: tuple[Path, dict[str, Path], Path],
            urls: list[str]) -> dict:
    requests = max(batch, args.requests)
    common = {"images": args.images, "tokens": args.tokens, "cache": str(args.bench_cache),
              "kv_cache_gb": args.kv_cache_gb}
    if name.startswith("llama.cpp"):
        binaries, models, mmproj = peer
        return run_llama(binaries, models[name.split()[-1]], mmproj, batch, urls, requests, args.tokens)
    if name.startswith("VLQ service"):
        return measure_service(args.bench_cache, args.images, requests, args.tokens, batch)
    label = name.split()[-1]
    return measure({**common, **openvino(args.bench_cache, EXPORTS[label]), "batch_size": batch,
                    "requests": requests})


def section(rows: list[Row], rounds: dict[tuple[str, int], list[float]], args: argparse.Namespace,
            load: float) -> str:
    best = max((row for row in rows if row.name.startswith("llama.cpp")), key=lambda row: row.images_per_s)
    lines = [
        "## Against llama.cpp: the same checkpoint, images and tokens", "",
        f"Command: `make bench-peer` (= `python -m bench.peer_bench {' '.join(args.argv)}`)".replace(" `)", "`)"),
        f"Machine: {machine()}; load average {load:.1f} when the run started.",
        f"Peer: llama.cpp as vendored by `{PEER}` (PyPI sdist), built with GGML_NATIVE; GGUF by its own converter "
        "from the random-weight Qwen3-VL-2B checkpoint, f16 mmproj; `llama-server` with N parallel slots and "
        "continuous batching, driven through its OpenAI-compatible API with N requests always in flight.",
        f"Workload: {args.images} images cycled (as `make bench-full`), {args.tokens} tokens each with EOS ignored, "
        f"greedy, no prompt cache, {IMAGE_TOKENS} image tokens at most on both sides. Each configuration ran "
        f"{args.rounds} time(s), alternating llama.cpp and VLQ; the row is its median round (images/s of every "
        "round in the last column).", "",
        "| run | batch / slots | requests | images/s | tokens/s | vs llama.cpp best | TTFT p50 / p95 s | ready s "
        "| peak RSS GiB | rounds (images/s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = row.markdown(best.images_per_s).rsplit("|", 1)[0]
        lines.append(f"{cells}| {', '.join(f'{value:.3f}' for value in rounds[(row.name, row.batch)])} |")
    lines += where_time_goes(rows)
    return "\n".join(lines) + "\n"


def where_time_goes(rows: list[Row]) -> list[str]:
    """Each engine's own figures at batch 1: the prompt (image encoding + prefill) and one decoded token (medians).

    llama-server reports the prompt as one figure (its `timings.prompt_ms`); VLQ's engine reports the image
    encoding apart, shown in brackets.
    """
    lines = ["", "### Where the time goes (batch 1, each engine's own figures, medians in ms)", "",
             "| engine | prompt: image encoding + prefill | per decoded token |", "|---|---|---|"]
    for row in rows:
        m = row.measured
        if row.batch != 1:
            continue
        if "prompt_ms" in m:
            lines.append(f"| {row.name} | {statistics.median(m['prompt_ms']):.0f} "
                         f"| {statistics.median(m['decode_ms_per_token']):.0f} |")
        elif "engine_ms" in m:
            tokens = m["generated"] // m["requests"]
            prompt = [encode + first for encode, first in zip(m["encode_ms"], m["engine_ttft_ms"], strict=True)]
            decode = [(total - first) / max(1, tokens - 1)
                      for total, first in zip(m["engine_ms"], m["engine_ttft_ms"], strict=True)]
            lines.append(f"| {row.name} | {statistics.median(prompt):.0f} (encoding "
                         f"{statistics.median(m['encode_ms']):.0f}) | {statistics.median(decode):.0f} |")
    lines += ["", "### Where the load time goes (batch 1, s from process start)", "",
              "| engine | ready | imports | load (read + compile, or the compiled cache) | warm-up generation |",
              "|---|---|---|---|---|"]
    for row in rows:
        m = row.measured
        if row.batch == 1 and "ready_parts_s" in m:
            parts = m["ready_parts_s"]
            lines.append(f"| {row.name} | {m['ready_s']:.1f} | {parts['imports']:.1f} | {parts['load']:.1f} "
                         f"| {parts['warmup']:.1f} |")
        elif row.batch == 1 and "prompt_ms" in m:
            lines.append(f"| {row.name} | {m['ready_s']:.1f} | (one binary) | | |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "peer", help="llama.cpp build and GGUF files")
    parser.add_argument("--bench-cache", type=Path, default=ROOT / ".cache" / "bench-models")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--batches", default="1,4,8", help="VLQ batch sizes and llama.cpp slot counts")
    parser.add_argument("--requests", type=int, default=8, help="requests per run (at least the batch)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-service", dest="service", action="store_false")
    parser.add_argument("--kv-cache-gb", type=int, default=1,
                        help="VLQ engine's KV cache (llama.cpp's 8 slots x 1024 tokens hold 0.9 GiB)")
    parser.add_argument("--write", type=Path, help="update this markdown file's section")
    parser.add_argument("--prepare", action="store_true",
                        help="build llama.cpp, the GGUF files and VLQ's exports, then stop (nothing is timed)")
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    args.cache.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    binaries = llama_build(args.cache)
    models, mmproj = gguf_files(args.cache, args.bench_cache, binaries)
    for label in ("int8", "int4"):
        openvino(args.bench_cache, EXPORTS[label])  # exported before anything is timed
    if args.prepare:
        print(f"prepared: {binaries}, {', '.join(str(path) for path in models.values())}, {mmproj}", flush=True)
        return
    urls = data_urls(args.images)

    measured: dict[tuple[str, int], list[dict]] = {}
    for round_index in range(args.rounds):
        for name, batch in configurations(args):
            result = run_one(name, batch, args, (binaries, models, mmproj), urls)
            measured.setdefault((name, batch), []).append(result)
            row = Row(name, batch, result)
            print(f"round {round_index + 1}: {name} x{batch}: {row.images_per_s:.3f} images/s, "
                  f"{row.tokens_per_s:.2f} tokens/s, ready {result['ready_s']:.1f}s", flush=True)
    rows, rounds = [], {}
    for key, results in measured.items():
        ordered = sorted(results, key=lambda result: result["requests"] / result["elapsed_s"])
        rows.append(Row(*key, ordered[(len(ordered) - 1) // 2]))
        rounds[key] = [result["requests"] / result["elapsed_s"] for result in results]
    text = section(rows, rounds, args, load)
    print(text)
    if args.write:
        write_section(args.write, text)


if __name__ == "__main__":
    main()
