"""Worker presence on a Redis database of its own: workers are listed from their index, never by scanning the keys,
so a read costs the same beside 20,000 other keys; a worker whose key expired is gone from the list."""
import time
from collections.abc import Iterator

import pytest
import redis

from service.adapters import presence
from tests.conftest import REDIS_URL

SCRATCH_URL = REDIS_URL.rsplit("/", 1)[0] + "/14"  # flushed here: the session's workers announce on the test db


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(SCRATCH_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def scans(client: redis.Redis) -> int:
    return client.info("commandstats").get("cmdstat_scan", {}).get("calls", 0)


def test_live_workers_are_read_from_the_index_among_many_other_keys(client):
    pipe = client.pipeline(transaction=False)
    for i in range(20_000):
        pipe.set(f"other:{i}", 1)
    pipe.execute()
    presence.announce(client, "a", {"pid": 1, "models": {"m": {"status": "live"}}}, ttl_s=30)
    presence.announce(client, "b", {"pid": 2, "models": {}}, ttl_s=30)

    before = scans(client)
    workers = presence.live_workers(client)
    assert workers == {"a": {"pid": 1, "models": {"m": {"status": "live"}}}, "b": {"pid": 2, "models": {}}}
    assert presence.live_models(workers) == ["m"]
    assert scans(client) == before

    presence.withdraw(client, "b")
    assert set(presence.live_workers(client)) == {"a"}
    assert client.zrange("vlq:workers", 0, -1) == [b"a"]


def test_an_expired_worker_is_not_listed_and_the_next_announce_drops_its_entry(client):
    presence.announce(client, "gone", {"pid": 1}, ttl_s=0.05)
    presence.announce(client, "alive", {"pid": 2}, ttl_s=30)
    time.sleep(0.1)
    assert set(presence.live_workers(client)) == {"alive"}
    assert set(client.zrange("vlq:workers", 0, -1)) == {b"gone", b"alive"}  # until someone announces

    presence.announce(client, "alive", {"pid": 2, "beat": 2}, ttl_s=30)  # a heartbeat
    assert client.zrange("vlq:workers", 0, -1) == [b"alive"]
    assert presence.live_workers(client) == {"alive": {"pid": 2, "beat": 2}}
