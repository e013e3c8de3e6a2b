"""The batch state machine on a real database: every allowed transition works from its source state alone and
stamps its time, every other one is refused, an ending records its webhook event, and the counts kept on the row
equal a recount of its items after any mix of transitions."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from itertools import product

import pytest
from sqlalchemy import func, select

from service.adapters.blobs import LocalBlobStore
from service.adapters.db import Database
from service.core import batch_lifecycle, batches, lifecycle
from service.core.models import Batch, BatchStatus, Job, JobStatus, WebhookDelivery, new_id, utcnow
from tests.conftest import TENANT

ALL = list(BatchStatus)
ALLOWED = [(source, target) for source, targets in batch_lifecycle.TRANSITIONS.items() for target in sorted(targets)]
REFUSED = [pair for pair in product(ALL, ALL) if pair not in ALLOWED]
# How the state machine itself takes a new batch to each state.
PATHS: dict[BatchStatus, list[BatchStatus]] = {
    BatchStatus.VALIDATING: [],
    BatchStatus.IN_PROGRESS: [BatchStatus.IN_PROGRESS],
    BatchStatus.FINALIZING: [BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING],
    BatchStatus.COMPLETED: [BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING, BatchStatus.COMPLETED],
    BatchStatus.FAILED: [BatchStatus.FAILED],
    BatchStatus.EXPIRED: [BatchStatus.IN_PROGRESS, BatchStatus.EXPIRED],
    BatchStatus.CANCELLING: [BatchStatus.CANCELLING],
    BatchStatus.CANCELLED: [BatchStatus.CANCELLING, BatchStatus.CANCELLED],
}


def _batch_in(db: Database, status: BatchStatus) -> str:
    """A batch (with a webhook URL of its own) driven into `status` by the state machine."""
    batch_id = new_id("batch")
    with db.session() as session:
        batch_lifecycle.create(session, id=batch_id, tenant=TENANT, endpoint="/v1/jobs", priority="bulk",
                               completion_window="24h", expires_at=utcnow(), webhook_url="http://127.0.0.1:9/hook",
                               webhook_secret="whsec_c2VjcmV0")
    source = BatchStatus.VALIDATING
    for target in PATHS[status]:
        with db.session() as session:
            assert batch_lifecycle.transition(session, batch_id, source, target)
        source = target
    return batch_id


def _events(db: Database, batch_id: str) -> list[str]:
    with db.session() as session:
        return list(session.scalars(select(WebhookDelivery.event_type).where(WebhookDelivery.subject_id == batch_id)))


def test_a_new_batch_is_validating_and_stamped(module_db) -> None:
    batch_id = _batch_in(module_db, BatchStatus.VALIDATING)
    with module_db.session() as session:
        batch = session.get(Batch, batch_id)
        assert batch.status == "validating" and batch.created_at is not None
        assert all(getattr(batch, column) is None for column in batch_lifecycle.STAMPS.values()
                   if column != "created_at")


def test_every_state_is_reachable_and_the_endings_are_the_states_with_no_way_out() -> None:
    reachable = {BatchStatus.VALIDATING} | {target for _, target in ALLOWED}
    assert reachable == set(ALL) and set(PATHS) == set(ALL)
    assert batch_lifecycle.ENDINGS == set(ALL) - set(batch_lifecycle.TRANSITIONS)


@pytest.mark.parametrize(("source", "target"), ALLOWED, ids=lambda status: status.value)
def test_each_transition_works_from_its_source_and_from_no_other_state(module_db, source, target) -> None:
    stamp = batch_lifecycle.STAMPS[target]
    for state in ALL:
        batch_id = _batch_in(module_db, state)
        before = _events(module_db, batch_id)
        with module_db.session() as session:
            moved = batch_lifecycle.transition(session, batch_id, source, target, errors={"object": "list"})
        with module_db.session() as session:
            batch = session.get(Batch, batch_id)
        if state == source:
            assert moved and batch.status == target.value and getattr(batch, stamp) is not None, state
            assert batch.errors == {"object": "list"}  # the transition's own values go with it
            ending = [f"batch.{target.value}"] if target in batch_lifecycle.ENDINGS else []
            assert _events(module_db, batch_id) == before + ending
        else:
            assert not moved and batch.status == state.value and batch.errors is None, state
            assert _events(module_db, batch_id) == before


@pytest.mark.parametrize(("source", "target"), REFUSED, ids=lambda status: status.value)
def test_an_undeclared_transition_is_refused(module_db, source, target) -> None:
    batch_id = _batch_in(module_db, source)
    with module_db.session() as session, pytest.raises(ValueError, match=f"no batch transition {source} -> {target}"):
        batch_lifecycle.transition(session, batch_id, source, target)
    with module_db.session() as session:
        assert session.scalar(select(Batch.status).where(Batch.id == batch_id)) == source.value


def test_the_right_to_end_a_batch_is_taken_once_and_only_in_the_named_states(module_db) -> None:
    running, ended = _batch_in(module_db, BatchStatus.IN_PROGRESS), _batch_in(module_db, BatchStatus.COMPLETED)
    with module_db.session() as session:
        assert not batch_lifecycle.claim_ending(session, running, BatchStatus.CANCELLING)
        assert batch_lifecycle.claim_ending(session, running, BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING)
    with module_db.session() as session:
        assert not batch_lifecycle.claim_ending(session, running, BatchStatus.IN_PROGRESS)
        assert not batch_lifecycle.claim_ending(session, ended, BatchStatus.COMPLETED)  # finalizing_at is set
        # The claim is no state change: the batch moves on by its transitions as before.
        assert session.scalar(select(Batch.status).where(Batch.id == running)) == "in_progress"
        assert batch_lifecycle.transition(session, running, BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING)


# -- the counts on the row ------------------------------------------------------------------------

def _items(db: Database, batch_id: str, good: int, refused: int = 0) -> list[str]:
    """A batch's items, created by the state machine as an ingest creates them; returns the queued ones' ids."""
    common = {"tenant": TENANT, "batch_id": batch_id, "model": "tiny-random", "prompt": "p", "priority": "bulk",
              "max_tokens": 4, "temperature": 0.0, "ignore_eos": False, "request_sha256": "x"}
    rows = [{"id": new_id("job"), "custom_id": f"good-{n}", **common} for n in range(good)]
    rows += [{"id": new_id("job"), "custom_id": f"bad-{n}", **common, "error_code": "invalid_image",
              "error_message": "bad"} for n in range(refused)]
    with db.session() as session:
        return [row["id"] for row in lifecycle.create_jobs(session, rows)]


def _recount(db: Database, batch_id: str) -> dict[str, int]:
    """The counts from the items themselves, as reading a batch computed them before they were kept."""
    ended = [JobStatus.SUCCEEDED.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value]
    with db.session() as session:
        by_status = dict(session.execute(select(Job.status, func.count()).where(Job.batch_id == batch_id)
                                         .group_by(Job.status)).tuples().all())
        tokens = session.execute(select(func.coalesce(func.sum(Job.prompt_tokens), 0),
                                        func.coalesce(func.sum(Job.completion_tokens), 0))
                                 .where(Job.batch_id == batch_id, Job.status.in_(ended))).one()
    return {"request_total": sum(by_status.values()), "request_completed": by_status.get("succeeded", 0),
            "request_failed": by_status.get("failed", 0), "request_cancelled": by_status.get("cancelled", 0),
            "input_tokens": tokens[0], "output_tokens": tokens[1]}


def _kept(db: Database, batch_id: str) -> dict[str, int]:
    with db.session() as session:
        batch = session.get(Batch, batch_id)
        return {name: getattr(batch, name) for name in batch_lifecycle.COUNTS}


def _run(db: Database, job_id: str, worker: str, outcome: JobStatus, tokens: int, retry: bool = False) -> None:
    """A worker's part: claim the job and end it (after a lost attempt first, if `retry`)."""
    with db.session() as session:
        job = lifecycle.claim(session, job_id, worker)
    if retry and job is not None:
        with db.session() as session:
            assert lifecycle.requeue(session, job)
        with db.session() as session:
            job = lifecycle.claim(session, job_id, worker)
    if job is None:  # cancelled before it started
        return
    with db.session() as session:
        assert lifecycle.finish(session, job, outcome, prompt_tokens=tokens, completion_tokens=tokens // 2)


def test_the_counts_on_the_row_equal_a_recount_after_a_mixed_concurrent_run(module_db, tmp_path) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs")
    batch_id = _batch_in(module_db, BatchStatus.IN_PROGRESS)
    queued = _items(module_db, batch_id, good=40, refused=3)
    assert _kept(module_db, batch_id) == _recount(module_db, batch_id)
    cached, single_cancel, workers_part = queued[0], queued[1], queued[2:26]
    with module_db.session() as session:
        source = session.get(Job, queued[2])
        assert lifecycle.complete_from_cache(session, cached, source)
        assert lifecycle.cancel_queued(session, single_cancel)
    # Workers end items (successes, failures, retried ones) while the batch is cancelled: the rest are cancelled
    # in bulk, and items already running still end after it.
    plans = [(job_id, f"w{n % 4}", JobStatus.FAILED if n % 5 == 0 else JobStatus.SUCCEEDED, 10 + n, n % 7 == 0)
             for n, job_id in enumerate(workers_part)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        running = [pool.submit(_run, module_db, *plan) for plan in plans]
        with module_db.sessions() as session:
            batches.cancel(module_db, session, blobs, session.get(Batch, batch_id))
        for future in running:
            future.result()
    batches.maybe_finalize(module_db, blobs, batch_id)
    kept = _kept(module_db, batch_id)
    assert kept == _recount(module_db, batch_id)
    assert kept["request_total"] == 43 and kept["request_completed"] >= 1 and kept["request_cancelled"] >= 15
    assert kept["input_tokens"] > 0
    with module_db.session() as session:
        shown = batch_lifecycle.render(session.get(Batch, batch_id)).dump()
    assert shown["status"] == "cancelled" and shown["request_counts"] == {
        "total": 43, "completed": kept["request_completed"], "failed": kept["request_failed"],
        "cancelled": kept["request_cancelled"]}
    assert shown["usage"]["total_tokens"] == kept["input_tokens"] + kept["output_tokens"]


def test_an_expired_batch_counts_its_cancelled_items_and_the_ones_that_end_after_it(module_db, tmp_path) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs")
    batch_id = _batch_in(module_db, BatchStatus.IN_PROGRESS)  # its window already passed (expires_at is now)
    first, *rest = _items(module_db, batch_id, good=5, refused=1)
    with module_db.session() as session:
        job = lifecycle.claim(session, first, "w1")
    batches.expire_overdue(module_db, blobs)
    with module_db.session() as session:
        assert session.get(Batch, batch_id).status == "expired"
    assert _kept(module_db, batch_id) == _recount(module_db, batch_id)
    assert _kept(module_db, batch_id)["request_cancelled"] == len(rest)
    with module_db.session() as session:  # the item still running ends after its batch did
        assert lifecycle.finish(session, job, JobStatus.SUCCEEDED, prompt_tokens=7, completion_tokens=3)
    assert _kept(module_db, batch_id) == _recount(module_db, batch_id)
    assert _kept(module_db, batch_id)["input_tokens"] == 7
