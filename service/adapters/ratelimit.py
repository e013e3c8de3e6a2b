"""Per-key request rate limits, shared by every API process and host through Redis (GCRA in one Lua script).

GCRA keeps one number per key, the time its next request is due ("theoretical arrival time"), and checks and
moves it in a single atomic script, so concurrent API processes can never both spend the last slot. It allows
bursts of up to one second's worth of requests (or a given burst) and then a steady `rate` per second. Time comes
from the Redis server, so API hosts with skewed clocks still agree.

If Redis cannot be reached, requests are let through (fail open): the limit protects the service from a noisy
client, and refusing every request while Redis is down would turn a broker outage into a full API outage.
Submits fail on their own in that case (503 broker_unavailable); reads keep working.
"""
from __future__ import annotations

import logging
import math
import time

import redis

log = logging.getLogger(__name__)

_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local spend = ARGV[3] == '1'
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local next_tat = tat + interval
local allowed_at = next_tat - burst * interval
if now < allowed_at then
  return allowed_at - now
end
if not spend then
  return 0
end
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1)
return 0
"""
_SKIP_AFTER_FAILURE_S = 5.0  # while Redis is down, do not pay a connect timeout on every request


class RateLimiter:
    """`check(key, rate)` says how long to wait (0: go ahead) before `key` may make another request.

    Keys are per-key ids (`key_...`) for request limits and `authfail:<address>` for failed authentications.
    """

    def __init__(self, redis_url: str) -> None:
        self.redis = redis.Redis.from_url(redis_url, socket_connect_timeout=0.5, socket_timeout=0.5)
        self._script = self.redis.register_script(_GCRA)
        self._down_until = 0.0

    def check(self, key: str, rate: float, burst: int = 0, spend: bool = True) -> float:
        """Spend one request of `key`'s budget at `rate` per second; returns seconds to wait if refused, else 0.

        `burst` is how many may come at once (default: one second's worth); with `spend=False` nothing is spent,
        the answer only says whether a request would be refused now.
        """
        if rate <= 0 or time.monotonic() < self._down_until:
            return 0.0
        interval_us = max(1, round(1_000_000 / rate))
        burst = burst if burst > 0 else max(1, math.ceil(rate))
        try:
            wait_us = self._script(keys=[f"vlq:ratelimit:{key}"], args=[interval_us, burst, int(spend)])
        except redis.RedisError as exc:
            self._down_until = time.monotonic() + _SKIP_AFTER_FAILURE_S
            log.warning("rate limiting is off for %.0fs: Redis is not reachable (%s)", _SKIP_AFTER_FAILURE_S, exc)
            return 0.0
        return int(wait_us) / 1_000_000

    def close(self) -> None:
        self.redis.close()
