"""The synchronous path every compatible endpoint shares: admit, submit at interactive priority, wait, answer.

Each request is an ordinary job (it shows in /v1/jobs, with its figures), so it goes through the same
queues and workers as the rest. Admission refuses early (503) when nothing could answer in time: no
worker serves the model, it is still loading, or too many interactive jobs already wait for it. The wait
is bounded (`sync_timeout_s`); past it the job is cancelled, so nothing runs for a client that has gone.
Families render what comes out in their own shapes; this module speaks in jobs and ApiErrors only.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from service.adapters import presence, token_stream
from service.api.auth import current_caller
from service.api.context import (
    get_blobs,
    get_broker,
    get_db,
    get_group_commit,
    get_job_endings,
    get_redis,
    get_session,
    get_settings,
)
from service.api.errors import as_api_error
from service.core import availability, jobs
from service.core.errors import ApiError, ErrorCode
from service.core.models import Job, JobStatus, Priority

log = logging.getLogger(__name__)

_RETRY = {"Retry-After": "5"}
_NO_RETRY = {"x-should-retry": "false"}  # the OpenAI SDKs' own signal not to retry
# What a synchronous answer can end in besides a bad request, for the endpoints' OpenAPI operations.
SYNC_ERRORS = ("quota_exceeded", "broker_unavailable", "no_worker", "model_loading", "model_unavailable", "overloaded",
               "sync_timeout", "cancelled")
_BLOCK_S = 2.0  # the longest a stream read blocks, well inside the Redis client's socket timeout


def admit(model: str) -> None:
    """Raise a 503 unless a live worker serves `model` and its interactive queue is short enough.

    Only a wait that may end soon carries `Retry-After` (a worker is loading the model, or none mentions it: one may
    be starting). A model every live worker failed to load, or has no export of, needs someone to act: its 503 says
    what to run, has no `Retry-After` and sends `x-should-retry: false`, which the OpenAI SDKs obey, so a client
    does not spin on a model that will not appear.
    """
    settings = get_settings()
    broker = get_broker()
    notice = availability.notice(settings, model, presence.live_workers(get_redis()))
    if notice is not None:
        raise ApiError(notice.code, notice.message, {"model": model},
                       headers=_RETRY if notice.retryable else _NO_RETRY)
    depth = broker.queue_depth(model, Priority.INTERACTIVE.value)
    if depth >= settings.sync_max_queue_depth:
        raise ApiError(ErrorCode.OVERLOADED,
                       f"{depth} requests already wait for {model!r} (the limit is {settings.sync_max_queue_depth}); "
                       f"retry shortly.", {"model": model, "queued": depth}, headers=_RETRY)


def submit(request: jobs.JobRequest, inputs: bytes | list[bytes]) -> Job:
    """Admit the request, then create and enqueue its job (it may come back already answered from the cache)."""
    admit(request.task.options.model)
    job, _ = jobs.submit(get_session(), get_blobs(), get_group_commit(), request, inputs, None, current_caller())
    return job


def answer(request: jobs.JobRequest, inputs: bytes | list[bytes]) -> Job:
    """Submit and wait for the job's ending; returns the succeeded job, or raises its error as an ApiError."""
    job = submit(request, inputs)
    timeout_s = get_settings().sync_timeout_s
    if not get_job_endings().wait(job.id, lambda: jobs.ended(get_db(), job.id), timeout_s):
        raise timed_out(job.id, timeout_s)
    return succeeded(job.id)


def pieces(job: Job) -> Iterator[str | Job]:
    """A streamed job's text as it is generated, then the succeeded job; its error is raised as an ApiError.

    The last text piece completes what was streamed to the job's final text, so the pieces always add up to it
    (a job answered from the cache streams its whole text at once). An empty piece means nothing happened for a
    while: the caller can send a keep-alive, which is also how it finds out that its client has gone.
    """
    timeout_s = get_settings().sync_timeout_s
    deadline = time.monotonic() + timeout_s
    client = get_redis()
    streamed, after = "", "0"
    with get_job_endings().watch(job.id) as announced:
        ended = jobs.ended(get_db(), job.id)
        while True:
            if not ended and time.monotonic() >= deadline:
                raise timed_out(job.id, timeout_s)
            # Block for new text only while the job may still produce some; an announced ending without an
            # end marker (cancelled while queued, its worker lost) is found by the database check below.
            block_ms = int(min(_BLOCK_S, max(0.001, deadline - time.monotonic())) * 1000)
            batch = token_stream.read(client, job.id, after, 0 if ended or announced.is_set() else block_ms)
            marker = False
            for piece in batch:
                after = piece.id
                if piece.text is None:
                    marker = True
                else:
                    streamed += piece.text
                    yield piece.text
            if marker or (ended and not batch):
                break
            if not batch or announced.is_set():
                announced.clear()
                ended = jobs.ended(get_db(), job.id)
            if not batch and not ended:
                yield ""
    final = succeeded(job.id)
    text = final.result_text or ""
    if len(text) > len(streamed) and text.startswith(streamed):
        yield text[len(streamed):]
    yield final


def streamed(job: Job) -> Iterator[str | Job | ApiError]:
    """`pieces`, for a response that streams them: a failure comes as the last item, an ApiError, and a client that
    goes away (found out at the next write: a piece of text, or a keep-alive) gets its job cancelled."""
    ended = False
    try:
        yield from pieces(job)
        ended = True
    except Exception as exc:
        ended = True  # an ApiError from pieces() means the job ended, or was cancelled for timing out
        yield as_api_error(exc)
    finally:
        if not ended:  # the client disconnected mid-stream
            abandon(job.id)


def succeeded(job_id: str) -> Job:
    """The ended job, if it succeeded; otherwise its failure as the ApiError a synchronous caller gets."""
    with get_db().session() as session:
        job = session.get(Job, job_id)
    assert job is not None
    if job.status == JobStatus.SUCCEEDED.value:
        return job
    if job.status == JobStatus.CANCELLED.value:
        raise ApiError(ErrorCode.CANCELLED, f"The job {job.id} was cancelled before it finished.", {"job_id": job.id})
    code = ErrorCode.of(job.error_code)
    headers = _NO_RETRY if code == ErrorCode.MODEL_UNAVAILABLE else _RETRY if code.status == 503 else None
    raise ApiError(code, job.error_message or "The job failed.", {"job_id": job.id}, headers=headers)


def timed_out(job_id: str, timeout_s: float) -> ApiError:
    """Cancel a job its caller stopped waiting for; the error to answer with."""
    abandon(job_id)
    return ApiError(ErrorCode.SYNC_TIMEOUT, f"No answer within {timeout_s:g}s; the job {job_id} was cancelled.",
                    {"job_id": job_id, "timeout_s": timeout_s})


def abandon(job_id: str) -> None:
    """Cancel the job of a request that will not read its answer (timed out, or the client disconnected)."""
    try:
        with get_db().sessions() as session:
            jobs.cancel(session, get_broker(), job_id)
    except Exception:
        log.exception("job %s: could not cancel it after its caller left", job_id)


def model_statuses() -> dict[str, str]:
    """live if any live worker serves the model, else loading, else unavailable (a worker could not load it)."""
    rank = {"live": 3, "loading": 2, "unavailable": 1}
    best: dict[str, str] = {}
    for info in presence.live_workers(get_redis()).values():
        for name, state in info.get("models", {}).items():
            status = state.get("status", "unavailable")
            status = "loading" if status == "pulling" else status  # a worker fetching it from the bucket loads it next
            if rank.get(status, 0) > rank.get(best.get(name, ""), 0):
                best[name] = status
    return best
