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
from contextlib import contextmanager
from typing import Any

from sqlalchemy import select

from service.adapters import presence
from service.adapters.blobs import BlobStoreUnavailable
from service.adapters.broker import CANCEL_CHANNEL, worker_queues
from service.adapters.db import DATABASE_UNAVAILABLE
from service.core import lifecycle
from service.core.config import Settings
from service.core.models import Job
from service.core.presets import OCR_ENGINE
from service.wiring import wire
from workers.engines import create_engine
from workers.engines.base import Engine, RequestHandle
from workers.modelstore.registry import LocalModel, candidate_models, local_model
from workers.modelstore.remote import PullError, RemoteModels, remote_models
from workers.webhook_pool import FairPool

log = logging.getLogger(__name__)

# After a warm stop's grace, requeued jobs' generations are cancelled and the process should end within
# seconds; if something still holds it (a hung engine), it is ended, since its jobs are already handed on.
_EXIT_AFTER_REQUEUE_S = 20.0

_current: WorkerRuntime | None = None


class Stopping(Exception):
    """A stop began: this worker claims no more jobs, and the task's message goes back to the queue."""


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
        self.wiring = wire(settings)
        self.db = self.wiring.db
        self.blobs = self.wiring.blobs
        self.broker = self.wiring.broker
        self.redis = self.wiring.redis
        self.webhook_pool = FairPool(settings.webhook_concurrency, settings.webhook_tenant_slots, name="vlq-webhook")
        self.engines: dict[str, Engine] = {}
        # The OCR engine that grounds this worker's VLM jobs (extraction fields, ground_with_ocr prompts): the
        # served OCR model, or a private one loaded beside the VLMs; None if there is neither.
        self.ocr: Engine | None = None
        self.models: dict[str, dict[str, Any]] = {}  # name -> {"status": loading|live|unavailable, "reason"?}
        self._active: dict[str, JobTracker] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()  # the runtime is shutting down its background loops
        self._draining = threading.Event()  # a warm stop began: no new jobs come, running ones may finish
        self._halting = threading.Event()  # the grace is over: what still runs was requeued, nothing waits
        self._started_at = time.time()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Announce presence, load every servable model, then start the cancel listener."""
        for model in candidate_models(self.settings):
            self.models[model.spec.name] = {"status": "loading"}
        self._spawn("heartbeat", self._heartbeat_loop)
        self._load_models()
        self._spawn("cancel-listener", self._cancel_loop)

    def begin_drain(self, grace_s: float) -> None:
        """A stop began (Celery takes no new tasks): running jobs get `grace_s` to finish, then are requeued.

        Runs in Celery's signal handler, so it only sets an event and starts the drain: the runtime's lock could be
        held by the thread the signal interrupted. `tracking` checks the event after registering a job, so a claim
        racing the stop is seen by the drain, or sees the stop itself.
        """
        if self._draining.is_set():
            return
        self._draining.set()
        self._spawn("drain", lambda: self._drain(grace_s))

    def stop(self) -> None:
        """Runs once Celery's pool is idle (or a cold stop gave up on it); anything still running is requeued."""
        self._requeue_running()
        self._stopping.set()
        self.webhook_pool.shutdown()
        try:
            presence.withdraw(self.redis, self.name)
        except Exception as exc:  # the presence key expires by itself
            log.warning("could not withdraw presence: %s", exc)
        for engine in self.engines.values():
            engine.close()
        if self.ocr is not None and self.ocr not in self.engines.values():
            self.ocr.close()
        self.wiring.close()

    def give_up_after(self, seconds: float | None) -> Callable[[], bool]:
        """For `Database.retrying`: give up after `seconds` (None: never), or once the stop's grace is over."""
        deadline = None if seconds is None else time.monotonic() + seconds
        return lambda: self._halting.is_set() or (deadline is not None and time.monotonic() > deadline)

    def pause(self, seconds: float) -> None:
        """Wait `seconds`, or less if a stop's grace runs out meanwhile."""
        self._halting.wait(seconds)

    def running_count(self) -> int:
        with self._lock:
            return len(self._active)

    def _drain(self, grace_s: float) -> None:
        log.info("stopping: %d running job(s) get %.0fs to finish", self.running_count(), grace_s)
        deadline = time.monotonic() + grace_s
        while self.running_count() and time.monotonic() < deadline:
            self._halting.wait(0.1)
        if not self.running_count():
            return
        self._halting.set()
        self._requeue_running()
        if self._stopping.wait(_EXIT_AFTER_REQUEUE_S):
            return
        log.error("still not stopped %.0fs after requeueing its jobs; exiting now", _EXIT_AFTER_REQUEUE_S)
        os._exit(1)

    def _requeue_running(self) -> None:
        """Hand every job still running here back to the queue, and stop their generations. Safe to run twice at
        once (the drain and a late claim): the state machine moves each attempt back only once."""
        with self._lock:  # a job still being claimed has no attempt to requeue yet: see `claimed`
            claimed = [(tracker, tracker.job) for tracker in self._active.values()
                       if tracker.job is not None and not tracker.requeued]
        requeued = []
        for tracker, job in claimed:
            try:
                with self.db.session() as session:
                    if lifecycle.requeue(session, job):
                        requeued.append((tracker, job))
            except DATABASE_UNAVAILABLE as exc:  # left running: the orphan pass requeues it once we are gone
                log.warning("job %s not requeued, the database is unavailable: %s", job.id, exc)
        for tracker, job in requeued:
            tracker.requeued = True
            self.cancel(job.id)
        if requeued:
            self.broker.enqueue([job for _, job in requeued])
            log.warning("stopping: requeued %d job(s) that could not finish in time", len(requeued))

    def queues(self) -> list[str]:
        """The queues to consume: those of the models that loaded, then webhook deliveries."""
        return [*worker_queues(self.engines), self.settings.webhook_queue]

    def _load_models(self) -> None:
        remote = remote_models(self.settings)
        for model in candidate_models(self.settings):
            name = model.spec.name
            if not model.exported and remote is not None and model.spec.engine != "rapidocr":
                if not self._pull(remote, model):
                    continue  # failed: the reason is set
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
        self.ocr = self._grounding_ocr()

    def _grounding_ocr(self) -> Engine | None:
        """The served OCR engine; else, for a worker serving a VLM with ground_fields on, a private one loaded once
        here (RapidOCR: about a second and ~100 MB, docs/BENCHMARKS.md "Grounded fields")."""
        registry = self.settings.registry
        served = [engine for name, engine in self.engines.items() if registry[name].engine == OCR_ENGINE]
        if served or not self.settings.ground_fields:
            return served[0] if served else None
        spec = next((spec for spec in registry.values() if spec.engine == OCR_ENGINE), None)
        if spec is None or not self.engines:
            return None
        try:
            started = time.monotonic()
            engine = create_engine(local_model(self.settings, spec), self.settings)
            engine.load()
        except Exception:
            log.exception("the OCR engine for grounded fields failed to load; extractions stay ungrounded")
            return None
        log.info("OCR engine for grounded fields loaded in %.1fs", time.monotonic() - started)
        return engine

    def _pull(self, remote: RemoteModels, model: LocalModel) -> bool:
        """Fetch a model this host lacks from the bucket (`vlq model push` put it there); presence shows progress.
        False if the pull failed (the model is then unavailable, with the reason)."""
        name = model.spec.name

        def progress(done: int, total: int) -> None:
            self.models[name] = {"status": "pulling", "bytes": done, "of": total}

        self.models[name] = {"status": "pulling"}
        try:
            stats = remote.pull(model.spec, model.path, progress)
        except (BlobStoreUnavailable, PullError, OSError) as exc:
            log.error("model %r: pulling it from %s failed: %s", name, remote.location, exc)
            self.models[name] = {"status": "unavailable", "reason": f"pull failed: {exc}"}
            return False
        if stats is None:
            log.warning("model %r is neither here nor pushed to %s (`vlq model push %s`)", name, remote.location, name)
            return True
        log.info("model %r pulled from %s: %d files, %d of %d bytes downloaded in %.1fs", name, remote.location,
                 stats.files, stats.downloaded_bytes, stats.total_bytes, stats.seconds)
        self.models[name] = {"status": "loading"}
        return True

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        threading.Thread(target=target, name=f"vlq-{name}", daemon=True).start()

    # -- running jobs and cancellation ----------------------------------------------------

    @contextmanager
    def tracking(self, job_id: str) -> Iterator[JobTracker | None]:
        """Register a job before its claim, so that a cancel or a stop reaches it from the claim on; yields None if
        it is already tracked here (a redelivered message). Raises Stopping once a stop began: claimed after the
        drain looked, the job would run unseen past the stop's grace."""
        tracker = JobTracker(self, job_id)
        with self._lock:
            if job_id in self._active:
                tracker = None
            else:
                self._active[job_id] = tracker
        if tracker is None:
            yield None
            return
        try:
            if self._draining.is_set():  # after registering: a drain that began first sees it, or it sees the drain
                raise Stopping(job_id)
            yield tracker
        finally:
            with self._lock:
                self._active.pop(job_id, None)

    def claimed(self, tracker: JobTracker, job: Job) -> None:
        """The tracked job is claimed: this attempt is the one a stop requeues. If the stop's grace ran out while
        it was being claimed (the drain skipped it, having no attempt to requeue), hand it back now."""
        with self._lock:
            tracker.job = job
        if self._halting.is_set():
            self._requeue_running()

    def cancel(self, job_id: str) -> bool:
        """Cancel `job_id` if it runs here; True if it does."""
        with self._lock:
            tracker = self._active.get(job_id)
            if tracker is None:
                return False
            tracker.cancelled = True
            handle = tracker.handle
        if handle is not None:
            handle.cancel()
        return True

    def _attach(self, tracker: JobTracker, handle: RequestHandle) -> None:
        with self._lock:
            tracker.handle = handle
            cancelled = tracker.cancelled
        if cancelled:  # the signal came between claim and submit
            handle.cancel()

    # -- background loops -----------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                info = self._presence_info()
                presence.announce(self.redis, self.name, info, self.settings.heartbeat_ttl_s)
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
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CANCEL_CHANNEL)
                self._cancel_flagged_in_database()
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

    def _cancel_flagged_in_database(self) -> None:
        """Cancels published while this worker had no Redis connection are recorded in the database: apply them."""
        with self._lock:
            running = list(self._active)
        if not running:
            return
        try:
            with self.db.session() as session:
                flagged = session.scalars(select(Job.id).where(Job.id.in_(running),
                                                               Job.cancel_requested_at.is_not(None))).all()
        except DATABASE_UNAVAILABLE as exc:
            log.warning("could not look for missed cancels: %s", exc)
            return
        for job_id in flagged:
            if self.cancel(job_id):
                log.info("job %s: cancel found in the database, stopping its generation", job_id)


class JobTracker:
    """A job running here (or being claimed): its engine handle, and whether a cancel or a stop reached it."""

    def __init__(self, runtime: WorkerRuntime, job_id: str) -> None:
        self._runtime = runtime
        self.job_id = job_id
        self.job: Job | None = None  # set once claimed
        self.handle: RequestHandle | None = None
        self.cancelled = False
        self.requeued = False  # a stop requeued it; its outcome here no longer counts

    def attach(self, handle: RequestHandle) -> None:
        self._runtime._attach(self, handle)
