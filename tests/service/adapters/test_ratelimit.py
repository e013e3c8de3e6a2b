"""The Redis rate limiter (GCRA) on its own: a burst of one second's worth, then the steady rate."""
import uuid

from service.adapters.ratelimit import RateLimiter
from tests.conftest import REDIS_URL


def test_a_key_gets_its_burst_then_waits_about_one_interval():
    limiter = RateLimiter(REDIS_URL)
    key = f"test-{uuid.uuid4().hex}"
    try:
        assert limiter.check(key, 0.5) == 0  # rate 0.5/s: a burst of one
        assert 0 < limiter.check(key, 0.5) <= 2  # the next waits for its slot, at most one interval
        other = f"test-{uuid.uuid4().hex}"
        assert [limiter.check(other, 3) for _ in range(3)] == [0, 0, 0]  # 3/s: three at once
        assert limiter.check(other, 3) > 0
    finally:
        limiter.close()


def test_zero_is_unlimited_and_a_dead_redis_lets_requests_through():
    limiter = RateLimiter(REDIS_URL)
    assert all(limiter.check(f"test-{uuid.uuid4().hex}", 0) == 0 for _ in range(3))
    limiter.close()
    dead = RateLimiter("redis://127.0.0.1:1/0")
    assert [dead.check("k", 0.1) for _ in range(3)] == [0, 0, 0]
    dead.close()
