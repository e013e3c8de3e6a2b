"""Worker presence in Redis: each worker keeps a short-lived key fresh while it is alive, listed in one index.

/readyz reads it to say which models are live, and orphan recovery reads it to find jobs whose worker died. The
queue-timeout pass keeps beside it, per model, since when no live worker has served it.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import redis

_PREFIX = "vlq:worker:"
# Every announced worker by name, scored by when its key expires on Redis's clock: reads list the workers from
# here instead of a SCAN, whose cost grows with every other key in the database (48 ms a read at 90,000 keys).
_INDEX = "vlq:workers"
# The key and its index entry are written together, timed by Redis's clock: one clock for every host, so
# entries whose keys have expired can be dropped without a reader ever judging a live worker by a skewed clock.
_ANNOUNCE = """
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[3]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. now_ms)
"""


def announce(client: redis.Redis, worker: str, info: dict[str, Any], ttl_s: float) -> None:
    """Publish (or refresh) this worker's presence for `ttl_s` seconds."""
    client.eval(_ANNOUNCE, 2, _PREFIX + worker, _INDEX, worker, json.dumps(info), int(ttl_s * 1000))


def withdraw(client: redis.Redis, worker: str) -> None:
    pipe = client.pipeline()
    pipe.delete(_PREFIX + worker)
    pipe.zrem(_INDEX, worker)
    pipe.execute()


def live_workers(client: redis.Redis) -> dict[str, dict[str, Any]]:
    """Every worker whose presence has not expired, by name."""
    names = [name.decode() for name in client.zrange(_INDEX, 0, -1)]
    if not names:
        return {}
    # The key decides: an index entry outlives its key until the next announce drops it.
    raws = client.mget([_PREFIX + name for name in names])
    return {name: json.loads(raw) for name, raw in zip(names, raws, strict=True) if raw is not None}


def live_models(workers: dict[str, dict[str, Any]]) -> list[str]:
    """Models that at least one live worker has loaded."""
    return sorted({name for info in workers.values()
                   for name, model in info.get("models", {}).items() if model.get("status") == "live"})


_UNSERVED = "vlq:models:unserved_since"  # model -> Unix time it was first seen unserved, in an unbroken watch
_WATCHED_AT = "vlq:models:watched_at"  # Unix time of the last look


def unserved_since(client: redis.Redis, unserved: Iterable[str], now: float, max_gap_s: float) -> dict[str, float]:
    """Record one look at which models no live worker serves; returns, for each of `unserved`, since when.

    A model seen served leaves the record (its clock starts again when it is next unserved). When the last look is
    over `max_gap_s` old (nothing was watching: no worker ran the pass, say a cluster scaled to zero) or the record
    is gone (Redis restarted), every clock starts now: time nobody watched never counts against a job. One pass
    runs at a time (a lock), so the read and the rewrite need no transaction.
    """
    watched_at = client.get(_WATCHED_AT)
    known: dict[str, float] = {}
    if watched_at is not None and now - float(watched_at) <= max_gap_s:
        known = {_text(model): float(since) for model, since in client.hgetall(_UNSERVED).items()}
    clocks = {model: known.get(model, now) for model in unserved}
    pipe = client.pipeline()
    pipe.delete(_UNSERVED)
    if clocks:
        pipe.hset(_UNSERVED, mapping=clocks)
    pipe.set(_WATCHED_AT, now)
    pipe.execute()
    return clocks


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
