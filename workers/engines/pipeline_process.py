"""The process that owns a ContinuousBatchingPipeline: it adds requests, steps, and sends back results.

It runs apart from the Celery worker because OpenVINO GenAI holds the GIL inside `add_request` (which
encodes the image) and `step`: seconds at a time for a 2B model. In the worker's own process that froze
every other thread (Celery's consumer, the heartbeat, a database transaction half-way through) for as
long. Here only this loop waits; the worker talks to it through two queues:

    requests: ("add", id, prompt or messages, [image ndarray, ...], generation dict) | ("cancel", id) | ("stop",)
    results:  ("ready", seconds) | ("failed", message) | ("done", id, GenerationResult)
              | ("error", id, (code, message)) | ("text", id, new text of a streamed request)

A prompt gets the model's chat template from the pipeline, with the images (a document's pages) before the
text. Messages (a conversation) are templated here with the tokenizer's own chat template over every turn, each
image where a user turn holds {"type": "image"}, and handed over with the pipeline's templating turned off.
"""
from __future__ import annotations

import logging
import multiprocessing
import queue
import time
from dataclasses import dataclass, field
from typing import Any

from service.core import logs
from service.core.errors import ErrorCode
from workers.engines.base import ENGINE_FAILED, GenerationResult

log = logging.getLogger(__name__)
_SMALLEST = 1e-6  # the least temperature or top_p sent to the engine (both are practically greedy there)
_TOKEN_WINDOW = 4  # tokens of context decoded before each token to tell its length (a UTF-8 character spans <= 4)


@dataclass(frozen=True)
class PipelineConfig:
    """What the child needs to build the pipeline; plain data, so it crosses the process boundary."""

    path: str
    device: str
    batch_size: int
    kv_cache_gb: int
    properties: dict[str, Any]
    scheduler: dict[str, Any] = field(default_factory=dict)  # SchedulerConfig fields set on top of ours
    log_format: str = "auto"  # a spawned child starts with no logging set up; it logs like its worker


@dataclass
class _InFlight:
    handle: Any  # openvino_genai.GenerationHandle
    request: tuple[Any, Any, dict[str, Any]] = ((), None, {})  # (prompt, images, generation): to add it again
    stream: bool = False
    peak_batch: int = 0
    cancel_requested: bool = False
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)  # one per token id, when the request asked for them
    finish_reason: Any = None
    encode_ms: float = 0.0  # time inside add_request: tokenizing, and encoding the image
    first_token_at: float | None = None  # time.monotonic(), a clock every process on the machine shares
    # Streaming: token_ids[prefix_offset:read_offset] is the window decoded last time (see _new_text).
    prefix_offset: int = 0
    read_offset: int = 0


class _OutOfMemory(RuntimeError):
    pass


def serve(config: PipelineConfig, requests: Any, results: Any) -> None:
    """The child's entry point: build the pipeline, say so, then loop until told to stop."""
    logs.configure(config.log_format)
    try:
        started = time.monotonic()
        loop = _Loop(config, results)
    except Exception as exc:  # the parent turns this into the model's "unavailable" reason
        results.put(("failed", f"{type(exc).__name__}: {exc}"))
        return
    results.put(("ready", time.monotonic() - started))
    loop.run(requests, multiprocessing.parent_process())


