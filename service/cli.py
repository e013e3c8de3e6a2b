"""The `vlq` command: run the service, migrate, and manage API keys and models."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import redis

from service import client_cli
from service.adapters.db import Database
from service.api.auth import DISABLED_WARNING
from service.core import keys as api_keys  # `keys` is the command group below
from service.core import logs
from service.core.config import ConfigError, Settings, load_settings
from service.core.errors import ApiError
from service.core.shapes import iso
from service.core.tenancy import DEFAULT_TENANT

log = logging.getLogger("vlq")


def main() -> None:
    try:
        cli(standalone_mode=True)
    except ConfigError as exc:
        click.echo(f"vlq: configuration error: {exc}", err=True)
        sys.exit(2)


@click.group()
def cli() -> None:
    """VLQ: batch vision-language jobs on Qwen3-VL + OpenVINO."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _server_settings() -> Settings:
    """Settings for a service process, whose logs then follow `log_format` (JSON lines by default)."""
    settings = load_settings()
    logs.configure(settings.log_format)
    return settings


# -- running --------------------------------------------------------------------------------

@cli.command()
def run() -> None:
    """Migrate, then run the API, one worker, the beat scheduler and Flower until Ctrl-C."""
    settings = _server_settings()
    _require_redis(settings)
    _migrate(settings)
    commands = [["api", "--no-auth-warning"], ["worker"], ["beat"]]  # run warns about disabled auth itself
    problem = _flower_problem(settings)
    if problem is None:
        commands.append(["flower"])
    else:
        click.echo(f"Flower not started: {problem}", err=True)
    children = [subprocess.Popen([sys.executable, "-m", "service.cli", *command]) for command in commands]
    flower_note = f"Flower on {settings.flower_link}  " if problem is None else ""
    click.echo(f"VLQ on http://{settings.host}:{settings.port}  {flower_note}(Ctrl-C stops everything)")
    _warn_if_auth_disabled(settings)
    _supervise(children, settings.shutdown_grace_s + 30)


@cli.command()
@click.option("--workers", default=2, show_default=True, help="API processes.")
@click.option("--threads", default=8, show_default=True, help="Threads per API process.")
@click.option("--no-auth-warning", is_flag=True, hidden=True)
def api(workers: int, threads: int, no_auth_warning: bool) -> None:
    """Serve the HTTP API with gunicorn."""
    settings = _server_settings()
    if not no_auth_warning:
        _warn_if_auth_disabled(settings)
    # Prometheus counters kept per process are not used (they live in Redis, see service.adapters.metrics), so any
    # number of gunicorn workers and hosts render the same /metrics.
    os.execvp(sys.executable, [
        sys.executable, "-m", "gunicorn", "--bind", f"{settings.host}:{settings.port}",
        "--workers", str(workers), "--threads", str(threads), "--worker-class", "gthread",
        "--graceful-timeout", "10", "--config", "python:service.gunicorn_conf", "service.app:create_app()",
    ])


@cli.command()
@click.option("--loglevel", default="INFO", show_default=True)
def worker(loglevel: str) -> None:
    """Run a Celery worker serving every exported model (VLQ_MODELS narrows it)."""
    settings = _server_settings()
    _require_redis(settings)
    from workers.celery_app import app

    app.worker_main(["worker", f"--loglevel={loglevel}", "--hostname", f"vlq-{os.getpid()}@%h",
                     "--pool", "threads", "--concurrency", str(settings.worker_concurrency), "--without-mingle",
                     "--without-gossip"])


@cli.command()
@click.option("--loglevel", default="INFO", show_default=True)
def beat(loglevel: str) -> None:
    """Schedule the periodic maintenance: broker, orphaned jobs, batch expiry, webhook resends, retention.

    Run one (a second one is harmless: every task is idempotent). It rides out Redis outages by itself, and keeps
    its schedule in memory (workers.maintenance.MaintenanceScheduler), so it needs no writable schedule file.
    """
    _server_settings()  # fail on a bad configuration before Celery starts; JSON logs like every service process
    from workers.celery_app import app

    app.Beat(loglevel=loglevel, max_interval=5).run()


