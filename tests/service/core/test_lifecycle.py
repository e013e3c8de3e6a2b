"""The job state machine on a real database: every allowed transition works once, every other one is refused."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core import lifecycle
from service.core.errors import ErrorCode
from service.core.models import Batch, Job, JobEvent, JobStatus, new_id, utcnow
from tests.conftest import TENANT

ALL = list(JobStatus)


@pytest.fixture
def db(module_db):
    """The module's own database: the running jobs these tests leave must not look orphaned to other tests."""
    return module_db


def _new_job(session: Session, **fields: Any) -> str:
    job_id = new_id("job")
    lifecycle.create_job(session, id=job_id, tenant=TENANT, model="tiny-random", prompt="p", priority="bulk",
                         image_sha256="0" * 64, image_format="PNG", image_width=1, image_height=1, max_tokens=4,
                         temperature=0.0, ignore_eos=False, request_sha256="x", **fields)
    return job_id


def _job_in(db: Any, status: JobStatus) -> str:
    """A job driven into `status` by the state machine itself."""
    with db.session() as session:
        job_id = _new_job(session)
    if status in (JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED) or status == JobStatus.CANCELLED:
        with db.session() as session:
            assert lifecycle.claim(session, job_id, "w1") is not None
    if status.terminal:
        with db.session() as session:
            assert lifecycle.finish(session, session.get(Job, job_id), status)
    return job_id


# Each move the module offers: (source, target, how to attempt it on a job in `source`).
MOVES: list[tuple[JobStatus, JobStatus, Callable[[Session, str], bool]]] = [
    (JobStatus.QUEUED, JobStatus.RUNNING, lambda s, j: lifecycle.claim(s, j, "w2") is not None),
    (JobStatus.QUEUED, JobStatus.CANCELLED, lifecycle.cancel_queued),
    (JobStatus.QUEUED, JobStatus.FAILED,
     lambda s, j: bool(lifecycle.fail_queued(s, [j], ErrorCode.MODEL_UNAVAILABLE, "No worker served it."))),
    (JobStatus.QUEUED, JobStatus.SUCCEEDED,
     lambda s, j: lifecycle.complete_from_cache(s, j, Job(id="job_source", cached_from=None, result_text="t"))),
    (JobStatus.RUNNING, JobStatus.QUEUED, lambda s, j: lifecycle.requeue(s, s.get(Job, j))),
    (JobStatus.RUNNING, JobStatus.SUCCEEDED, lambda s, j: lifecycle.finish(s, s.get(Job, j), JobStatus.SUCCEEDED)),
    (JobStatus.RUNNING, JobStatus.FAILED, lambda s, j: lifecycle.finish(s, s.get(Job, j), JobStatus.FAILED)),
    (JobStatus.RUNNING, JobStatus.CANCELLED, lambda s, j: lifecycle.finish(s, s.get(Job, j), JobStatus.CANCELLED)),
]


def test_the_moves_cover_the_transition_table() -> None:
    assert {(source, target) for source, target, _ in MOVES} == {
        (source, target) for source, targets in lifecycle.TRANSITIONS.items() for target in targets}


@pytest.mark.parametrize(("source", "target", "move"), MOVES, ids=lambda v: getattr(v, "value", ""))
def test_each_move_works_from_its_source_and_from_no_other_state(db, source, target, move) -> None:
    for state in ALL:
        job_id = _job_in(db, state)
        with db.session() as session:
            moved = move(session, job_id)
        with db.session() as session:
            status = session.scalar(select(Job.status).where(Job.id == job_id))
            last = session.scalars(select(JobEvent.type).where(JobEvent.job_id == job_id)
                                   .order_by(JobEvent.id.desc())).first()
            stamped = [column for column in lifecycle.TRANSITIONS[source][target]
                       if getattr(session.get(Job, job_id), column) is None]
        if state == source:
            assert moved and status == target.value and last == f"job.{target.value}", state
            assert not stamped, f"{source} -> {target} left {stamped} unset"
        else:
            assert not moved and status == state.value and last == f"job.{state.value}", state


