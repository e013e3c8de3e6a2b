"""The service's own costs at scale, on SQLite and on Postgres: no inference, only the API and the database.

    python -m bench.scale_bench [--items 100000] [--submits 3000] [--clients 8] [--databases sqlite,postgres]

For each database, on a scratch database (a SQLite file; a private Postgres schema, dropped afterwards), a real API
(gunicorn, one process, `vlq api --workers 1`) and a scratch Redis db:
1. submits: --submits jobs over HTTP from --clients threads (a small PNG each, multipart), jobs/s for that process,
   and the API process's CPU per job (what bounds its jobs/s on a core of its own, as the client takes the other);
2. ingest: an OpenAI batch file of --items lines (each its own PNG as a data URL) uploaded over HTTP, then ingested
   by the worker's code path (`batches.ingest`, run in this process, broker included): lines/s;
3. polls at --items stored items: GET /v1/jobs/{id} and GET /v1/batches/{id}, p50/p95 over --polls requests, and
   beside them the per-read recount of the items that GET /v1/batches/{id} did before its counts were kept; then
   the job poll again with --items other keys in Redis, beside the presence SCAN a poll did before;
4. results: GET /v1/batches/{id}/results as JSONL and as CSV, streamed to the end: seconds, and the API's RSS
   before and at its peak during the read (sampled every 10 ms);
5. cancel: POST /v1/batches/{id}/cancel with every item queued: seconds until it answers (the batch `cancelled`).
No worker serves the bench's model, so jobs stay queued. The client shares the machine's cores with the API.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import psycopg
import redis
import requests
import yaml
from PIL import Image
from sqlalchemy import func, select

from bench.service_bench import PROMPT, UNSERVED_MODEL, bench_key
from service.adapters.blobs import LocalBlobStore
from service.adapters.broker import Broker
from service.adapters.db import Database
from service.adapters.migrate import upgrade
from service.core import batches
from service.core.config import Settings, load_settings
from service.core.models import Job

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get("VLQ_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("VLQ_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
PORT = int(os.environ.get("VLQ_BENCH_PORT", "8097"))  # apart from service_bench's
BASE = f"http://127.0.0.1:{PORT}"


def png(index: int, side: int = 16) -> bytes:
    """A small PNG, different for each index."""
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (index % 256, index // 256 % 256, index // 65536 % 256)).save(buffer, "PNG")
    return buffer.getvalue()


def batch_file(items: int) -> bytes:
    """An OpenAI batch input file of `items` chat requests, each with its own image."""
    lines = []
    for index in range(items):
        url = "data:image/png;base64," + base64.b64encode(png(index)).decode()
        lines.append(json.dumps({"custom_id": f"line-{index:06d}", "method": "POST", "url": "/v1/chat/completions",
                                 "body": {"model": UNSERVED_MODEL, "max_tokens": 16, "messages": [{"role": "user",
                                          "content": [{"type": "text", "text": PROMPT},
                                                      {"type": "image_url", "image_url": {"url": url}}]}]}}))
    return ("\n".join(lines) + "\n").encode()


def postgres_reachable() -> bool:
    try:
        psycopg.connect(POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=3).close()
    except psycopg.Error:
        return False
    return True


@contextmanager
def scratch_database(kind: str, tmp: Path) -> Iterator[str]:
    """A new, migrated database of `kind`; a Postgres one is a private schema, dropped afterwards."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        yield url
        return
    schema = f"vlq_bench_{uuid.uuid4().hex[:10]}"
    dsn = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@contextmanager
