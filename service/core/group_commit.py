"""Jobs accepted together: the submits that arrive while one group commits share the next group's transaction,
broker round trip and record of the sends.

A submit's cost beyond reading its request is mostly per transaction, not per row: the commit, the round trip that
sends the task, the UPDATE that records the send. So one committer thread per process takes every job that waits,
inserts them with the state machine's bulk writer, commits once, sends them in one pipeline and records the sends in
one statement, and each request thread waits for its own job. Alone, a job is a group of one and waits for nothing
but its own work; under load, groups grow with the load (PostgreSQL's group commit works the same way).

Nothing is acknowledged before its group commits, so a process that dies mid-group has accepted nothing it loses.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from service.adapters.db import Database
from service.core import lifecycle
from service.core.models import Job, JobPage
from service.core.ports import Sender

log = logging.getLogger(__name__)

_MAX_GROUP = 256  # rows in one INSERT stay well under SQLite's and Postgres's bound-parameter limits


@dataclass
class _Waiting:
    """A job row (and its page rows) waiting for its group, and then its outcome."""

    row: dict[str, Any]
    pages: list[dict[str, Any]]
    done: threading.Event = field(default_factory=threading.Event)
    job: Job | None = None
    error: BaseException | None = None


class GroupCommit:
    """Inserts, commits and sends new jobs in groups, for the request threads of one process."""

    def __init__(self, db: Database, broker: Sender) -> None:
        self._db = db
        self._broker = broker
        self._waiting: deque[_Waiting] = deque()
        self._arrived = threading.Condition()
        self._pid = 0  # the process the committer thread runs in (a forked child starts its own)
        self.groups = 0  # groups committed by this process: fewer than its jobs when requests arrive together

    def accept(self, row: dict[str, Any], pages: list[dict[str, Any]]) -> Job:
        """Insert a queued job (a row for `lifecycle.create_jobs`) and its page rows, commit, and send it; the job,
        loaded and detached. Raises what its insert raised: IntegrityError if it broke a constraint (only its own
        insert is then undone), or the database's error if the database is down. A broker outage is not an error:
        the job is stored, and the dispatcher pass sends it."""
        waiting = _Waiting(row, pages)
        with self._arrived:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="vlq-group-commit", daemon=True).start()
            self._waiting.append(waiting)
            self._arrived.notify()
        waiting.done.wait()
        if waiting.error is not None:
            raise waiting.error
        assert waiting.job is not None
        return waiting.job

    def _run(self) -> None:
        while True:
            with self._arrived:
                while not self._waiting:
                    self._arrived.wait()
                group = [self._waiting.popleft() for _ in range(min(len(self._waiting), _MAX_GROUP))]
            try:
                self._commit(group)
            except BaseException as exc:  # noqa: BLE001 - a request thread must never wait forever
                log.exception("group commit of %d job(s) failed", len(group))
                for waiting in group:
                    if not waiting.done.is_set():
                        waiting.error = exc
                        waiting.done.set()

    def _commit(self, group: list[_Waiting]) -> None:
        try:
            jobs = self._insert(group)
        except IntegrityError:
            # One row broke a constraint (two requests raced with one Idempotency-Key): each row on its own, so
            # that only its request sees the error.
            jobs = []
            for waiting in group:
                try:
                    jobs += self._insert([waiting])
                except Exception as exc:  # noqa: BLE001 - its request raises it
                    waiting.error = exc
        except Exception as exc:  # noqa: BLE001 - the database is down: every request of the group raises it
            for waiting in group:
                waiting.error = exc
            jobs = []
        # Accepted once committed; a send the broker does not take is left to the dispatcher pass.
        self._broker.enqueue(jobs)
        self.groups += 1
        by_id = {job.id: job for job in jobs}
        for waiting in group:
            waiting.job = by_id.get(waiting.row["id"])
            waiting.done.set()

    def _insert(self, group: list[_Waiting]) -> list[Job]:
        pages = [page for waiting in group for page in waiting.pages]
        with self._db.sessions() as session:
            lifecycle.create_jobs(session, [dict(waiting.row) for waiting in group])  # it fills in a copy
            if pages:
                session.execute(insert(JobPage), pages)
            query = select(Job).where(Job.id.in_([waiting.row["id"] for waiting in group]))
            jobs = list(session.scalars(query.options(selectinload(Job.pages)) if pages else query))
            session.commit()
        return jobs
