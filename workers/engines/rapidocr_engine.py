"""The OCR engine: RapidOCR 3.x (PP-OCR detection + recognition, models shipped in its wheel) on OpenVINO.

Requests run one at a time on the engine's own thread. OpenVINO already spreads one image's detection and
recognition over every core, and RapidOCR's pipeline object is not safe to call from several threads, so a
pool would only contend for the same cores. `batch_size` is therefore always reported as 1.

OCR has no tokens: prompt/completion tokens and ttft_ms are None; inference_ms is the wall time of the OCR call.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from service.core.config import Settings
from workers.engines.base import ENGINE_FAILED, Engine, EngineError, GenerationRequest, GenerationResult, RequestHandle
from workers.modelstore.registry import LocalModel

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    request: GenerationRequest
    handle: RequestHandle
    cancelled: threading.Event


class RapidOCREngine(Engine):
    def __init__(self, model: LocalModel, settings: Settings) -> None:
        self.name = model.spec.name
        self._settings = settings
        self._ocr: Any = None
        self._inbox: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def load(self) -> None:
        from rapidocr import EngineType, RapidOCR

        started = time.monotonic()
        params: dict[str, Any] = {"Global.log_level": "warning", "Global.use_cls": False}
        for stage in ("Det", "Cls", "Rec"):
            params[f"{stage}.engine_type"] = EngineType.OPENVINO
        if self._settings.inference_threads:
            params["EngineConfig.openvino.inference_num_threads"] = self._settings.inference_threads
        self._ocr = RapidOCR(params=params)
        log.info("%s: loaded in %.1fs", self.name, time.monotonic() - started)
        self._thread = threading.Thread(target=self._loop, name=f"engine-{self.name}", daemon=True)
        self._thread.start()

    def submit(self, request: GenerationRequest) -> RequestHandle:
        if self._closed.is_set() or self._thread is None:
            raise EngineError(f"engine {self.name} is not running")
        # A cancel takes effect while the request waits; one already being read finishes (OCR takes about a second).
        cancelled = threading.Event()
        handle = RequestHandle(cancel=cancelled.set)
        self._inbox.put(_Pending(request=request, handle=handle, cancelled=cancelled))
        return handle

    def close(self) -> None:
        self._closed.set()
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(timeout=30)
        while not self._inbox.empty():
            pending = self._inbox.get()
            if pending is not None:
                pending.handle.set_error(EngineError("engine shut down"))

    def _loop(self) -> None:
        while not self._closed.is_set():
            pending = self._inbox.get()
            if pending is None:
                continue
            if pending.cancelled.is_set():
                pending.handle.set_result(_result("", [], "cancelled", 0.0))
                continue
            try:
                pending.handle.set_result(self._read(pending.request))
            except Exception:
                log.exception("%s: OCR failed", self.name)
                pending.handle.set_error(EngineError(ENGINE_FAILED))

    def _read(self, request: GenerationRequest) -> GenerationResult:
        started = time.perf_counter()
        output = self._ocr(request.image, return_word_box=request.word_boxes)
        elapsed_ms = (time.perf_counter() - started) * 1000
        lines = [
            {"text": text, "box": _points(box), "confidence": round(float(score), 4)}
            for text, box, score in zip(output.txts or (), _boxes(output), output.scores or (), strict=False)
        ]
        if request.word_boxes and len(output.word_results or ()) == len(lines):
            for line, words in zip(lines, output.word_results, strict=True):
                line["words"] = [{"text": text, "box": _points(box), "confidence": round(float(score), 4)}
                                 for text, score, box in words if box is not None]
        return _result("\n".join(line["text"] for line in lines), lines, "stop", elapsed_ms)


def _points(box: Any) -> list[list[float]]:
    return [[round(float(x), 1), round(float(y), 1)] for x, y in box]


def _boxes(output: Any) -> list[Any]:
    return [] if output.boxes is None else output.boxes.tolist()


def _result(text: str, lines: list[dict[str, Any]], reason: str, elapsed_ms: float) -> GenerationResult:
    return GenerationResult(text=text, finish_reason=reason, prompt_tokens=None, completion_tokens=None,
                            ttft_ms=None, inference_ms=elapsed_ms, batch_size=1, lines=lines)
