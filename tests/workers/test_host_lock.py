"""The host lock: one holder at a time, a bounded wait, released with the block."""
import time

from workers.host_lock import host_lock


def test_a_second_holder_waits_its_bound_then_goes_on_unlocked(tmp_path):
    path = tmp_path / "cache" / ".lock"
    with host_lock(path, wait_s=5) as first:
        started = time.monotonic()
        with host_lock(path, wait_s=0.3) as second:  # another open file: flock sees another holder
            waited = time.monotonic() - started
    assert first is True
    assert second is False
    assert waited >= 0.3
    with host_lock(path, wait_s=0) as again:  # the first block ended: free
        assert again is True
