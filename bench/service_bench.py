"""Raw engine vs the whole service, on the same model, images, prompt and batch size.

    python -m bench.service_bench [--model tiny-random] [--batch-size 8] [--images 64] [--tokens 64]

1. Raw engine: the worker's engine class in this process; submit every image at once, time until all are done.
2. Jobs: real API (gunicorn) + real worker processes on a scratch SQLite database and Redis db;
   submit every image as a job over HTTP, poll until all succeeded.
3. Batch: the same images as one native batch upload, until the batch is completed.
4. Ingest: a generated --ingest-lines OpenAI batch file, from upload until every line is a queued job.
Runs 1-3 generate exactly --tokens tokens per image (EOS ignored), so they do the same work.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import redis
import requests
import yaml
from PIL import Image, ImageDraw

from service.adapters.migrate import upgrade
from service.core.config import Settings, load_settings
from workers.engines import create_engine
from workers.engines.base import GenerationRequest
from workers.engines.images import prepare_image
from workers.modelstore.registry import local_model

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "Read this receipt and give the merchant, the date and the total."
BENCH_REDIS_URL = "redis://127.0.0.1:6379/11"  # apart from the tests (15)
BENCH_PORT = 8099
BASE = f"http://127.0.0.1:{BENCH_PORT}"
UNSERVED_MODEL = "bench-unserved"  # in the registry, never exported: its jobs stay queued (ingest run)


def receipt_images(count: int, size: int = 448) -> list[bytes]:
    """Receipt-like PNGs (text lines on white), each slightly different."""
    images = []
    for index in range(count):
        image = Image.new("RGB", (size, size), "white")
        draw = ImageDraw.Draw(image)
        for line in range(14):
            price = f"{line * 3 + index % 7}.{line:02d}"
            draw.text((24, 20 + line * 29), f"ITEM {index:03d}-{line:02d}   {price}", fill="black")
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        images.append(buffer.getvalue())
    return images


def bench_engine(settings: Settings, model: str, images: list[bytes], tokens: int) -> float:
    """Images per second through the engine alone."""
    spec = settings.registry[model]
    engine = create_engine(local_model(settings, spec), settings)
    engine.load()
    engine.warmup()
    prepared = [prepare_image(data, spec.max_pixels) for data in images]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=settings.batch_size * 2) as pool:
        handles = list(pool.map(
            lambda image: engine.submit(GenerationRequest(PROMPT, image, tokens, ignore_eos=True)), prepared))
    for handle in handles:
        handle.result(timeout=3600)
    elapsed = time.perf_counter() - started
    engine.close()
    return len(images) / elapsed


def bench_jobs(http: requests.Session, model: str, images: list[bytes], tokens: int, poll_s: float = 0.02) -> float:
    """Images per second from the first HTTP submit until every job is seen succeeded, polling every `poll_s`.

    Each poll costs the API some CPU on the cores the engine computes on: poll as often as the run's length needs.
    """
    started = time.perf_counter()

    def submit(data: bytes) -> str:
        response = http.post(f"{BASE}/v1/jobs", files={"image": ("r.png", data, "image/png")}, data={
            "prompt": PROMPT, "model": model, "max_tokens": tokens, "ignore_eos": "true", "priority": "bulk"})
        if response.status_code != 202:
            raise RuntimeError(f"submit answered {response.status_code}: {response.text}")
        return response.json()["id"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        pending = list(pool.map(submit, images))
    while pending:  # oldest first; each round stops at the first unfinished job, so polling costs little
        job = http.get(f"{BASE}/v1/jobs/{pending[0]}").json()
        if job["status"] == "succeeded":
            pending.pop(0)
        elif job["status"] in ("failed", "cancelled"):
            raise RuntimeError(f"job {job['id']} {job['status']}: {job['error']}")
        else:
            time.sleep(poll_s)
    return len(images) / (time.perf_counter() - started)


def bench_batch(http: requests.Session, model: str, images: list[bytes], tokens: int) -> float:
    """Images per second from a native batch upload until the batch is completed."""
    started = time.perf_counter()
    response = http.post(f"{BASE}/v1/batches", data={
        "prompt": PROMPT, "model": model, "max_tokens": tokens, "ignore_eos": "true",
    }, files=[("images", (f"r{index:05d}.png", data, "image/png")) for index, data in enumerate(images)])
    response.raise_for_status()
    batch = _wait_batch(http, response.json()["id"], {"completed", "failed", "cancelled"})
    if batch["request_counts"]["completed"] != len(images):
        raise RuntimeError(f"batch ended {batch['status']} with {batch['request_counts']}")
    return len(images) / (time.perf_counter() - started)


def bench_ingest(http: requests.Session, lines: int) -> tuple[float, float]:
    """(upload seconds, ingest seconds) for an OpenAI batch file of `lines` requests, each with its own image."""
    buffer = io.BytesIO()
    for index in range(lines):
        image = io.BytesIO()
        Image.new("RGB", (32, 32), (index % 256, index // 256 % 256, 7)).save(image, "PNG")
        url = "data:image/png;base64," + base64.b64encode(image.getvalue()).decode()
        buffer.write(json.dumps({"custom_id": f"line-{index}", "method": "POST", "url": "/v1/chat/completions",
                                 "body": {"model": UNSERVED_MODEL, "max_tokens": 16, "messages": [{"role": "user",
                                          "content": [{"type": "text", "text": PROMPT},
                                                      {"type": "image_url", "image_url": {"url": url}}]}]}})
                     .encode() + b"\n")
    started = time.perf_counter()
    file = http.post(f"{BASE}/v1/files", data={"purpose": "batch"},
                     files={"file": ("input.jsonl", buffer.getvalue())}).json()
    uploaded = time.perf_counter()
    batch = http.post(f"{BASE}/v1/batches", json={"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                                                  "completion_window": "24h"}).json()
    batch = _wait_batch(http, batch["id"], {"in_progress", "failed"})
    ingested = time.perf_counter()
    if batch["request_counts"]["total"] != lines:
        raise RuntimeError(f"ingest ended {batch['status']}: {batch['request_counts']} {batch['errors']}")
    http.post(f"{BASE}/v1/batches/{batch['id']}/cancel").raise_for_status()
    return uploaded - started, ingested - uploaded


def _wait_batch(http: requests.Session, batch_id: str, statuses: set[str]) -> dict:
    while True:
        batch = http.get(f"{BASE}/v1/batches/{batch_id}").json()
        if batch["status"] in statuses:
            return batch
        time.sleep(0.05)


@dataclass
class Service:
    """The API and worker processes of a bench run, and how long the workers took to serve the model."""

    processes: list[subprocess.Popen[bytes]]
    worker_ready_s: float  # from starting the worker processes (API already up) until each reported the model live


def start_service(settings_file: Path, model: str, workers: int, api_key: str) -> Service:
    """Start the API, wait until it answers, then start the workers and wait until each serves `model`."""
    env = {**os.environ, "VLQ_CONFIG": str(settings_file), "PYTHONUNBUFFERED": "1"}
    logs = open(settings_file.parent / "service.log", "wb")

    def start(command: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "service.cli", *command], cwd=ROOT, env=env,
                                stdout=logs, stderr=subprocess.STDOUT)

    processes = [start(["api", "--workers", "2"])]
    _wait(lambda body: True, settings_file, api_key)
    started = time.monotonic()
    processes += [start(["worker", "--loglevel", "WARNING"]) for _ in range(workers)]
    _wait(lambda body: sum(w["models"].get(model, {}).get("status") == "live" for w in body["workers"]) >= workers,
          settings_file, api_key)
    return Service(processes, time.monotonic() - started)


def _wait(ready: Callable[[dict[str, Any]], bool], settings_file: Path, api_key: str) -> None:
    """Poll /readyz until `ready(body)`; with the key, since only callers with one see the workers."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            body = requests.get(f"{BASE}/readyz", headers={"Authorization": f"Bearer {api_key}"}, timeout=2).json()
            if ready(body):
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the service did not become ready; see {settings_file.parent / 'service.log'}")


