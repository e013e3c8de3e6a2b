"""The interface every inference engine implements: load, warm up, submit a request, cancel it."""
from __future__ import annotations

import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from PIL import Image

from service.core.errors import ErrorCode

# What a client reads when an engine fails its request; the engine's own message (build paths, node names) is
# logged where it happened, never stored in the job.
ENGINE_FAILED = "The engine failed this request."


class EngineError(RuntimeError):
    """The engine failed a request (not the caller's fault); `code` is the job error code it becomes."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.INFERENCE_ERROR) -> None:
        super().__init__(message)
        self.code = code  # inference_error, or out_of_memory when the engine ran out of memory


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    image: Image.Image  # RGB, already scaled to the model's max_pixels
    max_tokens: int
    temperature: float = 0.0
    ignore_eos: bool = False
    json_schema: dict[str, Any] | None = None  # constrain the output to JSON that validates against this
    top_p: float | None = None  # None: the engine's default
    # A conversation instead of `prompt`: the model's chat template is applied over all its turns, the image
    # going where a user turn holds {"type": "image"}.
    messages: list[dict[str, Any]] | None = None
    stream: bool = False  # pass text to the handle as it is generated (RequestHandle.stream)
    logprobs: bool = False  # VLM: return each generated token's log-probability and where it ends in the text
    word_boxes: bool = False  # OCR: each line also carries its words, with their own boxes and confidences
    seed: int | None = None  # sampling: the generator's seed (the same seed and request give the same text)
    # A document's further pages (or a job's further images), after `image`, each already scaled to its share of
    # the pixel budget. Only vision-language engines take them.
    more_images: tuple[Image.Image, ...] = ()

    @property
    def images(self) -> tuple[Image.Image, ...]:
        return (self.image, *self.more_images)


@dataclass(frozen=True)
class GenerationResult:
    """What came out, with the engine's own figures for this request.

    Engines without tokens (OCR) report prompt/completion tokens and ttft_ms as None, and `lines`.
    """

    text: str
    finish_reason: str  # "stop", "length" or "cancelled"
    prompt_tokens: int | None
    completion_tokens: int | None
    ttft_ms: float | None
    inference_ms: float
    batch_size: int  # the most sequences the engine ran together while this request was in it
    lines: list[dict[str, Any]] | None = None  # OCR: [{text, box: [[x, y] x4], confidence, words?}]
    encode_ms: float | None = None  # VLM: tokenizing the prompt and encoding the image, before prefill
    first_token_at: float | None = None  # VLM: time.monotonic() when the first token was out (for latency)
    # VLM, when the request asked for logprobs: per generated token, its end (a character offset in `text`)
    # and its log-probability.
    token_ends: list[int] | None = None
    token_logprobs: list[float] | None = None


class RequestHandle:
    """A submitted request: wait for its result, or cancel it. Engines resolve it from their own thread."""

    def __init__(self, cancel: Callable[[], None]) -> None:
        self._cancel = cancel
        self._done = threading.Event()
        self._result: GenerationResult | None = None
        self._error: BaseException | None = None
        self._pieces: queue.SimpleQueue[str | None] = queue.SimpleQueue()  # streamed text; None once it ended

    def stream(self, timeout: float) -> Iterator[str]:
        """Yield text as the engine generates it, until the request ends (then `result()` answers at once).

        Engines that do not stream yield nothing and simply end. Raises TimeoutError after `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                piece = self._pieces.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError("generation did not finish in time") from None
            if piece is None:
                return
            yield piece

    def add_text(self, text: str) -> None:
        """Called by the engine with each new piece of a streamed request's text."""
        self._pieces.put(text)

    def result(self, timeout: float | None = None) -> GenerationResult:
        """Block until the request ends; raises TimeoutError, or EngineError if the engine failed it."""
        if not self._done.wait(timeout):
            raise TimeoutError("generation did not finish in time")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def cancel(self) -> None:
        """Stop generating; `result()` then returns what was generated so far, finish_reason "cancelled"."""
        self._cancel()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def set_result(self, result: GenerationResult) -> None:
        self._result = result
        self._done.set()
        self._pieces.put(None)

    def set_error(self, error: BaseException) -> None:
        self._error = error
        self._done.set()
        self._pieces.put(None)


class Engine(ABC):
    """One loaded model. Implementations must accept `submit` from many threads at once."""

    name: str

    @abstractmethod
    def load(self) -> None:
        """Load and compile the model; raise with a clear message if it cannot be loaded."""

    @abstractmethod
    def submit(self, request: GenerationRequest) -> RequestHandle:
        """Queue a request for generation and return its handle at once."""

    def warmup(self) -> None:
        """Run one small request, so the first real job does not pay for lazy initialisation."""
        image = Image.new("RGB", (64, 64), (255, 255, 255))
        self.submit(GenerationRequest(prompt="Describe the image.", image=image, max_tokens=2)).result(timeout=300)

    @abstractmethod
    def close(self) -> None:
        """Release the model; pending requests fail."""
