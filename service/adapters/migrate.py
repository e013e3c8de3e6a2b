"""Run Alembic migrations from code (the CLI, `make run` and tests all come through here)."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from service.adapters.db import Database

_ROOT = Path(__file__).resolve().parents[2]


def alembic_config(database_url: str) -> Config:
    config = Config(str(_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(_ROOT / "migrations"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logging"] = False
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database at `database_url` up to `revision`."""
    database = Database(database_url)  # the same engine setup as the app (SQLite folder, pragmas)
    try:
        with database.engine.begin() as connection:
            config = alembic_config(database_url)
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        database.dispose()