def test_a_worker_write_is_fenced_by_its_attempt(db) -> None:
    job_id = _job_in(db, JobStatus.RUNNING)
    with db.session() as session:
        first = session.get(Job, job_id)
        assert lifecycle.requeue(session, first)
    with db.session() as session:
        assert lifecycle.claim(session, job_id, "w2") is not None
    with db.session() as session:  # the first attempt's late result must not end the second attempt
        assert not lifecycle.finish(session, first, JobStatus.SUCCEEDED)
        assert session.scalar(select(Job.status).where(Job.id == job_id)) == JobStatus.RUNNING.value


def test_an_undeclared_transition_is_a_programming_error(db) -> None:
    job_id = _job_in(db, JobStatus.SUCCEEDED)
    with db.session() as session, pytest.raises(ValueError, match="no transition succeeded -> queued"):
        lifecycle._transition(session, [Job.id == job_id], JobStatus.SUCCEEDED, JobStatus.QUEUED, values={})
    with db.session() as session, pytest.raises(ValueError, match="the state machine's to choose, not 'running'"):
        lifecycle.create_jobs(session, [{"id": new_id("job"), "status": JobStatus.RUNNING.value}])


def test_a_batch_cancel_moves_only_its_queued_items_each_with_an_event(db) -> None:
    batch_id = new_id("batch")
    with db.session() as session:
        session.add(Batch(id=batch_id, tenant=TENANT, status="in_progress", endpoint="/v1/jobs", priority="bulk",
                          completion_window="24h", created_at=utcnow(), expires_at=utcnow()))
        session.flush()
        queued = [_new_job(session, batch_id=batch_id) for _ in range(3)]
        other = _new_job(session)
    running = queued.pop()
    with db.session() as session:
        assert lifecycle.claim(session, running, "w1") is not None
    with db.session() as session:
        assert lifecycle.cancel_queued_in_batch(session, batch_id) == 2
    with db.session() as session:
        statuses = dict(session.execute(select(Job.id, Job.status)).tuples().all())
        events = session.scalars(select(JobEvent.job_id).where(JobEvent.type == "job.cancelled")).all()
    assert [statuses[job_id] for job_id in queued] == ["cancelled", "cancelled"]
    assert statuses[running] == "running" and statuses[other] == "queued"
    assert sorted(set(events) & {*queued, running, other}) == sorted(queued)


def test_batch_items_start_queued_or_failed_as_the_state_machine_chooses(db) -> None:
    batch_id = new_id("batch")
    common = {"tenant": TENANT, "batch_id": batch_id, "model": "tiny-random", "prompt": "p", "priority": "bulk",
              "max_tokens": 4, "temperature": 0.0, "ignore_eos": False, "request_sha256": "x"}
    good, refused = new_id("job"), new_id("job")
    with db.session() as session:
        session.add(Batch(id=batch_id, tenant=TENANT, status="in_progress", endpoint="/v1/jobs", priority="bulk",
                          completion_window="24h", created_at=utcnow(), expires_at=utcnow()))
        session.flush()
        queued = lifecycle.create_jobs(session, [
            {"id": good, "custom_id": "a", **common},
            {"id": refused, "custom_id": "b", **common, "error_code": "invalid_image", "error_message": "bad"},
        ])
    assert [row["id"] for row in queued] == [good]
    with db.session() as session:
        jobs = {job.id: job for job in session.scalars(select(Job).where(Job.batch_id == batch_id))}
        events = dict(session.execute(select(JobEvent.job_id, JobEvent.type).where(JobEvent.job_id.in_(jobs))).all())
    assert (jobs[good].status, jobs[good].finished_at, events[good]) == ("queued", None, "job.queued")
    assert (jobs[refused].status, events[refused]) == ("failed", "job.failed")
    assert jobs[refused].created_at is not None and jobs[refused].finished_at is not None
