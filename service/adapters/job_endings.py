"""Job endings on Redis: every terminal transition is announced after its commit, and waiters wake on it.

Workers, the sweeper and the API all end jobs through `service.core.lifecycle`, which calls `mark_ended`;
`attach` publishes those ids on one channel once the transaction commits. Each API process keeps one
subscription (`JobEndings`) and wakes the requests waiting on a job, which then re-read it from the
database. Pub/sub can drop a message (a reconnect), so waiters also re-check every `RECHECK_S`.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis
from sqlalchemy.orm import Session, sessionmaker

from service.adapters.db import after_commit, on_commit

log = logging.getLogger(__name__)

CHANNEL = "vlq:job-ended"
RECHECK_S = 5.0  # a lost message delays a waiter by at most this much
_KEY = "vlq.job_endings"  # the session.info key of the endings a transaction recorded


def mark_ended(session: Session, job_id: str) -> None:
    """Announce `job_id`'s ending once this session commits (called by the state machine)."""
    after_commit(session, _KEY, job_id)


def attach(sessions: sessionmaker[Session], client: redis.Redis) -> None:
    """Publish the endings each committed transaction of `sessions` recorded."""
    on_commit(sessions, _KEY, lambda job_id: client.publish(CHANNEL, job_id))


class JobEndings:
    """One subscription to CHANNEL per process, shared by every request waiting on a job."""

    def __init__(self, redis_url: str) -> None:
        self._redis_url = redis_url
        self._waiting: dict[str, set[threading.Event]] = {}
        self._lock = threading.Lock()
        self._listener: threading.Thread | None = None
        self._subscribed = threading.Event()

    @contextmanager
    def watch(self, job_id: str) -> Iterator[threading.Event]:
        """An event set whenever `job_id` is announced as ended (or a message may have been missed)."""
        event = threading.Event()
        with self._lock:
            self._waiting.setdefault(job_id, set()).add(event)
            self._start_listener()
        # Subscribing before the caller reads the job means an ending is either seen in that read or announced later.
        self._subscribed.wait(2.0)
        try:
            yield event
        finally:
            with self._lock:
                events = self._waiting.get(job_id, set())
                events.discard(event)
                if not events:
                    self._waiting.pop(job_id, None)

    def wait(self, job_id: str, ended: Callable[[], bool], timeout_s: float) -> bool:
        """Block until `ended()` is true (checked now, on each announcement and every RECHECK_S); False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self.watch(job_id) as event:
            while True:
                if ended():
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                event.wait(min(remaining, RECHECK_S))
                event.clear()

    def _start_listener(self) -> None:
        # Started on first use, so a forked server process gets a thread of its own.
        if self._listener is None or not self._listener.is_alive():
            self._listener = threading.Thread(target=self._listen, name="vlq-job-endings", daemon=True)
            self._listener.start()

    def _listen(self) -> None:
        client = redis.Redis.from_url(self._redis_url, socket_connect_timeout=2, health_check_interval=30)
        while True:
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CHANNEL)
                self._subscribed.set()
                self._wake_all()  # anything that ended while we were not subscribed gets re-checked
                while True:
                    message = pubsub.get_message(timeout=1.0)
                    if message and message["type"] == "message":
                        self._wake(message["data"].decode())
            except Exception as exc:
                self._subscribed.clear()
                log.warning("job endings: lost Redis (%s); reconnecting", exc)
                time.sleep(1.0)

    def _wake(self, job_id: str) -> None:
        with self._lock:
            events = list(self._waiting.get(job_id, ()))
        for event in events:
            event.set()

    def _wake_all(self) -> None:
        with self._lock:
            events = [event for events in self._waiting.values() for event in events]
        for event in events:
            event.set()
