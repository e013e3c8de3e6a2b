"""The few threads a worker sends webhooks with, shared fairly between tenants and receivers.

A slow receiver costs its own tenant: each tenant runs at most `per_tenant` attempts at once, waiting work is
taken round-robin across tenants, and one receiver (`key`) gets one attempt at a time. Work is queued in memory
only: a delivery that waits here holds no lease, so if this worker dies it stays due in the database and the
periodic pass sends it again.
"""
from __future__ import annotations

import logging
import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class _Work:
    tenant: str
    key: str  # the receiver: one attempt at a time per key
    ident: str  # a delivery id: queued once, however many messages name it
    call: Callable[[], Any] = field(repr=False)


class FairPool:
    """`size` threads; per tenant at most `per_tenant` running and `max_waiting` waiting; one running per key."""

    def __init__(self, size: int, per_tenant: int, name: str, max_waiting: int | None = None) -> None:
        self.per_tenant = max(1, min(per_tenant, size))
        self.max_waiting = max_waiting if max_waiting is not None else 4 * size
        self._waiting: OrderedDict[str, deque[_Work]] = OrderedDict()  # tenant -> its work; order = whose turn
        self._queued: set[str] = set()
        self._running_tenants: Counter[str] = Counter()
        self._running_keys: set[str] = set()
        self._changed = threading.Condition()
        self._stopping = False
        self._threads = [threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True) for i in range(size)]
        for thread in self._threads:
            thread.start()

    def submit(self, tenant: str, key: str, ident: str, call: Callable[[], Any]) -> bool:
        """Queue `call`; False if the tenant already has `max_waiting` queued here (or the pool is stopping)."""
        with self._changed:
            if self._stopping:
                return False
            if ident in self._queued:
                return True  # a second message for work already waiting here
            queue = self._waiting.setdefault(tenant, deque())
            if len(queue) >= self.max_waiting:
                return False
            queue.append(_Work(tenant, key, ident, call))
            self._queued.add(ident)
            self._changed.notify()
            return True

    def running(self, tenant: str) -> int:
        with self._changed:
            return self._running_tenants[tenant]

    def shutdown(self) -> None:
        """Drop what waits (it stays due in the database) and let running attempts finish."""
        with self._changed:
            self._stopping = True
            self._waiting.clear()
            self._queued.clear()
            self._changed.notify_all()
        for thread in self._threads:
            thread.join()

    def _loop(self) -> None:
        while True:
            with self._changed:
                work = self._take()
                while work is None and not self._stopping:
                    self._changed.wait()
                    work = self._take()
                if work is None:
                    return
            try:
                work.call()
            except Exception:
                log.exception("webhook work %s failed; it stays due and will be retried", work.ident)
            finally:
                with self._changed:
                    self._running_tenants[work.tenant] -= 1
                    self._running_keys.discard(work.key)
                    self._changed.notify_all()

    def _take(self) -> _Work | None:
        """The first runnable work, tenants in turn; the tenant served goes to the back of the line."""
        for tenant, queue in list(self._waiting.items()):
            if self._running_tenants[tenant] >= self.per_tenant:
                continue
            work = next((w for w in queue if w.key not in self._running_keys), None)
            if work is None:
                continue
            queue.remove(work)
            self._waiting.pop(tenant)
            if queue:
                self._waiting[tenant] = queue  # to the back
            self._queued.discard(work.ident)
            self._running_tenants[tenant] += 1
            self._running_keys.add(work.key)
            return work
        return None