class _Loop:
    def __init__(self, config: PipelineConfig, results: Any) -> None:
        self._config = config
        self._results = results
        self._pipe = self._create_pipeline()
        self._tokenizer = self._pipe.get_tokenizer()
        self._inflight: dict[int, _InFlight] = {}

    def _create_pipeline(self) -> Any:
        import openvino_genai as ov_genai

        scheduler = ov_genai.SchedulerConfig()
        # With dynamic split-fuse (the default) max_num_seqs does not bound the batch; the parent's slots do.
        scheduler.max_num_seqs = self._config.batch_size
        scheduler.cache_size = self._config.kv_cache_gb
        for name, value in self._config.scheduler.items():
            if not hasattr(scheduler, name):
                raise ValueError(f"scheduler: SchedulerConfig has no field {name!r}")
            setattr(scheduler, name, value)
        return ov_genai.ContinuousBatchingPipeline(
            self._config.path, scheduler, self._config.device, self._config.properties)

    def run(self, requests: Any, parent: Any) -> None:
        while True:
            # A SIGKILLed worker cannot stop its engine: without this check the engine would go on holding
            # the model's memory, an orphan, for ever.
            if parent is not None and not parent.is_alive():
                log.error("the worker process is gone; the engine process exits")
                return
            # Block only when idle; while generating, take whatever arrived and step again.
            try:
                message = requests.get(timeout=0.5) if not self._inflight else requests.get_nowait()
            except queue.Empty:
                message = None
            while message is not None:
                if message[0] == "stop":
                    return
                self._handle(message)
                try:
                    message = requests.get_nowait()
                except queue.Empty:
                    message = None
            if self._inflight:
                self._step()

    def _handle(self, message: tuple[Any, ...]) -> None:
        if message[0] == "add":
            _, request_id, prompt, images, generation = message
            self._add(request_id, prompt, images, generation)
        elif message[0] == "cancel":
            self._cancel(message[1])

    def _add(self, request_id: int, prompt: str | list[dict[str, Any]], images: list[Any],
             generation: dict[str, Any]) -> None:
        import openvino as ov

        config = _generation_config(generation)
        started = time.monotonic()
        try:
            text = prompt
            if isinstance(prompt, list):
                text = self._tokenizer.apply_chat_template(prompt, add_generation_prompt=True)
                config.apply_chat_template = False  # templated already, over the whole conversation
            handle = self._pipe.add_request(request_id, text, [ov.Tensor(image) for image in images], config)
        except Exception as exc:
            log.exception("the engine refused request %s", request_id)
            self._fail(request_id, exc)
            return
        self._inflight[request_id] = _InFlight(handle=handle, request=(prompt, images, generation),
                                               stream=bool(generation.get("stream")),
                                               encode_ms=1000 * (time.monotonic() - started))
        batch = len(self._inflight)
        for item in self._inflight.values():
            item.peak_batch = max(item.peak_batch, batch)

    def _cancel(self, request_id: int) -> None:
        item = self._inflight.get(request_id)
        if item is None or item.cancel_requested:
            return  # already finished, or cancelled twice
        # Keep what was generated: after cancel() the handle no longer gives its output back.
        try:
            _read_tokens(item)
        except Exception:
            log.exception("could not read request %s before cancelling it", request_id)
        item.cancel_requested = True
        item.handle.cancel()

    def _fail(self, request_id: int, exc: BaseException) -> None:
        """Fail one request with a stable code and a human message; the engine's own text stays in the log."""
        code = error_code(exc)
        message = str(exc) if isinstance(exc, _OutOfMemory) else ENGINE_FAILED
        self._results.put(("error", request_id, (code, message)))

    def _step(self) -> None:
        try:
            self._pipe.step()
        except Exception as exc:
            log.exception("engine step failed with %d requests in flight; isolating the one that caused it",
                          len(self._inflight))
            self._isolate(exc)
            return
        self._collect()

    def _isolate(self, exc: BaseException) -> None:
        """After a failed step (which leaves the pipeline unusable), fail only the request that caused it.

        A fresh pipeline takes the requests back one at a time, each stepped until its first token is out (a
        grammar is built then, an image encoded before): the one whose step fails again is the culprit, and the
        others go on. They start over; a streamed request that already sent text cannot, and fails instead.
        """
        suspects = list(self._inflight.items())
        self._inflight.clear()
        self._pipe = self._create_pipeline()
        if len(suspects) == 1:
            self._fail(suspects[0][0], exc)
            return
        for request_id, item in suspects:
            if not self._can_restart(request_id, item, exc):
                continue
            if self._probe(request_id, item):
                continue
            # The culprit: it failed on its own. The pipeline is unusable again; the cleared ones get a fresh one.
            self._fail(request_id, exc)
            cleared = list(self._inflight.items())
            self._inflight.clear()
            self._pipe = self._create_pipeline()
            for innocent_id, innocent in cleared:
                if self._can_restart(innocent_id, innocent, exc):
                    self._add(innocent_id, *innocent.request)

    def _can_restart(self, request_id: int, item: _InFlight, exc: BaseException) -> bool:
        """Whether a request can start over in a fresh pipeline; if not, it ends here."""
        if item.cancel_requested:
            self._results.put(("done", request_id, self._cancelled(item)))
            return False
        if item.stream and item.read_offset:
            log.error("request %s had streamed text before the engine failed; it cannot start over", request_id)
            self._fail(request_id, exc)
            return False
        return True

    def _probe(self, request_id: int, item: _InFlight) -> bool:
        """Add a request to the pipeline and step until it has a first token or ends; False if a step fails."""
        self._add(request_id, *item.request)
        while request_id in self._inflight:
            fresh = self._inflight[request_id]
            if fresh.first_token_at is not None:
                return True
            try:
                self._pipe.step()
            except Exception:
                log.exception("request %s failed the engine step on its own: it is the one that failed it", request_id)
                self._inflight.pop(request_id, None)
                return False
            self._collect()
        return True  # ended (its result is sent), or refused at add (its error is sent)

    def _collect(self) -> None:
        """Send back the requests that ended in the last step (one status call per request per step)."""
        import openvino_genai as ov_genai

        for request_id, item in list(self._inflight.items()):
            status = item.handle.get_status()
            if item.first_token_at is None and item.handle.can_read():
                item.first_token_at = time.monotonic()
                _read_tokens(item)
            if status == ov_genai.GenerationStatus.RUNNING:
                if item.stream and not item.cancel_requested:
                    self._send_text(request_id, item)
                continue
            del self._inflight[request_id]
            try:
                if not item.cancel_requested:
                    _read_tokens(item)
                self._results.put(("done", request_id, self._result(item, status)))
            except Exception as exc:
                log.exception("could not read request %s's result", request_id)
                self._fail(request_id, exc)

    def _send_text(self, request_id: int, item: _InFlight) -> None:
        """Send a streamed request the text its latest tokens completed."""
        try:
            _read_tokens(item)
            text = self._new_text(item)
        except Exception:
            log.exception("could not read request %s's new tokens", request_id)
            return
        if text:
            self._results.put(("text", request_id, text))

    def _new_text(self, item: _InFlight) -> str:
        """The text the tokens since the last call add, decoding only a small window (not the whole output).

        A token can end half-way through a UTF-8 character, which decodes as U+FFFD: that text is held back
        until the next token completes it. The same window technique as text-generation-inference.
        """
        ids = item.token_ids
        if len(ids) == item.read_offset:
            return ""
        before = self._decode(ids[item.prefix_offset:item.read_offset])
        after = self._decode(ids[item.prefix_offset:])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        item.prefix_offset, item.read_offset = item.read_offset, len(ids)
        return after[len(before):]

    def _decode(self, ids: list[int]) -> str:
        """Token ids as text, without NUL: a byte-level vocabulary can emit one, and Postgres text cannot hold it (the
        same answer would then fail on Postgres and succeed on SQLite). Dropping it keeps every shorter decode a
        prefix of a longer one, which the streamed pieces rely on."""
        return self._tokenizer.decode(ids, skip_special_tokens=True).replace("\x00", "") if ids else ""

    def _cancelled(self, item: _InFlight) -> GenerationResult:
        """A cancelled request whose pipeline is gone: the tokens read before, without the engine's figures."""
        return GenerationResult(
            text=self._decode(item.token_ids),
            finish_reason="cancelled", prompt_tokens=None, completion_tokens=len(item.token_ids), ttft_ms=None,
            inference_ms=0.0, batch_size=item.peak_batch, encode_ms=item.encode_ms, first_token_at=item.first_token_at)

    def _result(self, item: _InFlight, status: Any) -> GenerationResult:
        import openvino_genai as ov_genai

        if item.cancel_requested:
            reason = "cancelled"
        elif status == ov_genai.GenerationStatus.FINISHED:
            reason = "length" if item.finish_reason == ov_genai.GenerationFinishReason.LENGTH else "stop"
        else:  # IGNORED without a cancel: the scheduler dropped it, e.g. the KV cache was too small
            raise _OutOfMemory(f"the engine dropped the request ({status.name}): out of KV-cache memory; "
                               f"raise kv_cache_gb or lower max_tokens")
        metrics = item.handle.get_perf_metrics()
        text = self._decode(item.token_ids)
        traced = bool(item.request[2].get("logprobs")) and len(item.logprobs) == len(item.token_ids)
        ends = self._token_ends(item.token_ids, text) if traced else None
        return GenerationResult(
            text=text,
            token_ends=ends,
            token_logprobs=[float(v) for v in item.logprobs] if ends is not None else None,
            finish_reason=reason,
            prompt_tokens=int(metrics.get_num_input_tokens()),
            completion_tokens=int(metrics.get_num_generated_tokens()),
            ttft_ms=float(metrics.get_ttft().mean),
            inference_ms=float(metrics.get_generate_duration().mean),
            batch_size=item.peak_batch,
            encode_ms=item.encode_ms,
            first_token_at=item.first_token_at,
        )


    def _token_ends(self, ids: list[int], text: str) -> list[int] | None:
        """Where each token's text ends in the decoded output, or None if that cannot be told exactly.

        Each token's length is what it adds to a window of the few tokens before it (decoded in one batched call:
        ~6 ms for 470 tokens, against ~500 ms decoding every prefix); a window starting inside a UTF-8 character
        decodes that part the same with and without the token, so it cancels out.
        """
        windows: list[list[int]] = []
        for index in range(len(ids)):
            start = max(0, index - _TOKEN_WINDOW)
            windows += [ids[start:index + 1], ids[start:index]]
        # Without NUL, as _decode gives the text (a NUL token then adds nothing).
        decoded = self._tokenizer.decode(windows, skip_special_tokens=True) if windows else []
        texts = [piece.replace("\x00", "") for piece in decoded]
        ends, total = [], 0
        for index in range(len(ids)):
            total += len(texts[2 * index]) - len(texts[2 * index + 1])
            ends.append(total)
        return ends if total == len(text) else None


