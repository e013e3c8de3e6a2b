"""Prometheus metrics for the whole deployment, rendered by any API process at GET /metrics.

Workers run on many hosts and the API in many gunicorn processes, so nothing is kept in a process:
- counters and histograms (latencies, tokens, webhook outcomes) are added to one Redis hash by the
  worker that finished the job or made the attempt, so every scrape sees the sum over all workers;
- gauges (queue depth per model and priority, jobs by state, live workers) are read at scrape time
  from Redis and the database, so they are right even after a worker died.
"""
from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from sqlalchemy import func, select

from service.adapters import presence
from service.adapters.broker import job_queue
from service.adapters.db import Database
from service.core.config import Settings
from service.core.models import Job, JobStatus, Priority

log = logging.getLogger(__name__)

KEY = "vlq:metrics"
# Seconds: from a cached answer's few milliseconds to a long generation on a busy CPU.
BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
HISTOGRAMS = {
    "vlq_job_queue_wait_seconds": "From submit until a worker started the job.",
    "vlq_job_ttft_seconds": "Time to first token, from the engine's own metrics.",
    "vlq_job_inference_seconds": "Time in the engine, from the engine's own metrics.",
    "vlq_job_total_seconds": "From submit until the job ended.",
}
COUNTERS = {
    "vlq_jobs_finished": ("Jobs ended by workers, by model and final status.", ("model", "status")),
    "vlq_generated_tokens": ("Tokens generated; rate() of it is tokens/s.", ("model",)),
    "vlq_prompt_tokens": ("Prompt tokens (text and image) processed.", ("model",)),
    "vlq_webhook_deliveries": ("Webhook delivery attempts by outcome: succeeded, retrying, failed.", ("outcome",)),
}
# kombu's Redis transport keeps a message priority's messages in a list of their own beside the queue's.
_PRIORITY_LISTS = ("", "\x06\x163", "\x06\x166", "\x06\x169")


# -- recording (workers) ---------------------------------------------------------------------------

def record_job(client: redis.Redis, job: Job) -> None:
    """Add an ended job's latencies and tokens to the shared series; never raises (metrics must not fail jobs)."""
    labels = {"model": job.model}
    seconds = {
        "vlq_job_queue_wait_seconds": _between(job.created_at, job.started_at),
        "vlq_job_ttft_seconds": None if job.ttft_ms is None else job.ttft_ms / 1000,
        "vlq_job_inference_seconds": None if job.inference_ms is None else job.inference_ms / 1000,
        "vlq_job_total_seconds": _between(job.created_at, job.finished_at),
    }
    pipe = client.pipeline(transaction=False)
    _inc(pipe, "vlq_jobs_finished", {**labels, "status": job.status})
    for name, tokens in (("vlq_generated_tokens", job.completion_tokens), ("vlq_prompt_tokens", job.prompt_tokens)):
        if tokens:
            _inc(pipe, name, labels, tokens)
    for name, value in seconds.items():
        if value is not None:
            _observe(pipe, name, labels, value)
    _execute(pipe)


def record_delivery(client: redis.Redis, outcome: str) -> None:
    """Count one webhook attempt's outcome (`pending` after an attempt means it will be retried)."""
    pipe = client.pipeline(transaction=False)
    _inc(pipe, "vlq_webhook_deliveries", {"outcome": "retrying" if outcome == "pending" else outcome})
    _execute(pipe)


def _field(name: str, labels: Mapping[str, str], part: str = "") -> str:
    return json.dumps([name, sorted(labels.items()), part])


def _inc(pipe: Any, name: str, labels: Mapping[str, str], amount: float = 1) -> None:
    pipe.hincrbyfloat(KEY, _field(name, labels), amount)


