"""Worker presence in Redis: each worker keeps a short-lived key fresh while it is alive.

/readyz reads it to say which models are live, and orphan recovery reads it to find jobs whose worker died.
"""
from __future__ import annotations

import json
from typing import Any

import redis

_PREFIX = "vlq:worker:"


def announce(client: redis.Redis, worker: str, info: dict[str, Any], ttl_s: float) -> None:
    """Publish (or refresh) this worker's presence for `ttl_s` seconds."""
    client.set(_PREFIX + worker, json.dumps(info), px=int(ttl_s * 1000))


def withdraw(client: redis.Redis, worker: str) -> None:
    client.delete(_PREFIX + worker)


def live_workers(client: redis.Redis) -> dict[str, dict[str, Any]]:
    """Every worker whose presence has not expired, by name."""
    keys = list(client.scan_iter(match=_PREFIX + "*", count=500))
    if not keys:
        return {}
    workers = {}
    for key, raw in zip(keys, client.mget(keys), strict=True):
        if raw is not None:  # expired between SCAN and MGET
            name = (key.decode() if isinstance(key, bytes) else key).removeprefix(_PREFIX)
            workers[name] = json.loads(raw)
    return workers


def live_models(workers: dict[str, dict[str, Any]]) -> list[str]:
    """Models that at least one live worker has loaded."""
    return sorted({name for info in workers.values()
                   for name, model in info.get("models", {}).items() if model.get("status") == "live"})
