"""Database engine and sessions, shared by the API (one session per request) and the workers."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy.exc
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

# What a database that is down, restarting or unreachable raises (a pool timeout too): the API answers
# 503 database_unavailable, and workers wait and try again (`Database.retrying`).
DATABASE_UNAVAILABLE = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.TimeoutError)

T = TypeVar("T")


class Database:
    """An engine plus a session factory for one database URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _create_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        with self.sessions() as session, session.begin():
            yield session

    def retrying(self, work: Callable[[Session], T], *, what: str, give_up: Callable[[], bool]) -> T:
        """Run `work` in a transaction; while the database is unavailable, wait and run it again until `give_up()`.

        For writes that must not be lost to a database blip (a job's claim, its result). `work` must be safe to
        run again: a commit whose answer was lost may have gone through, so conditional updates only.
        """
        delay = 0.2
        while True:
            try:
                with self.session() as session:
                    return work(session)
            except DATABASE_UNAVAILABLE as exc:
                if give_up():
                    raise
                log.warning("%s: the database is unavailable (%s); retrying in %.1fs", what,
                            str(exc).splitlines()[0], delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def refresh_statistics(self, table: str) -> None:
        """Have Postgres sample a table's statistics again, after a bulk insert. Until autovacuum gets to it, the
        planner sees the table as it was before, and may pick an index that now matches every new row: the send
        records of a 100,000-item ingest (an UPDATE of 500 ids with a `status = 'queued'` fence) each scanned all
        the queued rows through the status index, 305 s in all. SQLite's planner needs no help here."""
        if self.engine.dialect.name == "postgresql":
            with self.engine.begin() as conn:
                conn.exec_driver_sql(f"ANALYZE {table}")

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


def _create_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # pre_ping replaces connections a database restart broke, so the app recovers by itself; a connect
        # timeout keeps a request from hanging on an unreachable server (it gets a 503 instead).
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20,
                             connect_args={"connect_timeout": 5})
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        # WAL lets the API read while a worker writes; busy_timeout waits out short write locks.
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


def after_commit(session: Session, key: str, item: Any) -> None:
    """Remember `item` under `key` until this session's transaction ends; see `on_commit`."""
    session.info.setdefault(key, []).append(item)


def on_commit(sessions: sessionmaker[Session], key: str, handle: Callable[[Any], None]) -> None:
    """Hand each item `after_commit` remembered under `key` to `handle` once its transaction commits.

    A rollback drops them: what was rolled back never happened. `handle` failures are logged, not raised,
    since the transaction is already committed; each user of this keeps a way to catch up (a sweeper, a re-check).
    """

    def committed(session: Session) -> None:
        for item in session.info.pop(key, []):
            try:
                handle(item)
            except Exception as exc:
                log.warning("after-commit %s for %s failed: %s", key, item, exc)

    event.listen(sessions, "after_commit", committed)
    event.listen(sessions, "after_soft_rollback", lambda session, _previous: session.info.pop(key, None))
