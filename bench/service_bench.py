"""Raw engine vs the whole service, on the same model, images, prompt and batch size.

    python -m bench.service_bench [--model tiny-random] [--batch-size 8] [--images 64] [--tokens 64]

1. Raw engine: the worker's engine class in this process; submit every image at once, time until all are done.
2. Service: real API (gunicorn) + real worker processes on a scratch SQLite database and Redis db;
   submit every image over HTTP, poll until all succeeded.
Both generate exactly --tokens tokens per image (EOS ignored), so they do the same work.
"""
from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import redis
import requests
import yaml
from PIL import Image, ImageDraw

from service.config import Settings, load_settings
from service.migrate import upgrade
from workers.engines import create_engine
from workers.engines.base import GenerationRequest
from workers.images import prepare_image
from workers.registry import local_model

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "Read this receipt and give the merchant, the date and the total."
BENCH_REDIS_URL = "redis://127.0.0.1:6379/13"
BENCH_PORT = 8099


def receipt_images(count: int, size: int = 448) -> list[bytes]:
    """Receipt-like PNGs (text lines on white), each slightly different so none is a cache hit later."""
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
    handles = [engine.submit(GenerationRequest(PROMPT, image, tokens, ignore_eos=True)) for image in prepared]
    for handle in handles:
        handle.result(timeout=3600)
    elapsed = time.perf_counter() - started
    engine.close()
    return len(images) / elapsed


def bench_service(settings_file: Path, model: str, images: list[bytes], tokens: int, workers: int) -> float:
    """Images per second from the first HTTP submit until every job is seen succeeded."""
    env = {**os.environ, "VLQ_CONFIG": str(settings_file), "VLQ_MODELS": model, "PYTHONUNBUFFERED": "1"}
    logs = open(settings_file.parent / "service.log", "wb")
    processes = [subprocess.Popen([sys.executable, "-m", "service.cli", "api", "--workers", "2"],
                                  cwd=ROOT, env=env, stdout=logs, stderr=subprocess.STDOUT)]
    processes += [subprocess.Popen([sys.executable, "-m", "service.cli", "worker", "--loglevel", "WARNING"],
                                   cwd=ROOT, env=env, stdout=logs, stderr=subprocess.STDOUT) for _ in range(workers)]
    base = f"http://127.0.0.1:{BENCH_PORT}"
    try:
        _wait_ready(base, model, workers)
        session = requests.Session()
        started = time.perf_counter()

        def submit(data: bytes) -> str:
            response = session.post(f"{base}/v1/jobs", files={"image": ("r.png", data, "image/png")}, data={
                "prompt": PROMPT, "model": model, "max_tokens": tokens, "ignore_eos": "true", "priority": "bulk"})
            response.raise_for_status()
            return response.json()["id"]

        with ThreadPoolExecutor(max_workers=8) as pool:
            ids = list(pool.map(submit, images))
        _wait_all_succeeded(session, base, ids)
        elapsed = time.perf_counter() - started
        for process in processes:  # CPU used since start (start-up included), to see where the cores went
            tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
            seconds = sum(p.cpu_times().user + p.cpu_times().system for p in tree)
            print(f"  cpu of `vlq {process.args[3]}`: {seconds:.1f}s")
        return len(images) / elapsed
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)
        logs.close()


def _wait_all_succeeded(session: requests.Session, base: str, ids: list[str]) -> None:
    """Poll oldest-first and stop each round at the first unfinished job, so the client steals little CPU."""
    pending = list(ids)
    while pending:
        job = session.get(f"{base}/v1/jobs/{pending[0]}").json()
        if job["status"] == "succeeded":
            pending.pop(0)
            continue
        if job["status"] in ("failed", "cancelled"):
            raise RuntimeError(f"job {job['id']} {job['status']}: {job['error']}")
        time.sleep(0.02)


def _wait_ready(base: str, model: str, workers: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            body = requests.get(f"{base}/readyz", timeout=2).json()
            live = [w for w in body["workers"] if w["models"].get(model, {}).get("status") == "live"]
            if len(live) >= workers:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError("the service did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-random")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1, help="worker processes for the service run")
    args = parser.parse_args()

    base = load_settings()
    with tempfile.TemporaryDirectory(prefix="vlq-bench-") as tmp:
        config = {
            "database_url": f"sqlite:///{tmp}/bench.db", "redis_url": BENCH_REDIS_URL, "blob_dir": f"{tmp}/blobs",
            "model_cache": str(Path(base.model_cache).resolve()), "batch_size": args.batch_size,
            "port": BENCH_PORT,
            "models": {name: {key: value for key, value in vars(spec).items() if key != "name"}
                       for name, spec in base.registry.items()},
        }
        settings_file = Path(tmp) / "config.yaml"
        settings_file.write_text(yaml.safe_dump(config))
        settings = load_settings(environ={"VLQ_CONFIG": str(settings_file)})
        if not local_model(settings, settings.registry[args.model]).exported:
            sys.exit(f"{args.model} is not exported; run `vlq model build-tiny` or `vlq model export {args.model}`")
        upgrade(settings.database_url)
        redis.Redis.from_url(BENCH_REDIS_URL).flushdb()
        images = receipt_images(args.images)

        print(f"model={args.model} batch_size={args.batch_size} images={args.images} tokens/image={args.tokens}")
        engine_rate = bench_engine(settings, args.model, images, args.tokens)
        print(f"raw engine:   {engine_rate:8.2f} images/s  {engine_rate * args.tokens:9.1f} generated tokens/s")
        service_rate = bench_service(settings_file, args.model, images, args.tokens, args.workers)
        print(f"service e2e:  {service_rate:8.2f} images/s  {service_rate * args.tokens:9.1f} generated tokens/s")
        print(f"ratio service/engine: {service_rate / engine_rate:.2f}")


if __name__ == "__main__":
    main()
