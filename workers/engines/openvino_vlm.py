"""The product engine: an exported Qwen3-VL on OpenVINO GenAI's ContinuousBatchingPipeline.

The pipeline lives in a child process of its own (see `workers.engines.pipeline_process` for why).
Celery threads call `submit`; at most `batch_size` requests are in the pipeline at once, and a finished
one frees its slot at once. A reader thread resolves each request's handle from the child's results.
"""
from __future__ import annotations

import itertools
import json
import logging
import multiprocessing
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from service.core.config import Settings
from service.core.errors import ErrorCode
from service.core.structured import compile_schema
from workers.engines import pipeline_process
from workers.engines.base import Engine, EngineError, GenerationRequest, RequestHandle
from workers.host_lock import host_lock
from workers.modelstore.registry import LocalModel

log = logging.getLogger(__name__)

# Compiling a 2B model the first time takes minutes on a small machine; a cached compile takes seconds.
_LOAD_TIMEOUT_S = 1800


@contextmanager
def _compiling(cache_dir: Path) -> Iterator[None]:
    """One engine on this host compiles into a cache folder at a time, the next one then reads the warm cache.

    OpenVINO's cache writes race: two workers starting together on a cold cache failed one of them ("cannot set
    permissions: No such file"). The wait is bounded; past it the engine compiles anyway, as before.
    """
    with host_lock(cache_dir / ".lock", _LOAD_TIMEOUT_S) as held:
        if not held:
            log.warning("%s: another engine has compiled for too long; compiling anyway", cache_dir)
        yield


