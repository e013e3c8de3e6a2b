"""The Alembic migrations build exactly the schema the models describe."""
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from service.db import Database
from service.models import Base


def test_migrations_match_the_models(database_url):
    database = Database(database_url)
    with database.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata)
    database.dispose()
    assert diff == []
