"""Which models a live worker serves, what a caller is told about one that none does, and the queue timeout.

A job for a model no live worker serves is accepted (in a cluster that scales workers from zero, its queue is what
starts one), but never silently: the submit answer carries a warning (`warnings` and a `VLQ-Warning` header), and a
job still waiting after `queue_timeout_s` (per priority) of no live worker serving its model ends `failed` as
`model_unavailable`, with the command that fixes it in its message. The synchronous endpoints refuse the same
request at once with the same notice (service.api.compat.sync_chat). The clock counts only time during which the
service was watching (service.adapters.presence.unserved_since): a busy worker's long queue never times out, and
neither does a cluster with no workers at all.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from service.adapters.db import Database
from service.core import lifecycle
from service.core.config import ModelSpec, Settings
from service.core.errors import ErrorCode
from service.core.models import Job, JobStatus, utcnow

log = logging.getLogger(__name__)

# A worker has the model live, or is pulling it from the blob store or loading it (it will be live soon): either
# way, the model is served.
SERVED = frozenset({"live", "loading", "pulling"})
_FAIL_CHUNK = 1000  # jobs one pass fails at most; the next pass takes the rest


@dataclass(frozen=True)
class Notice:
    """Why a model cannot answer now: the code a synchronous request is refused with, or a job's warning."""

    code: ErrorCode
    message: str
    model: str

    @property
    def retryable(self) -> bool:
        """Whether retrying soon may work: a worker is loading the model, or one for it may be starting."""
        return self.code in (ErrorCode.MODEL_LOADING, ErrorCode.NO_WORKER)

    def warning(self) -> dict[str, str]:
        return {"code": self.code.value, "message": self.message, "model": self.model}


def model_states(workers: Mapping[str, Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each model any live worker mentions, with every such worker's state of it (status, and reason if any)."""
    states: dict[str, list[dict[str, Any]]] = {}
    for info in workers.values():
        for model, state in (info.get("models") or {}).items():
            states.setdefault(model, []).append(dict(state or {}))
    return states


def served_models(workers: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """Models a live worker has live or is loading."""
    return {model for model, states in model_states(workers).items()
            if any(state.get("status") in SERVED for state in states)}


def fix(spec: ModelSpec | None, model: str) -> str:
    """The command that makes a worker able to serve `model` (workers log the same when they lack it)."""
    if spec is None:
        return f"add {model!r} to the `models:` registry in config.yaml"
    if spec.engine == "rapidocr":
        return "pip install rapidocr (see requirements.lock)"
    if spec.source == "builtin:tiny-random":
        return "run `vlq model build-tiny` (offline, under a minute)"
    if spec.source.startswith("builtin:"):
        return f"run `vlq model export {model}` (offline: random weights, the real architecture)"
    if Path(spec.source).is_dir():
        return f"run `vlq model export {model}` to export the local checkpoint {spec.source}"
    return (f"run `vlq model export {model}` where the Hugging Face hub is reachable (it downloads {spec.source}) "
            f"and copy the exported folder into each worker's model_cache, or set this model's `source` in "
            f"config.yaml to a local checkpoint directory and export that")


def notice(settings: Settings, model: str, workers: Mapping[str, Mapping[str, Any]]) -> Notice | None:
    """None while a live worker has `model` live; otherwise what keeps it from answering, and what fixes it."""
    states = model_states(workers).get(model, [])
    if any(state.get("status") == "live" for state in states):
        return None
    if any(state.get("status") in ("loading", "pulling") for state in states):
        return Notice(ErrorCode.MODEL_LOADING, f"The model {model!r} is still loading; it answers once loaded.", model)
    reasons = [state["reason"] for state in states if state.get("status") == "unavailable" and state.get("reason")]
    if reasons:
        return Notice(ErrorCode.MODEL_UNAVAILABLE,
                      f"No live worker can serve the model {model!r}: {reasons[0]}. A worker looks for its models "
                      f"when it starts: restart it once that is done.", model)
    how = fix(settings.model(model), model)
    return Notice(ErrorCode.NO_WORKER,
                  f"No live worker serves the model {model!r}: start one that does (`vlq worker`; if it sets "
                  f"VLQ_MODELS, include {model!r}); if none can, {how}.", model)


def warnings(settings: Settings, models: Iterable[str], workers: Mapping[str, Mapping[str, Any]]) -> list[Notice]:
    """The notices for waiting jobs of `models`, each model once, in their order."""
    found = (notice(settings, model, workers) for model in dict.fromkeys(models))
    return [item for item in found if item is not None]


def with_timeout(settings: Settings, item: Notice, priority: str) -> Notice:
    """A queued job's warning: the notice, and how long the job waits for a worker before it fails (a model being
    loaded is served: its clock does not run)."""
    if item.code == ErrorCode.MODEL_LOADING:
        return item
    wait = settings.queue_timeout(priority)
    ending = (f"The job waits for a worker up to {wait:g}s (queue_timeout_s.{priority}), then fails as "
              f"model_unavailable." if wait else "The job waits until a worker serves the model (queue_timeout_s "
              f"is 0 for {priority}).")
    return Notice(item.code, f"{item.message} {ending}", item.model)


def queued_models(db: Database) -> list[tuple[str, str]]:
    """The (model, priority) pairs queued jobs wait on."""
    with db.session() as session:
        return [tuple(row) for row in session.execute(
            select(Job.model, Job.priority).where(Job.status == JobStatus.QUEUED.value).group_by(Job.model,
                                                                                                  Job.priority))]


def fail_unserved(db: Database, settings: Settings, unserved_since: Mapping[str, datetime],
                  now: datetime | None = None) -> int:
    """End as failed (`model_unavailable`) the queued jobs whose model no live worker has served for their
    priority's `queue_timeout_s`: since the job was created, or since the model was last seen served, whichever is
    later. `unserved_since` holds each unserved model's start of that (models a worker serves are not in it).
    Returns how many jobs failed."""
    now = now or utcnow()
    failed = 0
    for model, priority in queued_models(db):
        since, wait = unserved_since.get(model), settings.queue_timeout(priority)
        if since is None or not wait or now - since < timedelta(seconds=wait):
            continue
        cutoff = now - timedelta(seconds=wait)
        message = _failure_message(settings, model, priority, wait)
        with db.session() as session:
            rows = session.execute(select(Job.id, Job.batch_id).where(
                Job.status == JobStatus.QUEUED.value, Job.model == model, Job.priority == priority,
                Job.created_at < cutoff).order_by(Job.id).limit(_FAIL_CHUNK)).all()
            # A batch's items end together (one UPDATE each batch); a job of its own ends alone, with its webhook.
            by_batch: dict[str | None, list[str]] = {}
            for job_id, batch_id in rows:
                by_batch.setdefault(batch_id, []).append(job_id)
            groups = [ids for batch_id, ids in by_batch.items() if batch_id is not None]
            groups += [[job_id] for job_id in by_batch.get(None, [])]
            ended = sum(len(lifecycle.fail_queued(session, ids, ErrorCode.MODEL_UNAVAILABLE, message))
                        for ids in groups)
        if ended:
            log.warning("%d queued %s job(s) for %r failed: no live worker served the model for %gs",
                        ended, priority, model, wait)
        failed += ended
    return failed


def _failure_message(settings: Settings, model: str, priority: str, wait: float) -> str:
    return (f"No live worker served the model {model!r} for {wait:g}s (queue_timeout_s.{priority}). To serve it, "
            f"{fix(settings.model(model), model)}, then start a worker (`vlq worker`).")

