"""The Alembic migrations build exactly the schema the models describe, and carry existing rows forward."""
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from service.adapters.db import Database
from service.adapters.migrate import upgrade
from service.core.models import Base
from tests.conftest import DATABASES, fresh_database


def test_migrations_match_the_models(database_url):
    database = Database(database_url)
    with database.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata)
    database.dispose()
    assert diff == []


@pytest.mark.parametrize("kind", DATABASES)
def test_rows_from_before_tenants_belong_to_the_default_tenant(kind, tmp_path_factory):
    with fresh_database(kind, tmp_path_factory, revision="0005") as url:
        database = Database(url)
        with database.engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO jobs (id, status, model, prompt, priority, max_tokens, temperature, ignore_eos, "
                "ground_with_ocr, request_sha256, attempts, created_at, idempotency_key) VALUES ('job_old', 'queued', "
                "'m', 'p', 'bulk', 1, 0, false, false, 'x', 0, '2026-01-01 00:00:00', 'retry-1')"))
            connection.execute(text(
                "INSERT INTO files (id, filename, purpose, bytes, sha256, created_at) "
                "VALUES ('file_old', 'a.jsonl', 'batch', 1, 'abc', '2026-01-01 00:00:00')"))
        upgrade(url, "0006")  # the revision under test; later ones add columns this raw SQL does not fill
        with database.engine.begin() as connection:
            assert connection.execute(text("SELECT tenant FROM jobs")).scalars().all() == ["default"]
            assert connection.execute(text("SELECT tenant FROM files")).scalars().all() == ["default"]
            # Idempotency keys are now unique per tenant: another tenant may use the same one.
            connection.execute(text(
                "INSERT INTO jobs (id, tenant, status, model, prompt, priority, max_tokens, temperature, ignore_eos, "
                "ground_with_ocr, request_sha256, attempts, created_at, idempotency_key) VALUES ('job_new', 'acme', "
                "'queued', 'm', 'p', 'bulk', 1, 0, false, false, 'x', 0, '2026-01-01 00:00:00', 'retry-1')"))
        database.dispose()