def api_process(settings_file: Path) -> Iterator[subprocess.Popen[bytes]]:
    """One gunicorn API process (its default threads), up and answering."""
    env = {**os.environ, "VLQ_CONFIG": str(settings_file), "PYTHONUNBUFFERED": "1"}
    with open(settings_file.parent / "api.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "service.cli", "api", "--workers", "1"], cwd=ROOT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_up(process, settings_file)
            yield process
        finally:
            process.terminate()
            process.wait(timeout=60)


def _wait_up(process: subprocess.Popen[bytes], settings_file: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            requests.get(f"{BASE}/health", timeout=2)  # any answer: it serves (no worker is up, by design)
            return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    tail = (settings_file.parent / "api.log").read_text(errors="replace")[-2000:]
    raise RuntimeError(f"the API did not come up:\n{tail}")


def process_tree(pid: int) -> list[psutil.Process]:
    """A process and its children: gunicorn's arbiter and its worker."""
    return [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]


def rss_mb(pid: int) -> float:
    """The RSS of a process tree, in MB."""
    return sum(process.memory_info().rss for process in process_tree(pid)) / 2**20


@contextmanager
def peak_rss(pid: int) -> Iterator[list[float]]:
    """Samples the tree's RSS every 10 ms while the block runs; yields [before, peak] (filled in at the end)."""
    result = [rss_mb(pid), 0.0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            result[1] = max(result[1], rss_mb(pid))
            stop.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield result
    finally:
        stop.set()
        sampler.join()


def timed(calls: int, *targets: Callable[[], Any]) -> list[tuple[float, float]]:
    """(p50, p95) milliseconds of each target over `calls` rounds; the targets take turns, so a shared machine's
    load falls on each alike."""
    samples: list[list[float]] = [[] for _ in targets]
    for _ in range(calls):
        for call, times in zip(targets, samples, strict=True):
            started = time.perf_counter()
            call()
            times.append((time.perf_counter() - started) * 1000)
    return [(statistics.median(times), sorted(times)[int(len(times) * 0.95) - 1]) for times in samples]


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process tree has used."""
    return sum(sum(process.cpu_times()[:2]) for process in process_tree(pid))


def bench_submits(http_for: Callable[[], requests.Session], count: int, clients: int, api_pid: int
                  ) -> tuple[float, float]:
    """(jobs accepted per second, the API's CPU ms per job), `clients` threads each with its own connection; each
    job its own image. The CPU per job bounds what one API process does on a core of its own, whatever else
    shares the machine."""
    images = [png(index, side=64) for index in range(count + clients)]
    local = threading.local()

    def submit(index: int) -> None:
        if not hasattr(local, "http"):
            local.http = http_for()
        response = local.http.post(f"{BASE}/v1/jobs", files={"image": ("i.png", images[index])},
                                   data={"prompt": f"What is the total? {index}", "model": UNSERVED_MODEL,
                                         "max_tokens": "16"})
        if response.status_code != 202:
            raise RuntimeError(f"submit answered {response.status_code}: {response.text[:200]}")

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(submit, range(count, count + clients)))  # each thread's connection, before the clock
        started, cpu_started = time.perf_counter(), cpu_s(api_pid)
        list(pool.map(submit, range(count)))
    return count / (time.perf_counter() - started), (cpu_s(api_pid) - cpu_started) / count * 1000


def bench_ingest(http: requests.Session, db: Database, settings: Settings, items: int) -> tuple[str, float, float]:
    """(batch id, upload seconds, ingest seconds) for a file of `items` lines."""
    raw = batch_file(items)
    started = time.perf_counter()
    file = http.post(f"{BASE}/v1/files", data={"purpose": "batch"}, files={"file": ("input.jsonl", raw)}).json()
    uploaded = time.perf_counter()
    batch = http.post(f"{BASE}/v1/batches", json={"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                                                  "completion_window": "24h"}).json()
    broker = Broker(settings, db)
    try:
        ingest_started = time.perf_counter()
        status = batches.ingest(db, LocalBlobStore(settings.blob_dir), broker, settings, batch["id"],
                                give_up=lambda: True)
        ingested = time.perf_counter()
    finally:
        broker.close()
    if status != "in_progress":
        shown = http.get(f"{BASE}/v1/batches/{batch['id']}").text[:500]
        raise RuntimeError(f"ingest ended {status}: {shown}")
    return batch["id"], uploaded - started, ingested - ingest_started


def recount_ms(db: Database, batch_id: str, calls: int) -> float:
    """p50 of the per-read recount GET /v1/batches/{id} made before the counts were kept on the row."""
    def recount() -> None:
        with db.session() as session:
            session.execute(select(Job.batch_id, Job.status, func.count()).where(Job.batch_id == batch_id)
                            .group_by(Job.batch_id, Job.status)).all()
    return timed(calls, recount)[0][0]


def crowd_redis(keys: int) -> None:
    """Fill the scratch Redis db with `keys` other keys, as a busy deployment's holds (token streams, rate-limit
    buckets, another application's keys on a shared Redis)."""
    client = redis.Redis.from_url(REDIS_URL)
    pipe = client.pipeline(transaction=False)
    for index in range(keys):
        pipe.set(f"bench:other:{index}", b"x", ex=3600)
    pipe.execute()
    client.close()


def scan_presence() -> None:
    """The presence read a queued job's poll made before workers were indexed: a SCAN over every key."""
    client = redis.Redis.from_url(REDIS_URL)
    client.mget(list(client.scan_iter(match="vlq:worker:*", count=500)) or ["vlq:worker:none"])
    client.close()


def read_results(http: requests.Session, batch_id: str, fmt: str) -> tuple[float, int]:
    """(seconds, lines) to stream the batch's results to the end."""
    started = time.perf_counter()
    lines = 0
    with http.get(f"{BASE}/v1/batches/{batch_id}/results", params={"format": fmt}, stream=True) as response:
        response.raise_for_status()
        for _ in response.iter_lines(chunk_size=65536):
            lines += 1
    return time.perf_counter() - started, lines


def run(kind: str, args: argparse.Namespace, base: Settings) -> None:
    with tempfile.TemporaryDirectory(prefix="vlq-scale-") as tmp_name:
        tmp = Path(tmp_name)
        with scratch_database(kind, tmp) as url:
            registry = {name: {key: value for key, value in vars(spec).items() if key != "name"}
                        for name, spec in base.registry.items()}
            registry[UNSERVED_MODEL] = {"source": "/nonexistent", "weight_format": "int8"}
            config = {"database_url": url, "redis_url": REDIS_URL, "blob_dir": str(tmp / "blobs"),
                      "port": PORT, "models": registry, "default_model": UNSERVED_MODEL}
            settings_file = tmp / "config.yaml"
            settings_file.write_text(yaml.safe_dump(config))
            settings = load_settings(environ={"VLQ_CONFIG": str(settings_file)})
            redis.Redis.from_url(REDIS_URL).flushdb()
            api_key = bench_key(settings)
            db = Database(url)

            def http_for() -> requests.Session:
                session = requests.Session()
                session.headers["Authorization"] = f"Bearer {api_key}"
                return session

            http = http_for()
            try:
                with api_process(settings_file) as api:
                    rate, cpu_ms = bench_submits(http_for, args.submits, args.clients, api.pid)
                    print(f"{kind:8} submits        {rate:8.0f} jobs/s  ({args.submits} jobs, {args.clients} client "
                          f"threads, one API process); {cpu_ms:.2f} ms of the API's CPU per job "
                          f"(= {1000 / cpu_ms:.0f} jobs/s on a core of its own)", flush=True)
                    batch_id, upload_s, ingest_s = bench_ingest(http, db, settings, args.items)
                    print(f"{kind:8} ingest          {args.items / ingest_s:8.0f} lines/s ({args.items} lines in "
                          f"{ingest_s:.1f} s; upload {upload_s:.1f} s)", flush=True)
                    job_id = http.get(f"{BASE}/v1/jobs", params={"limit": 1}).json()["data"][0]["id"]
                    (job_p50, job_p95), (batch_p50, batch_p95) = timed(
                        args.polls, lambda: http.get(f"{BASE}/v1/jobs/{job_id}"),
                        lambda: http.get(f"{BASE}/v1/batches/{batch_id}"))
                    cpu_started = cpu_s(api.pid)
                    for _ in range(args.polls):
                        http.get(f"{BASE}/v1/jobs/{job_id}")
                    poll_cpu_ms = (cpu_s(api.pid) - cpu_started) / args.polls * 1000
                    stored = args.items + args.submits
                    print(f"{kind:8} job poll        {job_p50:8.1f} ms p50 ({job_p95:.1f} p95; {stored} jobs stored); "
                          f"{poll_cpu_ms:.2f} ms of the API's CPU per poll (the floor of an authenticated request)")
                    print(f"{kind:8} batch poll      {batch_p50:8.1f} ms p50 ({batch_p95:.1f} p95; {args.items} "
                          f"items); the recount it did before: {recount_ms(db, batch_id, 20):.1f} ms p50",
                          flush=True)
                    crowd_redis(args.items)
                    # Timed apart: a SCAN between polls slows the poll after it by a millisecond on 2 cores.
                    [(crowded_p50, crowded_p95)] = timed(args.polls, lambda: http.get(f"{BASE}/v1/jobs/{job_id}"))
                    [(scan_p50, _)] = timed(20, scan_presence)
                    print(f"{kind:8} job poll        {crowded_p50:8.1f} ms p50 ({crowded_p95:.1f} p95) beside "
                          f"{args.items} other Redis keys; the presence SCAN it did before: {scan_p50:.1f} ms p50",
                          flush=True)
                    for fmt in ("jsonl", "csv"):
                        with peak_rss(api.pid) as rss:
                            seconds, lines = read_results(http, batch_id, fmt)
                        print(f"{kind:8} results {fmt:6} {seconds:8.1f} s for {lines} lines "
                              f"({lines / seconds:.0f}/s); API RSS {rss[0]:.0f} MB before, peak {rss[1]:.0f} MB",
                              flush=True)
                    started = time.perf_counter()
                    response = http.post(f"{BASE}/v1/batches/{batch_id}/cancel")
                    cancel_s = time.perf_counter() - started
                    print(f"{kind:8} cancel          {cancel_s:8.1f} s  ({args.items} queued items; the batch is "
                          f"{response.json().get('status')})", flush=True)
            finally:
                db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000, help="lines of the batch file (items stored)")
    parser.add_argument("--submits", type=int, default=3000, help="jobs submitted over HTTP")
    parser.add_argument("--clients", type=int, default=8, help="client threads submitting")
    parser.add_argument("--polls", type=int, default=300, help="requests per poll measurement")
    parser.add_argument("--databases", default="sqlite,postgres")
    args = parser.parse_args()
    print(f"scale bench: cores={os.cpu_count()} items={args.items} submits={args.submits} clients={args.clients}",
          flush=True)
    base = load_settings()
    for kind in args.databases.split(","):
        if kind == "postgres" and not postgres_reachable():
            print(f"postgres skipped: nothing answers at {POSTGRES_URL} (set VLQ_BENCH_POSTGRES_URL)", flush=True)
            continue
        run(kind, args, base)


if __name__ == "__main__":
    main()
