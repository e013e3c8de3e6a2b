"""docker-compose.yml (Docker does not run here): its services, commands, settings and volumes are real."""
import dataclasses
import json
import shlex

import click
import yaml

from service.cli import cli
from service.core.config import ENV_PREFIX, Settings
from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
VLQ = ("migrate", "bucket", "api", "worker", "beat", "flower")
AWS_VARIABLES = {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"}


def _command(service: str) -> list[str]:
    command = SERVICES[service]["command"]
    return shlex.split(command) if isinstance(command, str) else command


def test_it_runs_api_worker_beat_flower_redis_postgres_and_a_migration_step():
    assert set(SERVICES) == {*VLQ, "redis", "postgres", "s3"}
    assert _command("api")[:2] == ["vlq", "api"] and _command("worker") == ["vlq", "worker"]
    assert _command("beat") == ["vlq", "beat"] and _command("migrate") == ["vlq", "db", "upgrade"]
    assert _command("flower") == ["vlq", "flower"] and _command("bucket") == ["vlq", "create-bucket"]
    for service in ("api", "worker", "beat"):
        assert SERVICES[service]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        assert SERVICES[service]["depends_on"]["bucket"] == {"condition": "service_completed_successfully"}
        assert SERVICES[service]["depends_on"]["s3"] == {"condition": "service_healthy"}
    for service in ("api", "worker", "redis", "postgres", "flower", "s3"):
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


def test_environment_names_real_settings_and_blobs_and_models_go_to_s3_with_no_shared_volume():
    fields = {field.name for field in dataclasses.fields(Settings)}
    for service in VLQ:
        environment = SERVICES[service]["environment"]
        vlq = {name for name in environment if name.startswith(ENV_PREFIX)}
        assert all(name[len(ENV_PREFIX):].lower() in fields for name in vlq)
        assert set(environment) - vlq == AWS_VARIABLES  # the standard AWS chain reaches the S3 service
        assert environment["AWS_ENDPOINT_URL"].startswith("http://s3:")
        assert environment["VLQ_BLOB_URL"].startswith("s3://") and "VLQ_BLOB_DIR" not in environment
        assert "volumes" not in SERVICES[service], f"{service} mounts a volume: API and workers share none"
        assert environment["VLQ_DATABASE_URL"].startswith("postgresql+psycopg://") and "@postgres:" in environment[
            "VLQ_DATABASE_URL"]
        assert environment["VLQ_REDIS_URL"].startswith("redis://redis:")
    assert set(COMPOSE["volumes"]) == {"redis", "postgres", "s3"}


def test_the_s3_keys_match_the_s3_services_identity():
    identity = json.loads((ROOT / "deploy" / "seaweedfs" / "s3.json").read_text())["identities"][0]
    environment = SERVICES["api"]["environment"]
    assert {"accessKey": environment["AWS_ACCESS_KEY_ID"], "secretKey": environment["AWS_SECRET_ACCESS_KEY"]} in (
        identity["credentials"])
    assert "./deploy/seaweedfs/s3.json:/etc/seaweedfs/s3.json:ro" in SERVICES["s3"]["volumes"]
    assert "-s3.config=/etc/seaweedfs/s3.json" in _command("s3")


def test_flower_needs_a_login_and_is_published_on_loopback_only():
    flower = SERVICES["flower"]
    assert flower["environment"]["VLQ_FLOWER_BASIC_AUTH"] == "${VLQ_FLOWER_BASIC_AUTH:-}"
    assert flower["environment"]["VLQ_DISABLE_AUTH"] == "false"  # so `vlq flower` refuses to start without it
    assert all(port.startswith("127.0.0.1:") for port in flower["ports"])
