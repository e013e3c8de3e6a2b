"""The webhook pool: a tenant's share of threads, one attempt per receiver, tenants served in turn."""
from __future__ import annotations

import threading
import time

from workers.webhook_pool import FairPool


def _blocker(started: list[str], name: str, gate: threading.Event):
    def run() -> None:
        started.append(name)
        gate.wait(10)
    return run


def _wait(predicate, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_tenant_with_slow_receivers_holds_only_its_share_and_others_go_first():
    pool = FairPool(size=4, per_tenant=2, name="test-pool")
    gate, started = threading.Event(), []
    try:
        for n in range(6):  # six slow receivers of one tenant
            assert pool.submit("greedy", f"endpoint-{n}", f"msg-g{n}", _blocker(started, f"g{n}", gate))
        _wait(lambda: len(started) == 2)
        assert pool.running("greedy") == 2
        done = threading.Event()
        assert pool.submit("polite", "endpoint-p", "msg-p", done.set)
        assert done.wait(2)  # a free thread, though six of greedy's wait
        time.sleep(0.1)
        assert started == ["g0", "g1"]  # greedy never took more than its share
    finally:
        gate.set()
        pool.shutdown()


def test_one_receiver_gets_one_attempt_at_a_time_and_a_delivery_is_queued_once():
    pool = FairPool(size=4, per_tenant=4, name="test-pool")
    gate, started = threading.Event(), []
    try:
        assert pool.submit("t", "endpoint", "msg-1", _blocker(started, "1", gate))
        assert pool.submit("t", "endpoint", "msg-2", _blocker(started, "2", gate))
        assert pool.submit("t", "endpoint", "msg-2", _blocker(started, "2-again", gate))  # a duplicate message
        _wait(lambda: started)
        time.sleep(0.2)
        assert started == ["1"]  # msg-2 waits for its receiver, with threads free
        gate.set()
        _wait(lambda: started == ["1", "2"])
        time.sleep(0.1)
        assert started == ["1", "2"]
    finally:
        gate.set()
        pool.shutdown()


def test_a_tenant_queue_is_bounded():
    pool = FairPool(size=1, per_tenant=1, name="test-pool", max_waiting=2)
    gate, started = threading.Event(), []
    try:
        assert pool.submit("t", "a", "m0", _blocker(started, "0", gate))
        _wait(lambda: started)
        assert pool.submit("t", "b", "m1", _blocker(started, "1", gate))
        assert pool.submit("t", "c", "m2", _blocker(started, "2", gate))
        assert not pool.submit("t", "d", "m3", _blocker(started, "3", gate))  # refused: it stays due in the database
        assert pool.submit("other", "e", "m4", _blocker(started, "4", gate))  # another tenant's own room
    finally:
        gate.set()
        pool.shutdown()