def _observe(pipe: Any, name: str, labels: Mapping[str, str], value: float) -> None:
    # One bucket per observation; the cumulative counts Prometheus wants are summed when rendering.
    bucket = next((str(bound) for bound in BUCKETS_S if value <= bound), "+Inf")
    pipe.hincrbyfloat(KEY, _field(name, labels, bucket), 1)
    pipe.hincrbyfloat(KEY, _field(name, labels, "sum"), value)


def _execute(pipe: Any) -> None:
    try:
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("metrics not recorded: %s", exc)


def _between(start: datetime | None, end: datetime | None) -> float | None:
    return None if start is None or end is None else max(0.0, (end - start).total_seconds())


# -- rendering (API) --------------------------------------------------------------------------------

def render(settings: Settings, client: redis.Redis, db: Database) -> bytes:
    """The Prometheus text exposition of every VLQ metric."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(settings, client, db))
    return generate_latest(registry)


class _Collector:
    def __init__(self, settings: Settings, client: redis.Redis, db: Database) -> None:
        self._settings, self._redis, self._db = settings, client, db

    def collect(self) -> Iterator[Metric]:
        yield from self._shared_series()
        yield self._queue_depth()
        yield self._jobs_by_state()
        workers = GaugeMetricFamily("vlq_workers", "Live workers (presence heartbeats in Redis).")
        workers.add_metric([], len(presence.live_workers(self._redis)))
        yield workers

    def _shared_series(self) -> Iterator[Metric]:
        counters: dict[str, dict[tuple[Any, ...], float]] = defaultdict(dict)
        buckets: dict[str, dict[tuple[Any, ...], dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
        for raw, value in self._redis.hgetall(KEY).items():
            name, labels, part = json.loads(raw)
            key = tuple(tuple(pair) for pair in labels)
            if name in COUNTERS:
                counters[name][key] = float(value)
            elif name in HISTOGRAMS:
                buckets[name][key][part] = float(value)
        for name, (help_text, label_names) in COUNTERS.items():
            family = CounterMetricFamily(name, help_text, labels=label_names)
            for key, value in sorted(counters[name].items()):
                family.add_metric([dict(key)[label] for label in label_names], value)
            yield family
        for name, help_text in HISTOGRAMS.items():
            family = HistogramMetricFamily(name, help_text, labels=["model"])
            for key, parts in sorted(buckets[name].items()):
                cumulative, rows = 0.0, []
                for bound in [*map(str, BUCKETS_S), "+Inf"]:
                    cumulative += parts.get(bound, 0.0)
                    rows.append((bound, cumulative))
                family.add_metric([dict(key)["model"]], rows, sum_value=parts.get("sum", 0.0))
            yield family

    def _queue_depth(self) -> Metric:
        """Tasks waiting in each model's queue per priority (LLEN of the kombu lists)."""
        family = GaugeMetricFamily("vlq_queue_depth", "Tasks waiting in Redis, by model and priority.",
                                   labels=["model", "priority"])
        series = [(model, priority.value) for model in sorted(self._settings.registry) for priority in Priority]
        pipe = self._redis.pipeline(transaction=False)
        for model, priority in series:
            for suffix in _PRIORITY_LISTS:
                pipe.llen(job_queue(model, priority) + suffix)
        lengths = pipe.execute()
        step = len(_PRIORITY_LISTS)
        for index, (model, priority) in enumerate(series):
            family.add_metric([model, priority], sum(lengths[index * step:(index + 1) * step]))
        return family

    def _jobs_by_state(self) -> Metric:
        family = GaugeMetricFamily("vlq_jobs", "Jobs in the database, by model and state.", labels=["model", "state"])
        with self._db.session() as session:
            rows = session.execute(select(Job.model, Job.status, func.count()).group_by(Job.model, Job.status)).all()
        counts = {(model, status): count for model, status, count in rows}
        models = sorted({model for model, _ in counts} | set(self._settings.registry))
        for model in models:
            for state in JobStatus:
                family.add_metric([model, state.value], counts.get((model, state.value), 0))
        return family
