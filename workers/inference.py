"""Inference tasks. The task is thin: it takes a job id and calls `execute_job`, which tests call directly."""
from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from celery import shared_task, signals
from celery.exceptions import Reject
from PIL import Image
from sqlalchemy.orm import Session

from service.adapters import metrics, token_stream
from service.adapters.blobs import BlobNotFound, BlobStoreUnavailable
from service.adapters.broker import RUN_JOB_TASK, SERVICE_QUEUE
from service.adapters.db import DATABASE_UNAVAILABLE
from service.core import batches, grounding, lifecycle, logs, structured
from service.core.errors import ErrorCode
from service.core.models import Job, JobStatus
from service.core.requests import MAX_SEED
from workers import pages
from workers.engines.base import Engine, EngineError, GenerationRequest, GenerationResult
from workers.engines.images import prepare_image
from workers.runtime import JobTracker, Stopping, WorkerRuntime, current_runtime, set_current_runtime

log = logging.getLogger(__name__)


# How long a claim waits for an unavailable database before the message goes back to the queue.
_CLAIM_RETRY_S = 30.0
# An attempt that found the blob store down pauses this long times its attempt number before handing the job back,
# so max_attempts spread over a store's restart rather than being spent in a second.
_STORAGE_RETRY_S = 5.0


@shared_task(name=RUN_JOB_TASK)
def run_job(job_id: str) -> None:
    try:
        execute_job(current_runtime(), job_id)
    except DATABASE_UNAVAILABLE as exc:
        # Only the claim gives up on the database (a result waits for it as long as the worker lives), so the
        # job is still queued: put its message back instead of acknowledging it away.
        log.warning("job %s: the database stayed unavailable, its task goes back to the queue", job_id)
        raise Reject(exc, requeue=True) from exc
    except Stopping as exc:  # still queued, for the next worker of its model
        log.info("job %s: this worker is stopping, its task goes back to the queue", job_id)
        raise Reject(exc, requeue=True) from exc


def execute_job(runtime: WorkerRuntime, job_id: str) -> str | None:
    """Claim the job, run it on its engine and record how it ended. Returns the final status, or None if not ours
    (or handed back by a stop). Raises Stopping, the job left queued, once this worker's stop began."""
    with runtime.tracking(job_id) as tracker:
        if tracker is None:
            log.info("job %s: already running here, skipping a redelivered message", job_id)
            return None
        job = runtime.db.retrying(lambda session: _claim(runtime, session, job_id), what=f"job {job_id}: claim",
                                  give_up=runtime.give_up_after(_CLAIM_RETRY_S))
        if job is None:
            # Already ended, cancelled while queued, or a redelivered duplicate: nothing to do.
            log.info("job %s: not claimable, skipping", job_id)
            return None
        runtime.claimed(tracker, job)
        if tracker.requeued:  # a stop's grace ran out during the claim
            return None
        logs.bind(batch_id=job.batch_id)  # the task's prerun bound the job id; the batch is known only now
        try:
            return _run_claimed(runtime, job, tracker)
        except Exception as exc:
            # A claimed job must end: left `running` under a live worker, nothing would ever recover it.
            log.exception("job %s: unexpected error", job.id)
            return _finish(runtime, job, JobStatus.FAILED,
                           error=(ErrorCode.INFERENCE_ERROR, f"Unexpected error: {exc!r}"))


@dataclass(frozen=True)
class _Ending:
    """How a job ends before (or instead of) a result: its status and error, and what was generated, if anything."""

    status: JobStatus
    code: ErrorCode
    message: str
    result: GenerationResult | None = None


class _Requeued(Exception):
    """A stop handed the job back and cancelled its generation; another attempt runs it."""


