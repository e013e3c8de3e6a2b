"""Submit and result-read times with blobs in a local directory vs on S3, in the same run.

    python -m bench.blob_bench [--submits 100] [--file-mb 20] [--reads 5] [--write docs/BENCHMARKS.md]

For each store the real API (`vlq api`, gunicorn) runs on a scratch SQLite database and Redis db, and a client
times, one request after another (medians and p95):
- submit: POST /v1/jobs with a small receipt PNG and with a ~1 MB photo-like JPEG (the image is stored, the job row
  committed and sent; no worker runs, so only the submit path is timed);
- image read: GET /v1/jobs/{id}/image;
- file upload: POST /v1/files with a --file-mb batch file (what a batch submit stores);
- result read: GET /v1/files/{id}/content of that file, as a batch's output is downloaded (streamed through the
  API; with `blob_presign_s`, a 307 to a presigned URL and the download from the store).
The S3 store is moto's S3 server on loopback in this process: the numbers show what the S3 client path costs
over a local disk, not a real network's latency.
"""
from __future__ import annotations

import argparse
import io
import logging
import math
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
import requests
import yaml
from PIL import Image

from bench.markdown import write_section
from bench.service_bench import BENCH_REDIS_URL, bench_key, receipt_images
from service.adapters.migrate import upgrade
from service.core.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
MODEL = "bench-unserved"  # in the registry, never served: jobs stay queued, only the submit path runs
SECTION = "## Blob store: local directory vs S3"


