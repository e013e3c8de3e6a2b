"""The product engine: an exported Qwen3-VL on OpenVINO GenAI's ContinuousBatchingPipeline.

Celery threads call `submit` concurrently and add their requests to the pipeline; one loop thread steps it.
At most `batch_size` sequences are in the pipeline at once, and a finished one frees its slot at once.
"""
from __future__ import annotations

import itertools
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service.config import Settings
from service.structured import compile_schema
from workers.engines.base import Engine, EngineError, GenerationRequest, GenerationResult, RequestHandle
from workers.registry import LocalModel

log = logging.getLogger(__name__)


@dataclass
class _InFlight:
    request: GenerationRequest
    handle: RequestHandle
    engine_handle: Any  # openvino_genai.GenerationHandle
    peak_batch: int = 0
    cancel_requested: bool = False
    token_ids: list[int] = field(default_factory=list)
    finish_reason: Any = None


class OpenVINOVLMEngine(Engine):
    def __init__(self, model: LocalModel, settings: Settings) -> None:
        self.name = model.spec.name
        self._model = model
        self._settings = settings
        self._pipe: Any = None
        self._tokenizer: Any = None
        self._ids = itertools.count()
        self._inbox: queue.SimpleQueue[tuple[int, _InFlight]] = queue.SimpleQueue()
        self._cancels: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._inflight: dict[int, _InFlight] = {}
        self._slots = threading.BoundedSemaphore(settings.batch_size)
        self._pipe_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def load(self) -> None:
        started = time.monotonic()
        self._pipe = self._create_pipeline()
        self._tokenizer = self._pipe.get_tokenizer()
        log.info("%s: compiled on %s in %.1fs", self.name, self._model.spec.device, time.monotonic() - started)
        self._thread = threading.Thread(target=self._loop, name=f"engine-{self.name}", daemon=True)
        self._thread.start()

    def _create_pipeline(self) -> Any:
        import openvino_genai as ov_genai

        scheduler = ov_genai.SchedulerConfig()
        # With dynamic split-fuse (the default) max_num_seqs does not bound the batch; `_slots` does.
        scheduler.max_num_seqs = self._settings.batch_size
        scheduler.cache_size = self._settings.kv_cache_gb
        return ov_genai.ContinuousBatchingPipeline(
            str(self._model.path), scheduler, self._model.spec.device, self._properties())

    def _properties(self) -> dict[str, Any]:
        # OpenVINO caches compiled blobs here, so a restarted worker skips most of compilation.
        cache_dir = Path(self._settings.model_cache) / ".compiled" / self._model.spec.export_dir_name
        properties: dict[str, Any] = {"CACHE_DIR": str(cache_dir)}
        if self._settings.inference_threads:
            properties["INFERENCE_NUM_THREADS"] = self._settings.inference_threads
        return properties

    def submit(self, request: GenerationRequest) -> RequestHandle:
        """Add the request to the pipeline from the caller's thread, once one of batch_size slots is free.

        Image preprocessing and vision encoding happen inside add_request, so doing it here lets the next
        requests' images be encoded while the loop thread keeps decoding the current batch.
        """
        import openvino as ov

        if self._closed.is_set() or self._thread is None:
            raise EngineError(f"engine {self.name} is not running")
        if not self._slots.acquire(timeout=self._settings.job_timeout_s):
            raise EngineError(f"no engine slot came free within {self._settings.job_timeout_s}s")
        request_id = next(self._ids)
        handle = RequestHandle(cancel=lambda: self._cancel(request_id))
        try:
            image = ov.Tensor(np.asarray(request.image, dtype=np.uint8)[np.newaxis])
            with self._pipe_lock:  # so a pipeline rebuild never strands a request on the old one
                engine_handle = self._pipe.add_request(
                    request_id, request.prompt, [image], self._generation_config(request))
                self._inbox.put((request_id, _InFlight(request=request, handle=handle, engine_handle=engine_handle)))
        except Exception as exc:
            self._slots.release()
            raise EngineError(f"the engine refused the request: {exc}") from exc
        self._wake.set()
        return handle

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._fail_all(EngineError("engine shut down"))

    def _cancel(self, request_id: int) -> None:
        self._cancels.put(request_id)
        self._wake.set()

    def _generation_config(self, request: GenerationRequest) -> Any:
        import openvino_genai as ov_genai

        config = ov_genai.GenerationConfig()
        config.max_new_tokens = request.max_tokens
        config.ignore_eos = request.ignore_eos
        if request.temperature > 0:
            config.do_sample = True
            config.temperature = request.temperature
        if request.json_schema is not None:
            config.structured_output_config = _structured_output(request.json_schema)
        return config

    # -- the loop thread: the only code that steps the pipeline ---------------------------

    def _loop(self) -> None:
        while not self._closed.is_set():
            self._admit()
            self._apply_cancels()
            if not self._inflight:
                self._wake.wait(timeout=0.5)
                self._wake.clear()
                continue
            try:
                self._pipe.step()
            except Exception as exc:
                # A failed step leaves the pipeline unusable: fail what was in it and start a fresh one.
                log.exception("%s: engine step failed; rebuilding the pipeline", self.name)
                with self._pipe_lock:
                    self._fail_all(EngineError(f"engine step failed: {exc}"))
                    self._pipe = self._create_pipeline()
                continue
            self._collect()

    def _admit(self) -> None:
        """Take newly added requests into the loop's view, and note how many sequences now run together."""
        while not self._inbox.empty():
            request_id, item = self._inbox.get()
            self._inflight[request_id] = item
        batch = len(self._inflight)
        for item in self._inflight.values():
            item.peak_batch = max(item.peak_batch, batch)

    def _apply_cancels(self) -> None:
        while not self._cancels.empty():
            request_id = self._cancels.get()
            item = self._inflight.get(request_id)
            if item is None or item.cancel_requested:
                continue  # already finished, or cancelled twice
            # Keep what was generated: after cancel() the handle no longer gives its output back.
            try:
                self._read_tokens(item)
            except Exception:
                log.exception("%s: could not read request %s before cancelling it", self.name, request_id)
            item.cancel_requested = True
            item.engine_handle.cancel()

    def _fail_all(self, error: EngineError) -> None:
        self._admit()
        for item in self._inflight.values():
            item.handle.set_error(error)
            self._slots.release()
        self._inflight.clear()

    def _collect(self) -> None:
        """Resolve the requests that ended in the last step (one status call per request per step)."""
        import openvino_genai as ov_genai

        for request_id, item in list(self._inflight.items()):
            status = item.engine_handle.get_status()
            if status == ov_genai.GenerationStatus.RUNNING:
                continue
            del self._inflight[request_id]
            self._slots.release()
            try:
                if not item.cancel_requested:
                    self._read_tokens(item)
                item.handle.set_result(self._result(item, status))
            except Exception as exc:
                log.exception("%s: could not finish request %s", self.name, request_id)
                item.handle.set_error(exc if isinstance(exc, EngineError) else EngineError(str(exc)))

    @staticmethod
    def _read_tokens(item: _InFlight) -> None:
        """Move the tokens generated since the last read into `item` (each read() gives one step's output)."""
        while item.engine_handle.can_read():
            for output in item.engine_handle.read().values():
                item.token_ids.extend(output.generated_ids)
                item.finish_reason = output.finish_reason

    def _result(self, item: _InFlight, status: Any) -> GenerationResult:
        import openvino_genai as ov_genai

        if item.cancel_requested:
            reason = "cancelled"
        elif status == ov_genai.GenerationStatus.FINISHED:
            reason = "length" if item.finish_reason == ov_genai.GenerationFinishReason.LENGTH else "stop"
        else:  # IGNORED without a cancel: the scheduler dropped it, e.g. the KV cache was too small
            raise EngineError(f"the engine dropped the request ({status.name}); raise kv_cache_gb or lower max_tokens")
        metrics = item.engine_handle.get_perf_metrics()
        return GenerationResult(
            text=self._tokenizer.decode(item.token_ids, skip_special_tokens=True) if item.token_ids else "",
            finish_reason=reason,
            prompt_tokens=int(metrics.get_num_input_tokens()),
            completion_tokens=int(metrics.get_num_generated_tokens()),
            ttft_ms=float(metrics.get_ttft().mean),
            inference_ms=float(metrics.get_generate_duration().mean),
            batch_size=item.peak_batch,
        )


def _structured_output(schema: dict[str, Any]) -> Any:
    """The whitespace-free regex for schemas in the supported subset, else GenAI's own JSON-schema grammar."""
    import openvino_genai as ov_genai

    grammar = compile_schema(schema)
    if grammar is not None:
        return ov_genai.StructuredOutputConfig(regex=grammar.regex)
    return ov_genai.StructuredOutputConfig(json_schema=json.dumps(schema))