_UNREADABLE = (BlobNotFound, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def _run_claimed(runtime: WorkerRuntime, job: Job, tracker: JobTracker) -> str | None:
    if job.cancel_requested_at is not None or tracker.cancelled:
        return _finish(runtime, job, JobStatus.CANCELLED, error=(ErrorCode.CANCELLED, "Cancelled before it started."))
    engine = runtime.engines.get(job.model)
    if engine is None:  # only consumed queues reach here, so this means a misrouted task
        return _finish(runtime, job, JobStatus.FAILED,
                       error=(ErrorCode.MODEL_UNAVAILABLE, f"This worker does not serve {job.model!r}."))
    seed = _seed(job)
    try:
        if job.page_mode == "per_page":
            return _run_per_page(runtime, job, engine, tracker, seed)
        outcome = _run_whole(runtime, job, engine, tracker, seed)
    except _Requeued:
        return None
    except BlobStoreUnavailable as exc:
        return _retry_for_storage(runtime, job, exc)
    if isinstance(outcome, _Ending):
        return _finish(runtime, job, outcome.status, result=outcome.result, seed=seed,
                       error=(outcome.code, outcome.message))
    result, read = outcome
    parsed, problem = _checked(result, job.response_schema)
    if problem is not None:
        return _finish(runtime, job, JobStatus.FAILED, result=result, seed=seed,
                       error=(ErrorCode.INVALID_OUTPUT, problem))
    # No fields for output max_tokens cut off (no `json` either): there is no value to ground.
    grounded = _ground(runtime, job, parsed, result, read) if read is not None and parsed is not None else None
    return _finish(runtime, job, JobStatus.SUCCEEDED, result=result, parsed=parsed, seed=seed, grounded=grounded)


def _run_whole(runtime: WorkerRuntime, job: Job, engine: Engine, tracker: JobTracker,
               seed: int | None) -> tuple[GenerationResult, list[grounding.Page] | None] | _Ending:
    """One request: the job's image, or (document mode) all its pages, sharing the model's pixel budget.
    With the result, for an extraction, its pages as OCR read them (to ground its fields on)."""
    rows = pages.load(runtime, job) if job.page_mode is not None else []
    bound = _pixel_bound(runtime, job) // max(1, len(rows))
    try:
        if rows:
            prepared = [pages.prepared(runtime, row, bound) for row in rows]
        else:
            blob = runtime.blobs.get(job.image_sha256)
            prepared = [(blob, prepare_image(blob, bound))]
    except _UNREADABLE as exc:
        return _Ending(JobStatus.FAILED, ErrorCode.IMAGE_UNREADABLE, f"The stored image could not be read: {exc}")
    numbers = [row.number for row in rows] or [1]
    blobs = [(number, blob) for number, (blob, _) in zip(numbers, prepared, strict=True)]
    prompt = _prompt(runtime, job, blobs)
    if isinstance(prompt, _Ending):
        return prompt
    text, read = prompt
    result = _generate(runtime, job, engine, tracker, text, [image for _, image in prepared], seed)
    if isinstance(result, _Ending):
        return result
    if not _extracts(runtime, job) or result.finish_reason == "length":
        return result, None  # output cut off has no JSON to ground
    if read is None:
        read = _pages_for_grounding(runtime, job, blobs)  # still tracked: a drain waits for the OCR too
    return result, read


def _run_per_page(runtime: WorkerRuntime, job: Job, engine: Engine, tracker: JobTracker,
                  seed: int | None) -> str | None:
    """One request a page, in order, each page's outcome recorded as it ends; the job's answer joins them.

    A page that fails ends the job failed (the pages before keep their results); a cancel ends it cancelled.
    """
    done: list[tuple[int, GenerationResult]] = []
    for row in pages.load(runtime, job):
        if row.status == pages.DONE:  # an earlier attempt read it already
            done.append((row.number, pages.as_result(row)))
            continue
        try:
            data, image = pages.prepared(runtime, row, _pixel_bound(runtime, job))
        except _UNREADABLE as exc:
            return _finish(runtime, job, JobStatus.FAILED, result=pages.combined(done) if done else None, seed=seed,
                           error=(ErrorCode.IMAGE_UNREADABLE, f"Page {row.number} could not be read: {exc}"))
        prompt = _prompt(runtime, job, [(row.number, data)])
        outcome = prompt if isinstance(prompt, _Ending) else _generate(runtime, job, engine, tracker, prompt[0],
                                                                       [image], seed)
        if isinstance(outcome, _Ending):
            if outcome.result is not None:
                done.append((row.number, outcome.result))
            return _finish(runtime, job, outcome.status, result=pages.combined(done) if done else None, seed=seed,
                           error=(outcome.code, f"Page {row.number}: {outcome.message}"))
        parsed, problem = _checked(outcome, job.response_schema)
        pages.record_result(runtime, row, outcome, parsed, (ErrorCode.INVALID_OUTPUT, problem) if problem else None)
        done.append((row.number, outcome))
        if problem is not None:
            return _finish(runtime, job, JobStatus.FAILED, result=pages.combined(done), seed=seed,
                           error=(ErrorCode.INVALID_OUTPUT, f"Page {row.number}: {problem}"))
    return _finish(runtime, job, JobStatus.SUCCEEDED, result=pages.combined(done), seed=seed)


def _pixel_bound(runtime: WorkerRuntime, job: Job) -> int:
    bound = runtime.settings.registry[job.model].max_pixels  # a preset may only lower the model's bound
    return min(bound, job.max_pixels or bound)


def _prompt(runtime: WorkerRuntime, job: Job,
            blobs: list[tuple[int, bytes]]) -> tuple[str, list[grounding.Page] | None] | _Ending:
    """The job's prompt, with what OCR reads from each page when it asks for grounding (and the pages OCR read,
    which ground an extraction's fields too)."""
    if not job.ground_with_ocr:
        return job.prompt, None
    try:
        read = read_pages(runtime, blobs)
    except _OCRUnavailable as exc:
        return _Ending(JobStatus.FAILED, ErrorCode.MODEL_UNAVAILABLE, str(exc))
    except (EngineError, TimeoutError) as exc:
        return _Ending(JobStatus.FAILED, ErrorCode.INFERENCE_ERROR, f"OCR grounding failed: {exc}")
    return _grounded_prompt(runtime, job, read), read


def _generate(runtime: WorkerRuntime, job: Job, engine: Engine, tracker: JobTracker, prompt: str,
              images: list[Image.Image], seed: int | None) -> GenerationResult | _Ending:
    """Run one request to its end: the result, or how it ended otherwise. Raises _Requeued after a stop."""
    if tracker.cancelled:
        return _Ending(JobStatus.CANCELLED, ErrorCode.CANCELLED, "Cancelled while running.")
    try:
        handle = engine.submit(GenerationRequest(
            prompt=prompt, image=images[0], more_images=tuple(images[1:]), max_tokens=job.max_tokens,
            temperature=job.temperature, top_p=job.top_p, ignore_eos=job.ignore_eos, json_schema=job.response_schema,
            messages=job.messages, stream=job.stream, seed=seed, logprobs=_extracts(runtime, job),
        ))
    except EngineError as exc:
        return _Ending(JobStatus.FAILED, exc.code, str(exc))
    tracker.attach(handle)
    try:
        if job.stream:
            _publish_text(runtime, job.id, handle.stream(timeout=runtime.settings.job_timeout_s))
        result = handle.result(timeout=runtime.settings.job_timeout_s)
    except TimeoutError:
        handle.cancel()
        limit = runtime.settings.job_timeout_s
        return _Ending(JobStatus.FAILED, ErrorCode.INFERENCE_TIMEOUT, f"Generation took longer than {limit}s.")
    except EngineError as exc:
        if tracker.requeued:
            raise _Requeued from None
        return _Ending(JobStatus.FAILED, exc.code, str(exc))
    if tracker.requeued:
        raise _Requeued
    if result.finish_reason == "cancelled":
        return _Ending(JobStatus.CANCELLED, ErrorCode.CANCELLED, "Cancelled while running.", result)
    return result


def _checked(result: GenerationResult, schema: dict[str, Any] | None) -> tuple[Any, str | None]:
    """(parsed JSON, None) for a schema-constrained output that validates, (None, why) for one that does not;
    (None, None) without a schema, or when max_tokens cut it off: the caller's limit, not a fault. It succeeds
    then with finish_reason "length", the partial text and no `json` (as OpenAI answers 200 with "length")."""
    if schema is None:
        return None, None
    parsed, problem = _parse_output(result.text, schema)
    if problem is not None and result.finish_reason == "length":
        return None, None
    return parsed, problem


def _seed(job: Job) -> int | None:
    """The caller's seed, or a fresh one for a sampled job (recorded with its result, to reproduce it); greedy: None."""
    if job.seed is not None or job.temperature <= 0:
        return job.seed
    return secrets.randbelow(MAX_SEED + 1)


def _claim(runtime: WorkerRuntime, session: Session, job_id: str) -> Job | None:
    job = lifecycle.claim(session, job_id, runtime.name)
    if job is not None:
        return job
    # A claim retried after a lost answer to its commit finds the job already running here. No other thread of
    # this worker runs it: this one holds its tracking.
    job = session.get(Job, job_id)
    if job is not None and job.status == JobStatus.RUNNING.value and job.worker == runtime.name:
        return job
    return None


def _retry_for_storage(runtime: WorkerRuntime, job: Job, exc: BlobStoreUnavailable) -> str | None:
    """The store is down, which is no fault of the job: hand it back for another attempt, or fail it with
    storage_unavailable once `max_attempts` are spent."""
    if job.attempts >= runtime.settings.max_attempts:
        return _finish(runtime, job, JobStatus.FAILED, error=(
            ErrorCode.STORAGE_UNAVAILABLE, f"The blob store stayed unavailable through {job.attempts} attempts: {exc}"))
    log.warning("job %s: blob store unavailable on attempt %s (%s); handing it back", job.id, job.attempts, exc)
    runtime.pause(_STORAGE_RETRY_S * job.attempts)
    with runtime.db.session() as session:
        requeued = lifecycle.requeue(session, job)  # False if a stop already handed it back meanwhile
    if requeued:
        runtime.broker.enqueue([job])
    return None


class _OCRUnavailable(Exception):
    pass


def _publish_text(runtime: WorkerRuntime, job_id: str, pieces: Iterator[str]) -> None:
    """Relay a streamed job's text to its Redis stream; if Redis fails, the job still runs to its end."""
    publishing = True
    for text in pieces:
        if not publishing:
            continue
        try:
            token_stream.append(runtime.redis, job_id, text)
        except Exception as exc:
            log.warning("job %s: could not stream its text (%s); the final answer is unaffected", job_id, exc)
            publishing = False


def _extracts(runtime: WorkerRuntime, job: Job) -> bool:
    """Whether this worker grounds the job's fields: an extraction preset on a VLM, with an OCR engine at hand.

    Not in per_page mode: there each page has its own answer, and the job's `fields` describe one answer (a
    document-mode job's, grounded on all its pages); a per_page extraction gets its pages' results, without fields.
    """
    preset = runtime.settings.presets.get(job.preset or "")
    return (runtime.settings.ground_fields and preset is not None and preset.extracts
            and job.response_schema is not None and job.messages is None
            and job.page_mode != "per_page"
            and runtime.ocr is not None and runtime.engines.get(job.model) is not runtime.ocr)


def read_pages(runtime: WorkerRuntime, pages: list[tuple[int, bytes]]) -> list[grounding.Page]:
    """OCR each (page number, stored image) at full resolution (up to the OCR model's bound), words and all."""
    if runtime.ocr is None:
        raise _OCRUnavailable("ground_with_ocr needs an OCR model, and this worker has none.")
    bound = runtime.settings.registry[runtime.ocr.name].max_pixels
    read = []
    for number, page in pages:
        image = prepare_image(page, bound)
        handle = runtime.ocr.submit(GenerationRequest(prompt="", image=image, max_tokens=1, word_boxes=True))
        lines = handle.result(timeout=runtime.settings.job_timeout_s).lines or []
        read.append(grounding.page_from_ocr(number, image.width, image.height, lines))
    return read


def _grounded_prompt(runtime: WorkerRuntime, job: Job, pages: list[grounding.Page]) -> str:
    """The job's prompt followed by the text OCR read from its pages."""
    text = "\n\n".join(f"Page {p.number}:\n{p.text}" if len(pages) > 1 else p.text for p in pages)
    text = text[: runtime.settings.max_prompt_chars]
    return f"{job.prompt}\n\nText read from the image by OCR (it may contain mistakes):\n{text}"


def _pages_for_grounding(runtime: WorkerRuntime, job: Job, blobs: list[tuple[int, bytes]]) -> list[grounding.Page]:
    """The job's pages read by OCR; none if OCR fails, which leaves every value ungrounded (and flagged)."""
    try:
        return read_pages(runtime, blobs)
    except (_OCRUnavailable, EngineError, TimeoutError, OSError, ValueError, Image.DecompressionBombError) as exc:
        log.warning("job %s: OCR for grounding failed (%s); its fields stay ungrounded", job.id, exc)
        return []


def _ground(runtime: WorkerRuntime, job: Job, parsed: Any, result: GenerationResult,
            pages: list[grounding.Page]) -> dict[str, Any]:
    """The extraction's grounded fields on its pages, with the tokens' logprobs where the engine gave them."""
    trace = None
    if result.token_ends is not None and result.token_logprobs is not None:
        trace = grounding.TokenTrace(ends=result.token_ends, logprobs=result.token_logprobs)
    return grounding.ground(parsed, job.response_schema, pages, text=result.text, trace=trace,
                            review_confidence=runtime.settings.review_confidence)


def _parse_output(text: str, schema: dict[str, Any]) -> tuple[Any, str | None]:
    """(parsed JSON, None), or (None, why) when the output is not JSON valid against `schema`.

    With a grammar-constrained schema this fails only if max_tokens cut the output short.
    """
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"The output is not complete JSON ({exc}); raise max_tokens."
    problem = structured.validation_error(parsed, schema)
    return (parsed, None) if problem is None else (None, f"The output does not match the schema: {problem}")


def _finish(runtime: WorkerRuntime, job: Job, status: JobStatus, *, result: GenerationResult | None = None,
            parsed: Any = None, grounded: dict[str, Any] | None = None,
            error: tuple[ErrorCode, str] | None = None, seed: int | None = None) -> str | None:
    values: dict[str, Any] = {} if seed is None else {"seed": seed}
    if result is not None:
        values.update(result_text=result.text, result_json=parsed, result_lines=result.lines,
                      finish_reason=result.finish_reason, prompt_tokens=result.prompt_tokens,
                      completion_tokens=result.completion_tokens, ttft_ms=result.ttft_ms,
                      inference_ms=result.inference_ms, batch_size=result.batch_size, grounding=grounded)
    if error is not None:
        values.update(error_code=error[0], error_message=error[1])
    # The result waits out a database blip for as long as this worker lives: giving up would leave the job
    # running under a live worker, where nothing else would ever end it.
    def record(session: Session) -> Job | None:
        if not lifecycle.finish(session, job, status, **values):
            return None
        return session.get(Job, job.id, populate_existing=True)

    ended = runtime.db.retrying(record, what=f"job {job.id}: result", give_up=runtime.give_up_after(None))
    if ended is None:
        # The orphan pass judged this worker dead and handed the job on; that attempt owns the outcome now.
        log.warning("job %s: attempt %s lost its claim; dropping its outcome", job.id, job.attempts)
        return None
    metrics.record_job(runtime.redis, ended)
    if job.stream:  # after the commit, so a reader that sees the end finds the job ended
        try:
            token_stream.end(runtime.redis, job.id)
        except Exception as exc:
            log.warning("job %s: could not end its stream (%s); its reader falls back to the job's ending", job.id, exc)
    if job.batch_id is not None:
        try:
            batches.maybe_finalize(runtime.db, runtime.blobs, job.batch_id)
        except (*DATABASE_UNAVAILABLE, BlobStoreUnavailable) as exc:  # the periodic batch pass finalizes it
            log.warning("batch %s: not finalized now (%s)", job.batch_id, exc)
    return status.value


@signals.worker_init.connect
def _start_runtime(sender: Any, **_: Any) -> None:
    """Load the models once per worker process, before it consumes anything, and consume only their queues."""
    runtime = WorkerRuntime(sender.app.vlq_settings, name=sender.hostname)
    runtime.start()
    set_current_runtime(runtime)
    # The service queue comes first: its tasks are rare and short, and must not wait behind a backfill.
    sender.app.amqp.queues.select([SERVICE_QUEUE, *runtime.queues()])


@signals.worker_shutting_down.connect
def _drain_runtime(how: str = "Warm", **_: Any) -> None:
    """A warm stop lets running jobs finish within shutdown_grace_s; a cold one requeues them at once."""
    try:
        runtime = current_runtime()
    except RuntimeError:
        return
    runtime.begin_drain(runtime.settings.shutdown_grace_s if how == "Warm" else 0.0)


@signals.worker_shutdown.connect
def _stop_runtime(**_: Any) -> None:
    """Runs after the stop has let running jobs finish or requeued them."""
    try:
        runtime = current_runtime()
    except RuntimeError:
        return  # the worker stopped before its runtime started
    runtime.stop()
    set_current_runtime(None)
