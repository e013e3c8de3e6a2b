"""docker-compose.yml (Docker does not run here): its services, commands, settings and volumes are real."""
import dataclasses
import shlex

import click
import yaml

from service.cli import cli
from service.core.config import ENV_PREFIX, Settings
from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
VLQ = ("migrate", "api", "worker", "beat", "flower")


def _command(service: str) -> list[str]:
    command = SERVICES[service]["command"]
    return shlex.split(command) if isinstance(command, str) else command


def test_it_runs_api_worker_beat_flower_redis_postgres_and_a_migration_step():
    assert set(SERVICES) == {*VLQ, "redis", "postgres"}
    assert _command("api")[:2] == ["vlq", "api"] and _command("worker") == ["vlq", "worker"]
    assert _command("beat") == ["vlq", "beat"] and _command("migrate") == ["vlq", "db", "upgrade"]
    assert _command("flower") == ["vlq", "flower"]
    for service in ("api", "worker", "beat"):
        assert SERVICES[service]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    for service in ("api", "worker", "redis", "postgres", "flower"):
        assert SERVICES[service]["healthcheck"]["test"], service


def test_vlq_commands_and_their_options_exist():
    for service in VLQ:
        args = _command(service)
        if args[0] != "vlq":
            continue
        command: click.Command = cli
        words = args[1:]
        while isinstance(command, click.Group):
            command = command.get_command(click.Context(cli), words[0])
            assert command is not None, f"{service}: no `vlq {' '.join(args[1:])}`"
            words = words[1:]
        command.make_context(command.name, list(words))  # raises on an unknown option or a bad value


def test_environment_names_real_settings_and_mounts_the_model_cache_and_blobs():
    fields = {field.name for field in dataclasses.fields(Settings)}
    for service in VLQ:
        environment = SERVICES[service]["environment"]
        assert all(name.startswith(ENV_PREFIX) and name[len(ENV_PREFIX):].lower() in fields for name in environment)
        mounts = dict(volume.split(":")[::-1] for volume in SERVICES[service]["volumes"])
        assert mounts[environment["VLQ_MODEL_CACHE"]] == "models" and mounts[environment["VLQ_BLOB_DIR"]] == "blobs"
        assert environment["VLQ_DATABASE_URL"].startswith("postgresql+psycopg://") and "@postgres:" in environment[
            "VLQ_DATABASE_URL"]
        assert environment["VLQ_REDIS_URL"].startswith("redis://redis:")
    assert {"models", "blobs"} <= set(COMPOSE["volumes"])


def test_flower_needs_a_login_and_is_published_on_loopback_only():
    flower = SERVICES["flower"]
    assert flower["environment"]["VLQ_FLOWER_BASIC_AUTH"] == "${VLQ_FLOWER_BASIC_AUTH:-}"
    assert flower["environment"]["VLQ_DISABLE_AUTH"] == "false"  # so `vlq flower` refuses to start without it
    assert all(port.startswith("127.0.0.1:") for port in flower["ports"])
