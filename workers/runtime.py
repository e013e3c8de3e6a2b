"""What one worker process holds: its loaded engines, the jobs running on them, and its background duties.

Built once per worker process when Celery starts it (see `workers.inference`), never on a request path.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from service import job_endings, presence, webhooks
from service.blobs import LocalBlobStore
from service.config import Settings
from service.db import Database
from service.dispatch import Dispatcher
from workers import maintenance
from workers.celery_app import CANCEL_CHANNEL, worker_queues
from workers.engines import create_engine
from workers.engines.base import Engine, RequestHandle
from workers.registry import candidate_models

log = logging.getLogger(__name__)

_current: WorkerRuntime | None = None


def current_runtime() -> WorkerRuntime:
    if _current is None:
        raise RuntimeError("no worker runtime in this process; start workers with `vlq worker`")
    return _current


def set_current_runtime(runtime: WorkerRuntime | None) -> None:
    global _current
    _current = runtime


class WorkerRuntime:
    def __init__(self, settings: Settings, name: str | None = None) -> None:
        self.settings = settings
        self.name = name or f"vlq@{socket.gethostname()}:{os.getpid()}"
        self.db = Database(settings.database_url)
        self.blobs = LocalBlobStore(settings.blob_dir)
        self.dispatcher = Dispatcher(settings)
        webhooks.attach_outbox(self.db.sessions, self.dispatcher.enqueue_delivery)
        job_endings.attach(self.db.sessions, self.dispatcher.redis)
        self.webhook_pool = BoundedPool(settings.webhook_concurrency, name="vlq-webhook")
        self.engines: dict[str, Engine] = {}
        self.models: dict[str, dict[str, Any]] = {}  # name -> {"status": loading|live|unavailable, "reason"?}
        self._active: dict[str, RequestHandle | None] = {}
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._started_at = time.time()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Announce presence, load every servable model, then start the cancel listener and sweeper."""
        for model in candidate_models(self.settings):
            self.models[model.spec.name] = {"status": "loading"}
        self._spawn("heartbeat", self._heartbeat_loop)
        self._load_models()
        self._spawn("cancel-listener", self._cancel_loop)
        self._spawn("sweeper", self._sweep_loop)

    def stop(self) -> None:
        self._stopping.set()
        self.webhook_pool.shutdown()
        presence.withdraw(self.dispatcher.redis, self.name)
        for engine in self.engines.values():
            engine.close()
        self.dispatcher.close()
        self.db.dispose()

    def queues(self) -> list[str]:
        """The queues to consume: those of the models that loaded, then webhook deliveries."""
        return [*worker_queues(self.engines), self.settings.webhook_queue]

    def _load_models(self) -> None:
        for model in candidate_models(self.settings):
            name = model.spec.name
            if not model.exported:
                reason = model.missing_reason()
                log.warning("%s; this worker will not serve it", reason)
                self.models[name] = {"status": "unavailable", "reason": reason}
                continue
            try:
                started = time.monotonic()
                engine = create_engine(model, self.settings)
                engine.load()
                engine.warmup()
            except Exception as exc:
                log.exception("model %r failed to load from %s", name, model.path)
                self.models[name] = {"status": "unavailable", "reason": f"failed to load: {exc}"}
                continue
            self.engines[name] = engine
            self.models[name] = {"status": "live", "load_s": round(time.monotonic() - started, 2)}
            log.info("model %r live (%.1fs to load and warm up)", name, time.monotonic() - started)
        if not self.engines:
            log.error("no model could be loaded; this worker stays up but takes no jobs (see reasons above)")

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        threading.Thread(target=target, name=f"vlq-{name}", daemon=True).start()

    # -- running jobs and cancellation ----------------------------------------------------

    @contextmanager
    def tracking(self, job_id: str) -> Iterator[JobTracker]:
        """Register a job as running here, so a cancel signal can reach its engine request."""
        with self._lock:
            self._active[job_id] = None
        try:
            yield JobTracker(self, job_id)
        finally:
            with self._lock:
                self._active.pop(job_id, None)
                self._cancelled.discard(job_id)

    def cancel(self, job_id: str) -> bool:
        """Cancel `job_id` if it runs here; True if it does."""
        with self._lock:
            if job_id not in self._active:
                return False
            self._cancelled.add(job_id)
            handle = self._active[job_id]
        if handle is not None:
            handle.cancel()
        return True

    def _attach(self, job_id: str, handle: RequestHandle) -> None:
        with self._lock:
            self._active[job_id] = handle
            cancelled = job_id in self._cancelled
        if cancelled:  # the signal came between claim and submit
            handle.cancel()

    def _is_cancelled(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._cancelled

    # -- background loops -----------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                info = self._presence_info()
                presence.announce(self.dispatcher.redis, self.name, info, self.settings.heartbeat_ttl_s)
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)
            self._stopping.wait(self.settings.heartbeat_interval_s)

    def _presence_info(self) -> dict[str, Any]:
        with self._lock:
            running = len(self._active)
        return {"pid": os.getpid(), "host": socket.gethostname(), "started_at": self._started_at,
                "batch_size": self.settings.batch_size, "running": running, "models": dict(self.models)}

    def _cancel_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                pubsub = self.dispatcher.redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CANCEL_CHANNEL)
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and message["type"] == "message":
                        job_id = message["data"].decode()
                        if self.cancel(job_id):
                            log.info("job %s: cancel requested, stopping its generation", job_id)
            except Exception as exc:
                if self._stopping.is_set():
                    return
                log.warning("cancel listener lost Redis (%s); reconnecting", exc)
                self._stopping.wait(1.0)

    def _sweep_loop(self) -> None:
        interval = self.settings.sweep_interval_s
        while not self._stopping.wait(interval):
            try:
                # One sweeper at a time across all workers; the lock expires with the interval.
                if self.dispatcher.redis.set("vlq:sweeper", self.name, nx=True, px=int(interval * 1000)):
                    live = set(presence.live_workers(self.dispatcher.redis))
                    maintenance.recover_orphaned_jobs(self.db, self.dispatcher, self.settings, live)
                    maintenance.sweep_batches(self.db, self.blobs)
                    maintenance.requeue_due_deliveries(self.db, self.dispatcher, self.settings)
            except Exception:
                log.exception("sweep failed; will retry")


class JobTracker:
    """The running job's link to cancellation: attach its engine handle, ask whether it was cancelled."""

    def __init__(self, runtime: WorkerRuntime, job_id: str) -> None:
        self._runtime = runtime
        self._job_id = job_id

    def attach(self, handle: RequestHandle) -> None:
        self._runtime._attach(self._job_id, handle)

    @property
    def cancelled(self) -> bool:
        return self._runtime._is_cancelled(self._job_id)


class BoundedPool:
    """A few threads for side work (webhook deliveries), so it never takes the Celery threads inference needs.

    `submit` blocks only while `2 × size` tasks are already waiting or running here.
    """

    def __init__(self, size: int, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix=name)
        self._slots = threading.BoundedSemaphore(size * 2)

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self._slots.acquire()
        try:
            self._executor.submit(self._run, fn, *args, **kwargs)
        except RuntimeError:  # shut down meanwhile; the work stays due in the database
            self._slots.release()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception:
            log.exception("%s failed; it stays due and will be retried", getattr(fn, "__name__", fn))
        finally:
            self._slots.release()