def error_code(exc: BaseException) -> ErrorCode:
    """The job error code an engine failure becomes: out_of_memory when memory ran out, else inference_error."""
    if isinstance(exc, MemoryError | _OutOfMemory):
        return ErrorCode.OUT_OF_MEMORY
    # OpenVINO surfaces C++ allocation failures as RuntimeError text.
    text = str(exc).lower()
    if any(sign in text for sign in ("bad_alloc", "out of memory", "failed to allocate")):
        return ErrorCode.OUT_OF_MEMORY
    return ErrorCode.INFERENCE_ERROR


def _read_tokens(item: _InFlight) -> None:
    """Move the tokens generated since the last read into `item` (each read() gives one step's output)."""
    while item.handle.can_read():
        for output in item.handle.read().values():
            item.token_ids.extend(output.generated_ids)
            item.logprobs.extend(output.generated_log_probs)
            item.finish_reason = output.finish_reason


def _generation_config(generation: dict[str, Any]) -> Any:
    import openvino_genai as ov_genai

    config = ov_genai.GenerationConfig()
    config.max_new_tokens = generation["max_tokens"]
    config.ignore_eos = generation["ignore_eos"]
    if generation.get("logprobs"):
        config.logprobs = 1  # the chosen token's log-probability (GenAI returns at most the top one)
    if generation["temperature"] > 0:
        # The engine holds both as float32, and refuses 0: a positive value below float32's range would become 0.
        config.do_sample = True
        config.temperature = max(generation["temperature"], _SMALLEST)
        if generation.get("top_p") is not None:
            config.top_p = max(generation["top_p"], _SMALLEST)
        # Each request seeds its own generator (0 when unset: every call would draw the same text).
        if generation.get("seed") is not None:
            config.rng_seed = generation["seed"]
    if generation.get("regex") is not None:
        config.structured_output_config = ov_genai.StructuredOutputConfig(regex=generation["regex"])
    elif generation.get("json_schema") is not None:
        config.structured_output_config = ov_genai.StructuredOutputConfig(json_schema=generation["json_schema"])
    return config