@cli.command()
def flower() -> None:
    """Run Flower, Celery's monitor, on flower_host:flower_port, behind flower_basic_auth."""
    settings = _server_settings()
    problem = _flower_problem(settings)
    if problem is not None:
        raise click.ClickException(problem)
    env = dict(os.environ)
    if settings.flower_basic_auth:
        env["FLOWER_BASIC_AUTH"] = settings.flower_basic_auth  # Flower reads it; kept off the command line (ps)
    os.execvpe(sys.executable, [
        sys.executable, "-m", "celery", "-A", "workers.celery_app", "flower",
        f"--address={settings.flower_host}", f"--port={settings.flower_port}",
    ], env)


def _flower_problem(settings: Settings) -> str | None:
    """Why Flower may not start: it shows every tenant's task ids and tracebacks, so it needs a login."""
    if settings.flower_basic_auth or settings.disable_auth:
        return None
    return ("Flower shows every tenant's task ids and tracebacks, so it needs a login while auth is on: set "
            "flower_basic_auth (VLQ_FLOWER_BASIC_AUTH=user:password).")


# -- database -------------------------------------------------------------------------------

@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration to the configured database."""
    _migrate(_server_settings())


# -- API keys -------------------------------------------------------------------------------

@cli.command("create-bucket")
def create_bucket() -> None:
    """Create the bucket `blob_url` names if it is missing (a self-hosted S3's first start), then check it."""
    from service.adapters import s3
    from service.adapters.blobs import BlobStoreUnavailable
    from service.adapters.s3_blobs import S3BlobStore

    settings = _server_settings()
    if not settings.blob_url:
        raise click.ClickException("blob_url is not set: blobs are in the local blob_dir, there is no bucket")
    store = S3BlobStore(s3.S3Location.parse(settings.blob_url), s3.client(settings.s3_addressing_style))
    try:
        created = store.create_bucket()
        store.check()
    except BlobStoreUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{store.describe()}: {'created' if created else 'already there'}")


@cli.group()
def keys() -> None:
    """API keys of every tenant, straight in the database: the operator's tool (an admin key manages only its own
    tenant's keys over HTTP, /v1/keys)."""


@keys.command("create")
@click.option("--name", required=True, help="What the key is for, e.g. the client that will use it.")
@click.option("--tenant", default=DEFAULT_TENANT, show_default=True, help="Whose jobs, batches and files it reaches.")
@click.option("--admin", is_flag=True, help="May manage its own tenant's keys over HTTP (/v1/keys).")
@click.option("--rate-limit", type=float, help="Requests per second (default: rate_limit_rps; 0 is unlimited).")
@click.option("--max-queued", type=int, help="Queued + running jobs of its tenant (default: max_queued_jobs).")
def keys_create(name: str, tenant: str, admin: bool, rate_limit: float | None, max_queued: int | None) -> None:
    """Create a key and print its secret, once: only a hash of it is stored."""
    fields = {"name": name, "tenant": tenant, "admin": admin, "rate_limit_rps": rate_limit,
              "max_queued_jobs": max_queued}
    with _database() as database, database.session() as session:
        try:
            key, secret = api_keys.create_key(session, api_keys.KeySpec.from_fields(fields))
        except ApiError as exc:
            raise click.ClickException(exc.message) from None
    click.echo(f"created {key.id} ({key.name}) for tenant {key.tenant}{', admin' if key.admin else ''}. "
               "The key is shown only now; store it:", err=True)
    click.echo(secret)


@keys.command("list")
def keys_list() -> None:
    """Every key, revoked ones too (never the secrets)."""
    with _database() as database, database.session() as session:
        rows = api_keys.list_keys(session)
    click.echo(f"{'id':<31} {'name':<20} {'tenant':<12} {'prefix':<12} {'admin':<5} {'rps':>6} {'queued':>8}  "
               f"{'last used':<20} revoked")
    for key in rows:
        rps = "default" if key.rate_limit_rps is None else f"{key.rate_limit_rps:g}"
        queued = "default" if key.max_queued_jobs is None else str(key.max_queued_jobs)
        click.echo(f"{key.id:<31} {key.name[:20]:<20} {key.tenant[:12]:<12} {key.prefix:<12} "
                   f"{'yes' if key.admin else 'no':<5} {rps:>6} {queued:>8}  {(iso(key.last_used_at) or '-')[:19]:<20} "
                   f"{(iso(key.revoked_at) or '-')[:19]}")


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke key KEY_ID; requests with it get 401 from now on."""
    with _database() as database, database.session() as session:
        key = api_keys.revoke_key(session, key_id)
        if key is None:
            raise click.ClickException(f"no key with id {key_id!r}")
    click.echo(f"revoked {key_id}")


# -- models ---------------------------------------------------------------------------------

@cli.group()
def model() -> None:
    """The model registry (config.yaml `models:`) and its exports."""


@model.command("list")
def model_list() -> None:
    """Show each registry model and whether it is exported here."""
    from workers.modelstore.registry import local_model

    settings = load_settings()
    for spec in settings.registry.values():
        local = local_model(settings, spec)
        state = "exported" if local.exported else "not exported"
        click.echo(f"{spec.name:<20} {spec.weight_format:<5} {state:<13} {spec.source}  ->  {local.path}")


@model.command("export")
@click.argument("name")
@click.option("--force", is_flag=True, help="Export again even if the files are present.")
def model_export(name: str, force: bool) -> None:
    """Export registry model NAME to OpenVINO in the model cache (once; never on a request path)."""
    _export(load_settings(), name, force)


@model.command("push")
@click.argument("name")
def model_push(name: str) -> None:
    """Upload registry model NAME's export to the bucket `blob_url` names, for workers on other hosts to pull."""
    from service.adapters.blobs import BlobStoreUnavailable
    from workers.modelstore.registry import local_model
    from workers.modelstore.remote import remote_models

    settings = load_settings()
    spec, remote = settings.model(name), remote_models(settings)
    if spec is None:
        raise click.ClickException(f"no model named {name!r}; known: {', '.join(settings.registry)}")
    if remote is None:
        raise click.ClickException("blob_url is not set: models are pushed to its bucket (s3://bucket/prefix)")
    local = local_model(settings, spec)
    if spec.engine == "rapidocr" or not local.exported:
        raise click.ClickException(f"{name}: nothing to push" if spec.engine == "rapidocr" else local.missing_reason())
    started = time.monotonic()
    try:
        manifest = remote.push(local)
    except BlobStoreUnavailable as exc:
        raise click.ClickException(f"{name}: push to {remote.location} failed: {exc}") from None
    size = sum(entry["bytes"] for entry in manifest["files"])
    click.echo(f"{name}: pushed {len(manifest['files'])} files ({size / 1e6:.1f} MB) to {remote.location}models/"
               f"{spec.export_dir_name} in {time.monotonic() - started:.1f}s")


@model.command("pull")
@click.argument("name")
def model_pull(name: str) -> None:
    """Download registry model NAME from the bucket into the model cache (a worker does this itself at start)."""
    from service.adapters.blobs import BlobStoreUnavailable
    from workers.modelstore.registry import local_model
    from workers.modelstore.remote import PullError, remote_models

    settings = load_settings()
    spec, remote = settings.model(name), remote_models(settings)
    if spec is None or remote is None:
        raise click.ClickException(f"no model named {name!r}" if spec is None else "blob_url is not set")
    local = local_model(settings, spec)
    if local.exported:
        click.echo(f"{name}: already here at {local.path}")
        return
    try:
        stats = remote.pull(spec, local.path)
    except (BlobStoreUnavailable, PullError) as exc:
        raise click.ClickException(f"{name}: pull failed (what arrived is kept for the next try): {exc}") from None
    if stats is None:
        raise click.ClickException(f"{name} was never pushed to {remote.location}")
    click.echo(f"{name}: pulled {stats.files} files, {stats.downloaded_bytes} of {stats.total_bytes} bytes downloaded, "
               f"to {local.path} in {stats.seconds:.1f}s")


@model.command("build-tiny")
@click.option("--force", is_flag=True, help="Build again even if it is present.")
def model_build_tiny(force: bool) -> None:
    """Build the tiny random-weight Qwen3-VL (`tiny-random`) offline and export it."""
    from workers.modelstore.registry import TINY_SOURCE

    settings = load_settings()
    names = [spec.name for spec in settings.registry.values() if spec.source == TINY_SOURCE]
    if not names:
        raise click.ClickException(f"no registry model has source {TINY_SOURCE!r}")
    for name in names:
        _export(settings, name, force)


def _export(settings: Settings, name: str, force: bool) -> None:
    from workers.modelstore.export import ExportError, export_model
    from workers.modelstore.registry import builtin_preset, local_model

    spec = settings.model(name)
    if spec is None:
        raise click.ClickException(f"no model named {name!r}; known: {', '.join(settings.registry)}")
    local = local_model(settings, spec)
    if spec.engine == "rapidocr":
        click.echo(f"{name}: nothing to export, its models ship in the rapidocr package ({local.path})")
        return
    if local.exported and not force:
        click.echo(f"{name}: already exported at {local.path}")
        return
    started = time.monotonic()
    try:
        preset = builtin_preset(spec)
        if preset:
            from workers.modelstore.tiny import build_random_checkpoint

            with tempfile.TemporaryDirectory(prefix="vlq-random-") as tmp:
                checkpoint = build_random_checkpoint(Path(tmp) / "checkpoint", preset)
                export_model(checkpoint, local.path, spec.weight_format)
        else:
            export_model(spec.source, local.path, spec.weight_format)
    except ExportError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{name}: exported to {local.path} in {time.monotonic() - started:.1f}s")


for _command in client_cli.COMMANDS:
    cli.add_command(_command)


# -- helpers --------------------------------------------------------------------------------

def _require_redis(settings: Settings) -> None:
    try:
        redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        click.echo(
            f"vlq: Redis is not reachable at {settings.redis_url} ({exc}).\n"
            "  Start one with `redis-server --daemonize yes` (or `docker compose up -d redis`),\n"
            "  or point VLQ_REDIS_URL at yours.",
            err=True,
        )
        sys.exit(1)


@contextmanager
def _database() -> Iterator[Database]:
    database = Database(load_settings().database_url)
    try:
        yield database
    finally:
        database.dispose()


def _warn_if_auth_disabled(settings: Settings) -> None:
    if settings.disable_auth:
        click.secho(f"\n  WARNING: {DISABLED_WARNING}\n", fg="red", bold=True, err=True)


def _migrate(settings: Settings) -> None:
    from service.adapters.migrate import upgrade

    upgrade(settings.database_url)
    click.echo(f"database ready: {settings.database_url}")


def _supervise(children: list[subprocess.Popen[bytes]], stop_timeout_s: float) -> None:
    """Wait on the children; stop all of them when one exits or on Ctrl-C/SIGTERM (a worker gets its grace)."""
    stopped_by_user = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopped_by_user
        stopped_by_user = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
    except KeyboardInterrupt:
        stopped_by_user = True  # the terminal sent SIGINT to the children too
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + stop_timeout_s
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
    if not stopped_by_user:
        sys.exit("vlq: a service process exited; stopped the others")


if __name__ == "__main__":
    main()
