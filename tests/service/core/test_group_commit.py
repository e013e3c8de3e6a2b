"""Jobs accepted in groups: concurrent submits share a transaction and a send, and each request still gets its own
outcome (its job, or the error of its own row)."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from service.adapters.broker import Broker, job_queue
from service.adapters.db import Database
from service.core.group_commit import GroupCommit
from service.core.models import Job, JobEvent, JobStatus, new_id
from tests.conftest import TENANT

MODEL = "nobody-serves-this"  # its queue has no consumer: the sent tasks stay there to be counted


@pytest.fixture
def broker(settings, module_db) -> Iterator[Broker]:
    broker = Broker(settings, module_db)
    broker.redis.delete(job_queue(MODEL, "bulk"))
    yield broker
    broker.redis.delete(job_queue(MODEL, "bulk"))
    broker.close()


def _row(**fields: Any) -> dict[str, Any]:
    return {"id": new_id("job"), "tenant": TENANT, "model": MODEL, "prompt": "p", "priority": "bulk",
            "image_sha256": "0" * 64, "image_format": "PNG", "image_width": 1, "image_height": 1, "max_tokens": 4,
            "temperature": 0.0, "ignore_eos": False, "request_sha256": "x", **fields}


@contextmanager
def writes_held(db: Database) -> Iterator[None]:
    """Hold the jobs table's write lock, so a group's insert waits until the block ends."""
    with db.engine.connect() as conn:
        if db.engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.begin()
            conn.execute(text("LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE"))
        yield
        conn.rollback()


def _accept_all(committer: GroupCommit, rows: list[dict[str, Any]]) -> list[Any]:
    """Accept each row from its own thread, as request threads do; each one's job or error, in order."""
    outcomes: list[Any] = [None] * len(rows)

    def accept(index: int) -> None:
        try:
            outcomes[index] = committer.accept(rows[index], [])
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            outcomes[index] = exc

    threads = [threading.Thread(target=accept, args=(index,)) for index in range(len(rows))]
    with writes_held(committer._db):
        threads[0].start()  # the first group: one job, waiting on the lock
        time.sleep(0.3)
        for thread in threads[1:]:
            thread.start()  # they arrive while the first group commits: the next group takes them all
        deadline = time.monotonic() + 10
        while len(committer._waiting) < len(rows) - 1 and time.monotonic() < deadline:
            time.sleep(0.01)
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


def test_jobs_arriving_together_share_one_transaction_and_one_send(module_db, broker):
    committer = GroupCommit(module_db, broker)
    rows = [_row() for _ in range(12)]
    jobs = _accept_all(committer, rows)

    assert committer.groups == 2  # the first job alone, then the eleven that waited for it
    assert [job.id for job in jobs] == [row["id"] for row in rows]
    assert {job.status for job in jobs} == {JobStatus.QUEUED.value}
    with module_db.session() as session:
        stored = session.scalars(select(Job).where(Job.id.in_([row["id"] for row in rows]))).all()
        events = session.scalars(select(JobEvent.type).where(JobEvent.job_id.in_([row["id"] for row in rows]))).all()
    assert len(stored) == 12 and all(job.enqueued_at is not None for job in stored)  # each send recorded
    assert events == ["job.queued"] * 12
    assert broker.queue_depth(MODEL, "bulk") == 12


def test_a_row_that_breaks_a_constraint_fails_its_own_request_only(module_db, broker):
    committer = GroupCommit(module_db, broker)
    key = new_id("key")  # two requests raced with one Idempotency-Key: one of them must lose
    rows = [_row(), _row(idempotency_key=key), _row(idempotency_key=key), _row()]
    outcomes = _accept_all(committer, rows)

    assert outcomes[0].id == rows[0]["id"] and outcomes[3].id == rows[3]["id"]
    winners = [outcome for outcome in outcomes[1:3] if isinstance(outcome, Job)]
    losers = [outcome for outcome in outcomes[1:3] if isinstance(outcome, IntegrityError)]
    assert len(winners) == 1 and len(losers) == 1
    with module_db.session() as session:
        assert session.scalar(select(Job.id).where(Job.idempotency_key == key)) == winners[0].id
    assert broker.queue_depth(MODEL, "bulk") == 3  # the loser was never sent


def test_a_failing_database_fails_each_request_and_sends_nothing(broker, tmp_path):
    empty = Database(f"sqlite:///{tmp_path}/empty.db")  # no tables: every insert fails, as on a database that is down
    committer = GroupCommit(empty, broker)
    outcomes = _accept_all(committer, [_row() for _ in range(3)])

    assert all(isinstance(outcome, OperationalError) and "no such table" in str(outcome) for outcome in outcomes)
    assert broker.queue_depth(MODEL, "bulk") == 0
    empty.dispose()
