"""The database adapter on a real database."""
from __future__ import annotations

from sqlalchemy import text

from service.core import lifecycle
from service.core.models import new_id
from tests.conftest import TENANT


def _estimated_rows(db, table: str) -> float:
    with db.engine.connect() as conn:
        return conn.execute(text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:t)"), {"t": table}).scalar()


def test_refreshed_statistics_show_postgres_the_rows_a_bulk_insert_added(module_db):
    rows = [{"id": new_id("job"), "tenant": TENANT, "model": "m", "prompt": "p", "priority": "bulk",
             "max_tokens": 4, "temperature": 0.0, "request_sha256": "x"} for _ in range(2000)]
    with module_db.session() as session:
        lifecycle.create_jobs(session, rows)
    if module_db.engine.dialect.name != "postgresql":
        module_db.refresh_statistics("jobs")  # nothing to refresh on SQLite; it must not fail either
        return
    before = _estimated_rows(module_db, "jobs")
    module_db.refresh_statistics("jobs")
    assert before < 2000 <= _estimated_rows(module_db, "jobs")