def photo(size: int = 1600) -> bytes:
    """A noisy JPEG of about 1 MB (noise does not compress, as photos and scans barely do)."""
    noise = random.Random(7).randbytes(size * size * 3 // 16)
    image = Image.frombytes("RGB", (size // 4, size // 4), noise).resize((size, size))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def batch_file(megabytes: int) -> bytes:
    """A JSONL file of about `megabytes` MB (10^6 bytes), in lines of a batch file's shape."""
    line = b'{"custom_id": "%08d", "method": "POST", "url": "/v1/chat/completions", "body": {"pad": "' + b"x" * 400
    size = len(line % 0) + 4
    return b"".join(line % i + b'"}}\n' for i in range(megabytes * 1_000_000 // size))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _timed(call: Callable[[], Any], count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return times


def _summary(times: list[float]) -> str:
    p95 = sorted(times)[min(len(times) - 1, math.ceil(len(times) * 0.95) - 1)]
    return f"{statistics.median(times):7.1f} ms (p95 {p95:6.1f})"


def run_store(name: str, config: dict[str, Any], tmp: Path, args: argparse.Namespace,
              images: dict[str, bytes], content: bytes) -> dict[str, str]:
    """Start the API on `config`, time each operation, stop it; returns operation -> figure."""
    port = _free_port()
    settings_file = tmp / f"{name}.yaml"
    settings_file.write_text(yaml.safe_dump({**config, "port": port}))
    settings = load_settings(environ={"VLQ_CONFIG": str(settings_file)})
    upgrade(settings.database_url)
    key = bench_key(settings)
    log = open(tmp / f"{name}.log", "wb")
    api = subprocess.Popen([sys.executable, "-m", "service.cli", "api", "--workers", "2"], cwd=ROOT,
                           env={**os.environ, "VLQ_CONFIG": str(settings_file), "PYTHONPATH": str(ROOT)},
                           stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {key}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if http.get(f"{base}/healthz", timeout=1).ok:
                    break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the API did not start; see {tmp / f'{name}.log'}") from None
                time.sleep(0.2)
        figures: dict[str, str] = {}
        job_ids: list[str] = []
        for label, image in images.items():
            def submit(image: bytes = image) -> None:
                response = http.post(f"{base}/v1/jobs", files={"image": ("i", image)},
                                     data={"prompt": "Read it.", "model": MODEL, "max_tokens": "8"})
                response.raise_for_status()
                job_ids.append(response.json()["id"])
            submit()  # warm: connections, first writes
            figures[f"submit, {label}"] = _summary(_timed(submit, args.submits))
        jobs = iter(job_ids * 2)
        figures["image read (1 MB)"] = _summary(_timed(
            lambda: http.get(f"{base}/v1/jobs/{next(jobs)}/image").raise_for_status(), args.submits))
        uploaded: list[str] = []

        def upload() -> None:
            response = http.post(f"{base}/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"})
            response.raise_for_status()
            uploaded.append(response.json()["id"])

        megabytes = len(content) / 1e6
        upload_times = _timed(upload, args.reads)
        figures[f"file upload ({megabytes:.0f} MB)"] = (
            f"{_summary(upload_times)}  {megabytes / statistics.median(upload_times) * 1000:5.0f} MB/s")

        def read() -> None:
            with http.get(f"{base}/v1/files/{uploaded[0]}/content", stream=True) as response:
                response.raise_for_status()
                received = sum(len(chunk) for chunk in response.iter_content(1024 * 1024))
            assert received == len(content)

        read_times = _timed(read, args.reads)
        figures[f"result read ({megabytes:.0f} MB)"] = (
            f"{_summary(read_times)}  {megabytes / statistics.median(read_times) * 1000:5.0f} MB/s")
        return figures
    finally:
        api.terminate()
        api.wait(timeout=60)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--submits", type=int, default=100, help="timed submits per image size")
    parser.add_argument("--file-mb", type=int, default=20)
    parser.add_argument("--reads", type=int, default=5, help="timed uploads and downloads of the file")
    parser.add_argument("--redis-url", default=BENCH_REDIS_URL)
    parser.add_argument("--write", type=Path, help="rewrite this section of docs/BENCHMARKS.md")
    args = parser.parse_args()
    import boto3
    from moto.server import ThreadedMotoServer  # a test dependency: the bench runs from a `make test` install

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    os.environ.update({"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "bench",
                       "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1",
                       "AWS_EC2_METADATA_DISABLED": "true"})
    boto3.client("s3").create_bucket(Bucket="vlq-bench")
    images = {"receipt PNG": receipt_images(1)[0], "1 MB JPEG": photo()}
    content = batch_file(args.file_mb)
    redis.Redis.from_url(args.redis_url).flushdb()
    results: dict[str, dict[str, str]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="vlq-blob-bench-") as root:
            tmp = Path(root)
            base = {"redis_url": args.redis_url, "default_model": MODEL, "max_upload_bytes": 4 * len(content),
                    "models": {MODEL: {"source": "/nonexistent", "weight_format": "int8"}}}
            stores = {
                "local": {"blob_dir": str(tmp / "blobs")},
                "s3": {"blob_url": "s3://vlq-bench/streamed"},
                "s3, presigned": {"blob_url": "s3://vlq-bench/presigned", "blob_presign_s": 300},
            }
            for name, store in stores.items():
                config = {**base, **store, "database_url": f"sqlite:///{tmp}/{name.replace(', ', '-')}.db"}
                results[name] = run_store(name.replace(", ", "-"), config, tmp, args, images, content)
                print(f"{name}: done", flush=True)
    finally:
        moto.stop()
    operations = list(results["local"])
    table = [f"| operation | {' | '.join(results)} |", "|---|" + "---|" * len(results)]
    table += [f"| {op} | {' | '.join(results[store][op].strip() for store in results)} |" for op in operations]
    print("\n".join(table))
    if args.write:
        command = " ".join(["python -m bench.blob_bench", *sys.argv[1:]])
        write_section(args.write, "\n".join([
            SECTION, "",
            f"`{command}` (also run by `make bench`), on this {os.cpu_count()}-core machine. Each figure is one "
            f"request after another: {args.submits} submits per image size, {args.reads} uploads and downloads of "
            f"the {args.file_mb} MB file; the API is `vlq api` (gunicorn, 2 processes) on SQLite. S3 is moto's "
            "server on loopback, so the S3 columns show the client path's cost (signing, HTTP, a spooled upload "
            "of streams), not a network's latency; the presigned column's result read is the 307 plus the "
            "download straight from the store. Both S3 columns submit and read images the same way, so the gap "
            "between them there is this machine's noise (other processes share its cores).", "",
            *table, ""]))


if __name__ == "__main__":
    main()