class OpenVINOVLMEngine(Engine):
    def __init__(self, model: LocalModel, settings: Settings) -> None:
        self.name = model.spec.name
        self._model = model
        self._settings = settings
        self._ids = itertools.count()
        self._slots = threading.BoundedSemaphore(settings.batch_size)
        self._handles: dict[int, RequestHandle] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        # spawn, not fork: the worker has threads (and maybe a loaded model) a fork would copy half-way.
        self._context = multiprocessing.get_context("spawn")
        self._process: Any = None
        self._requests: Any = None
        self._results: Any = None

    def load(self) -> None:
        started = time.monotonic()
        self._start_process()
        log.info("%s: compiled on %s in %.1fs (engine process %s)", self.name, self._model.spec.device,
                 time.monotonic() - started, self._process.pid)
        threading.Thread(target=self._read_results, name=f"engine-{self.name}", daemon=True).start()

    def _start_process(self) -> None:
        """Start an engine process on fresh queues and wait until its pipeline is compiled."""
        with self._lock:  # requests submitted from now on wait in the new queue for the new process
            self._requests, self._results = self._context.Queue(), self._context.Queue()
        config = pipeline_process.PipelineConfig(
            path=str(self._model.path), device=self._model.spec.device, batch_size=self._settings.batch_size,
            kv_cache_gb=self._settings.kv_cache_gb, properties=self._properties(),
            scheduler=dict(self._settings.scheduler), log_format=self._settings.log_format)
        self._process = self._context.Process(
            target=pipeline_process.serve, args=(config, self._requests, self._results),
            name=f"vlq-engine-{self.name}", daemon=True)
        with _compiling(self._cache_dir()):
            self._process.start()
            message = self._wait_until_loaded()
        if message[0] != "ready":
            self._process.join(timeout=10)
            raise EngineError(f"{self.name} failed to load: {message[1]}")

    def _wait_until_loaded(self) -> tuple[Any, ...]:
        """The engine process's first message; fails fast if the process dies before it could send one."""
        deadline = time.monotonic() + _LOAD_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                return self._results.get(timeout=1.0)
            except queue.Empty:
                if not self._process.is_alive():
                    raise EngineError(f"{self.name}: the engine process exited while loading "
                                      f"(exit code {self._process.exitcode})") from None
        self._process.kill()
        raise EngineError(f"{self.name} did not load within {_LOAD_TIMEOUT_S}s")

    def _cache_dir(self) -> Path:
        return Path(self._settings.model_cache) / ".compiled" / self._model.spec.export_dir_name

    def _properties(self) -> dict[str, Any]:
        # OpenVINO caches compiled blobs here, so a restarted worker skips most of compilation.
        properties: dict[str, Any] = {"CACHE_DIR": str(self._cache_dir())}
        if self._settings.inference_threads:
            properties["INFERENCE_NUM_THREADS"] = self._settings.inference_threads
        return properties | dict(self._settings.openvino_properties)

    def submit(self, request: GenerationRequest) -> RequestHandle:
        """Queue the request for the engine process once one of batch_size slots is free."""
        if self._closed.is_set() or self._process is None:
            raise EngineError(f"engine {self.name} is not running")
        if not self._slots.acquire(timeout=self._settings.job_timeout_s):
            raise EngineError(f"no engine slot came free within {self._settings.job_timeout_s}s")
        request_id = next(self._ids)
        handle = RequestHandle(cancel=lambda: self._requests.put(("cancel", request_id)))
        images = [np.ascontiguousarray(np.asarray(image, dtype=np.uint8)[np.newaxis]) for image in request.images]
        prompt = request.messages if request.messages is not None else request.prompt
        with self._lock:  # the handle and its message belong to the same engine process
            self._handles[request_id] = handle
            self._requests.put(("add", request_id, prompt, images, _generation(request)))
        return handle

    def close(self) -> None:
        self._closed.set()
        if self._process is not None and self._process.is_alive():
            self._requests.put(("stop",))
            self._process.join(timeout=30)
            if self._process.is_alive():
                self._process.kill()
        self._fail_all(EngineError("engine shut down"))

    def _read_results(self) -> None:
        """Resolve handles from the child's results; if the child dies, fail what it held and start another."""
        while not self._closed.is_set():
            try:
                message = self._results.get(timeout=1.0)
            except queue.Empty:
                if not self._closed.is_set() and not self._process.is_alive():
                    log.error("%s: engine process died (exit %s); restarting it", self.name, self._process.exitcode)
                    with self._lock:
                        lost, self._handles = self._handles, {}
                    try:
                        self._start_process()
                    except EngineError:
                        log.exception("%s: the engine could not be restarted; it refuses requests now", self.name)
                        self._closed.set()
                    finally:
                        for handle in lost.values():
                            handle.set_error(EngineError("the engine process died"))
                            self._slots.release()
                continue
            kind, request_id, payload = message
            with self._lock:
                handle = self._handles.get(request_id) if kind == "text" else self._handles.pop(request_id, None)
            if handle is None:
                continue
            if kind == "text":
                handle.add_text(payload)
                continue
            self._slots.release()
            if kind == "done":
                handle.set_result(payload)
            else:
                code, text = payload
                handle.set_error(EngineError(text, ErrorCode(code)))

    def _fail_all(self, error: EngineError) -> None:
        with self._lock:
            handles, self._handles = self._handles, {}
        for handle in handles.values():
            handle.set_error(error)
            self._slots.release()


def _generation(request: GenerationRequest) -> dict[str, Any]:
    """The request's generation settings as plain data for the engine process, the grammar compiled here."""
    generation: dict[str, Any] = {"max_tokens": request.max_tokens, "temperature": request.temperature,
                                  "top_p": request.top_p, "ignore_eos": request.ignore_eos, "stream": request.stream,
                                  "seed": request.seed, "logprobs": request.logprobs}
    if request.json_schema is not None:
        # The whitespace-free regex for schemas in the supported subset, else GenAI's own JSON-schema grammar.
        grammar = compile_schema(request.json_schema)
        if grammar is not None:
            generation["regex"] = grammar.regex
        else:
            generation["json_schema"] = json.dumps(request.json_schema)
    return generation