def bench_key(settings: Settings) -> str:
    """An API key with no rate limit or quota: the bench measures throughput, not the limits."""
    from service.adapters.db import Database
    from service.core.keys import KeySpec, create_key

    database = Database(settings.database_url)
    with database.session() as session:
        _, secret = create_key(session, KeySpec(name="bench", rate_limit_rps=0, max_queued_jobs=0))
    database.dispose()
    return secret


def cpu_seconds(processes: list[subprocess.Popen[bytes]]) -> str:
    """CPU used by each service process since it started, to see where the cores went."""
    parts = []
    for process in processes:
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
        parts.append(f"vlq {process.args[3]} {sum(p.cpu_times().user + p.cpu_times().system for p in tree):.1f}s")
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-random")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1, help="worker processes for the service runs")
    parser.add_argument("--ingest-lines", type=int, default=10_000)
    args = parser.parse_args()

    base = load_settings()
    with tempfile.TemporaryDirectory(prefix="vlq-bench-") as tmp:
        registry = {name: {key: value for key, value in vars(spec).items() if key != "name"}
                    for name, spec in base.registry.items()}
        registry[UNSERVED_MODEL] = {"source": "/nonexistent", "weight_format": "int8"}
        config = {
            "database_url": f"sqlite:///{tmp}/bench.db", "redis_url": BENCH_REDIS_URL, "blob_dir": f"{tmp}/blobs",
            "model_cache": str(Path(base.model_cache).resolve()), "batch_size": args.batch_size,
            "port": BENCH_PORT, "models": registry, "default_model": args.model,
        }
        settings_file = Path(tmp) / "config.yaml"
        settings_file.write_text(yaml.safe_dump(config))
        settings = load_settings(environ={"VLQ_CONFIG": str(settings_file)})
        if not local_model(settings, settings.registry[args.model]).exported:
            sys.exit(f"{args.model} is not exported; run `vlq model build-tiny` or `vlq model export {args.model}`")
        upgrade(settings.database_url)
        api_key = bench_key(settings)
        redis.Redis.from_url(BENCH_REDIS_URL).flushdb()
        images = receipt_images(args.images)

        print(f"model={args.model} batch_size={args.batch_size} images={args.images} tokens/image={args.tokens} "
              f"cores={os.cpu_count()}")
        engine_rate = bench_engine(settings, args.model, images, args.tokens)
        print(f"raw engine    {engine_rate:8.2f} images/s  {engine_rate * args.tokens:8.1f} tokens/s")
        service = start_service(settings_file, args.model, args.workers, api_key)
        processes = service.processes
        print(f"worker ready  {service.worker_ready_s:8.1f} s from process start (API already up)")
        try:
            http = requests.Session()
            http.headers["Authorization"] = f"Bearer {api_key}"  # auth on, as a server runs: its cost is measured
            jobs_rate = bench_jobs(http, args.model, images, args.tokens)
            print(f"service jobs  {jobs_rate:8.2f} images/s  ratio to engine {jobs_rate / engine_rate:.2f}  "
                  f"overhead {1000 * (1 / jobs_rate - 1 / engine_rate):.1f} ms/image")
            batch_rate = bench_batch(http, args.model, images, args.tokens)
            print(f"service batch {batch_rate:8.2f} images/s  ratio to engine {batch_rate / engine_rate:.2f}  "
                  f"overhead {1000 * (1 / batch_rate - 1 / engine_rate):.1f} ms/image")
            upload_s, ingest_s = bench_ingest(http, args.ingest_lines)
            print(f"ingest        {args.ingest_lines} lines: upload {upload_s:.2f}s, validate + insert + enqueue "
                  f"{ingest_s:.2f}s ({args.ingest_lines / ingest_s:.0f} lines/s)")
            print(f"cpu: {cpu_seconds(processes)}")
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=120)  # a warm shutdown lets running jobs finish
                except subprocess.TimeoutExpired:
                    process.kill()


if __name__ == "__main__":
    main()
