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


@pytest.mark.parametrize("kind", DATABASES)
def test_existing_batches_get_their_counts_tokens_and_model(kind, tmp_path_factory):
    with fresh_database(kind, tmp_path_factory, revision="0010") as url:
        database = Database(url)
        with database.engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO batches (id, tenant, status, endpoint, completion_window, priority, created_at, "
                "expires_at) VALUES ('batch_old', 'default', 'in_progress', '/v1/jobs', '24h', 'bulk', "
                "'2026-01-01 00:00:00', '2026-01-02 00:00:00')"))
            for job_id, status, model, sha, tokens in [
                ("job_a", "succeeded", "m1", "x", 10), ("job_b", "failed", "m1", "x", 4),
                ("job_c", "failed", "default-model", "", None),  # refused at ingest: its model is a placeholder
                ("job_d", "cancelled", "m1", "x", None), ("job_e", "running", "m1", "x", 99),
            ]:
                connection.execute(text(
                    "INSERT INTO jobs (id, tenant, batch_id, custom_id, status, model, prompt, priority, max_tokens, "
                    "temperature, ignore_eos, ground_with_ocr, request_sha256, attempts, created_at, prompt_tokens, "
                    "completion_tokens, stream) VALUES (:id, 'default', 'batch_old', :id, :status, :model, 'p', "
                    "'bulk', 1, 0, false, false, :sha, 0, '2026-01-01 00:00:00', :tokens, :tokens, false)"),
                    {"id": job_id, "status": status, "model": model, "sha": sha, "tokens": tokens})
        upgrade(url, "0013_batch_counters")
        with database.engine.begin() as connection:
            row = connection.execute(text(
                "SELECT request_total, request_completed, request_failed, request_cancelled, input_tokens, "
                "output_tokens, model FROM batches")).one()
        database.dispose()
    assert tuple(row) == (5, 1, 2, 1, 14, 14, "m1")
