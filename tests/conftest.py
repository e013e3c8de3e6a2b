"""Shared fixtures: real Redis, real SQLite and Postgres, the tiny model, and real worker processes."""
from __future__ import annotations

import base64
import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import requests
import yaml
from PIL import Image
from standardwebhooks import Webhook
from werkzeug.serving import make_server

from service.adapters import presence, s3
from service.adapters.db import Database
from service.adapters.migrate import upgrade
from service.app import create_app
from service.core.config import Settings, load_settings
from service.core.webhook_signing import generate_secret

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("VLQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get("VLQ_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# Built once and reused across runs; `make clean` removes it.
MODEL_CACHE = Path(os.environ.get("VLQ_TEST_MODEL_CACHE", ROOT / ".cache" / "test-models"))
TINY = "tiny-random"
# The tenant of the session's API key: not the default one, so a row stamped with the wrong tenant goes missing.
TENANT = "acme"
# Aliases of the tiny export, each served only by the workers a test starts for it.
ALIASES = ("tiny-victim", "tiny-priority", "tiny-grounded", "tiny-sync", "tiny-idle", "tiny-drain", "tiny-unit",
           "tiny-docs")
BROKEN = "tiny-broken"  # looks exported, but its language model is garbage: a worker fails to load it
STUCK = "tiny-stuck"  # its generation_config.json is a FIFO: a worker loading it waits until the test writes to it
# Each database kind a test runs on; the Postgres one carries the `postgres` marker.
DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


# -- markers -----------------------------------------------------------------------------------
# `make test` runs every test; `make test-fast` deselects the markers below. Tests get them from what they use,
# so nobody has to remember: a Postgres database param is `postgres` (DATABASES), a fixture that starts a `vlq`
# process or needs the tiny model is `worker` (WORKER_FIXTURES), and whole modules are marked in MODULE_MARKS.
# A test that starts a process, builds the model or opens Postgres without its marker fails (_require_marker).

WORKER_FIXTURES = {"model_cache", "exported_models", "beat", "start_worker", "worker"}
MODULE_MARKS = {
    "e2e/test_web_ui.py": ["browser"],
    "e2e/test_schemathesis.py": ["schemathesis"],
    "e2e/test_faults.py": ["worker", "postgres"],  # its own stack (tests/e2e/faults.py): Postgres, workers, beat
    "e2e/test_run_command.py": ["worker"],  # `vlq run` starts a worker, beat and Flower
    "e2e/test_multi_host.py": ["worker", "postgres"],  # hosts sharing only Redis, Postgres and S3
    "e2e/chaos/test_chaos.py": ["postgres"],  # the harness's stack (tests/e2e/faults.py) runs on Postgres
}
_running: pytest.Item | None = None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests = Path(__file__).parent
    for item in items:
        if WORKER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.worker)
        module = item.path.relative_to(tests).as_posix() if item.path.is_relative_to(tests) else ""
        for name in MODULE_MARKS.get(module, ()):
            item.add_marker(getattr(pytest.mark, name))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    global _running
    _running = item
    try:
        yield
    finally:
        _running = None


def _require_marker(marker: str, what: str) -> None:
    """Fail the running test (if any: the chaos harness runs outside pytest) unless it carries `marker`."""
    if _running is not None and _running.get_closest_marker(marker) is None:
        raise RuntimeError(f"{_running.nodeid} {what}, so it must be marked `{marker}` (see tests/conftest.py)")


# -- the tiny model ----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def model_cache() -> Path:
    return tiny_model_cache()


def tiny_model_cache() -> Path:
    """The model cache with the tiny Qwen3-VL (built and exported through the real CLI path the first time) and
    its aliases (one export, several registry names, so a test's workers can have a queue of their own)."""
    _require_marker("worker", "needs the tiny model")
    if not (MODEL_CACHE / f"{TINY}-fp16" / "openvino_language_model.xml").exists():
        env = {**os.environ, "VLQ_MODEL_CACHE": str(MODEL_CACHE)}
        subprocess.run([sys.executable, "-m", "service.cli", "model", "build-tiny"], cwd=ROOT, env=env, check=True)
    for alias in ALIASES:
        link = MODEL_CACHE / f"{alias}-fp16"
        if not link.exists():
            link.symlink_to(MODEL_CACHE / f"{TINY}-fp16", target_is_directory=True)
    return MODEL_CACHE


# -- databases ---------------------------------------------------------------------------------

@contextmanager
def fresh_database(kind: str, tmp_path_factory: pytest.TempPathFactory, revision: str = "head") -> Iterator[str]:
    """A new database of `kind` migrated to `revision`: a SQLite file, or a private schema in Postgres."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'vlq.db'}"
        upgrade(url, revision)
        yield url
        return
    with postgres_schema(revision) as url:
        yield url


@contextmanager
def postgres_schema(revision: str = "head") -> Iterator[str]:
    """A private schema in the test Postgres database, migrated to `revision`; yields its URL. Dropped afterwards."""
    _require_marker("postgres", "uses Postgres")
    schema = f"vlq_test_{uuid.uuid4().hex[:10]}"
    dsn = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    upgrade(url, revision)
    try:
        yield url
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(scope="session", params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A freshly migrated database of each kind, for the whole session."""
    with fresh_database(request.param, tmp_path_factory) as url:
        yield url


@pytest.fixture(params=DATABASES)
def fresh_database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database of each kind for this test alone, for passes that act on every row (broker, retention)."""
    with fresh_database(request.param, tmp_path_factory) as url:
        yield url


@pytest.fixture(scope="module")
def module_db(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """A database of the session's kind for one module alone: the session's beat and workers never touch its rows
    (they would ingest, send or end a test's batches while the test looks at them)."""
    kind = "sqlite" if database_url.startswith("sqlite") else "postgres"
    with fresh_database(kind, tmp_path_factory) as url:
        database = Database(url)
        yield database
        database.dispose()


# -- S3 ----------------------------------------------------------------------------------------

@dataclass
class S3Server:
    """moto's S3 server on a loopback port: the real S3 HTTP protocol, which clients reach as they would AWS."""

    server: Any
    port: int
    env: dict[str, str]  # the standard AWS variables that point a client (or a worker process) at it

    @property
    def endpoint(self) -> str:
        return self.env["AWS_ENDPOINT_URL"]

    def client(self) -> Any:
        return s3.client()

    def bucket(self) -> str:
        """A new empty bucket, so tests do not see each other's objects."""
        name = f"vlq-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        """Take the server down (its objects stay: moto keeps them in this process) until `start`."""
        self.server.stop()

    def start(self) -> None:
        self.server = moto_server(self.port)


def moto_server(port: int) -> Any:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # it would log every S3 request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One S3 server for the session. Its AWS_* variables are set in this process (the API under test reads them
    as any AWS client does) and so reach the worker processes tests start."""
    server = moto_server(0)
    port = server.get_host_and_port()[1]
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "vlq-test",
           "AWS_SECRET_ACCESS_KEY": "vlq-test", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    handle = S3Server(server=server, port=port, env=env)
    yield handle
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    handle.server.stop()


# -- configuration -----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def config_file(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One config file that the test's API and its worker processes both read (as VLQ_CONFIG). Its model folder
    stays empty until a test needs the models (`exported_models`): the API never reads it."""
    tmp = tmp_path_factory.mktemp("config")
    config = {
        "database_url": database_url,
        "redis_url": REDIS_URL,
        "blob_dir": str(tmp / "blobs"),
        "model_cache": str(tmp / "models"),
        "batch_size": 4,
        "default_model": TINY,
        "job_timeout_s": 60,
        "heartbeat_interval_s": 0.5,
        "heartbeat_ttl_s": 3,
        "sweep_interval_s": 1,
        "dispatch_grace_s": 1,
        "shutdown_grace_s": 10,
        # Webhooks: a fast schedule and short timeouts, and loopback allowed so the test receiver can be reached.
        "webhook_retry_schedule_s": [0, 0.2, 0.3, 0.4, 1.2],
        "webhook_timeout_s": 1,
        "egress_allow_cidrs": ["127.0.0.0/8"],
        "sync_timeout_s": 60,
        # Tests send many keyless and wrong-key requests from one address; test_auth.py turns the limit on.
        "auth_failure_rate_per_s": 0,
        # The tiny model's bound is 128x128 pixels: 16 image tokens of 32x32. This preset lowers it to 64x64.
        "presets": {"thumbnail": {"prompt": "What is in this picture?", "max_pixels": 64 * 64}},
        "models": {
            TINY: {"source": "builtin:tiny-random", "weight_format": "fp16", "max_pixels": 128 * 128},
            # Aliases of the same export, each served only by the workers a test starts for it
            # (no test starts one for tiny-idle: its jobs stay queued).
            **{alias: {"source": "builtin:tiny-random", "weight_format": "fp16", "max_pixels": 128 * 128}
               for alias in (*ALIASES, BROKEN, STUCK)},
        },
    }
    (tmp / "models").mkdir()
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    redis.Redis.from_url(REDIS_URL).flushdb()
    return path


@pytest.fixture(scope="session")
def exported_models(config_file: Path, model_cache: Path) -> Path:
    """The session's own model folder: the tiny export and its aliases linked in, and a broken and a stuck copy."""
    models = config_file.parent / "models"
    compiled = model_cache / ".compiled"  # OpenVINO's compiled-model cache, kept warm across sessions
    compiled.mkdir(exist_ok=True)
    (models / ".compiled").symlink_to(compiled, target_is_directory=True)
    for name in (TINY, *ALIASES):
        (models / f"{name}-fp16").symlink_to(model_cache / f"{TINY}-fp16", target_is_directory=True)
    _linked_export(model_cache / f"{TINY}-fp16", models / f"{BROKEN}-fp16", "openvino_language_model.xml")
    (models / f"{BROKEN}-fp16" / "openvino_language_model.xml").write_text("<net>this is not a model</net>")
    _linked_export(model_cache / f"{TINY}-fp16", models / f"{STUCK}-fp16", "generation_config.json")
    os.mkfifo(models / f"{STUCK}-fp16" / "generation_config.json")
    return models


def _linked_export(source: Path, target: Path, missing: str) -> None:
    """A copy of an export, every file linked to the original but `missing`, which the caller puts there."""
    target.mkdir()
    for item in source.iterdir():
        if item.name != missing:
            (target / item.name).symlink_to(item)


def release_stuck_model(config_file: Path) -> None:
    """Let a worker stuck loading STUCK go on: an empty read of its FIFO fails the load (the model is unavailable)."""
    fifo = config_file.parent / "models" / f"{STUCK}-fp16" / "generation_config.json"
    deadline = time.monotonic() + 60  # the engine process may still be starting, not yet reading
    while time.monotonic() < deadline:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # ENXIO while nothing is reading it
            return
        except OSError:
            time.sleep(0.1)


@pytest.fixture(scope="session")
def settings(config_file: Path) -> Settings:
    return load_settings(environ={"VLQ_CONFIG": str(config_file)})


# -- processes ---------------------------------------------------------------------------------

class WorkerProcess:
    """A real `vlq worker` subprocess (or another `vlq` service command, such as `beat`)."""

    def __init__(self, config_file: Path, log_path: Path, command: str = "worker", *, cwd: Path = ROOT,
                 **env: str) -> None:
        _require_marker("worker", f"starts `vlq {command}`")
        self.log_path = log_path
        self._log = open(log_path, "wb")
        # PYTHONPATH: this checkout's code, whatever the working directory (a host of its own, say).
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", command], cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, "VLQ_CONFIG": str(config_file), "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **env},
        )
        self.name: str | None = None

    def wait_live(self, model: str, timeout: float = 300, redis_url: str = REDIS_URL) -> str:
        """Wait until this process announces `model` live; returns its worker name."""
        client = redis.Redis.from_url(redis_url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}:\n{self.log()}")
            for name, info in presence.live_workers(client).items():
                if info.get("pid") == self.process.pid and info["models"].get(model, {}).get("status") == "live":
                    self.name = name
                    return name
            time.sleep(0.2)
        raise TimeoutError(f"worker never served {model}:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@pytest.fixture(scope="session")
def beat(config_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """`vlq beat`: the periodic broker, orphan recovery, batch and webhook passes, for as long as workers run."""
    process = WorkerProcess(config_file, tmp_path_factory.mktemp("beat-logs") / "beat.log", "beat")
    yield process
    process.stop()


@pytest.fixture(scope="session")
def start_worker(config_file: Path, exported_models: Path, beat: WorkerProcess,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Factory for extra workers (a test's own model alias, batch size...); all are stopped at the end."""
    started: list[WorkerProcess] = []
    logs = tmp_path_factory.mktemp("worker-logs")

    def start(models: str, **env: str) -> WorkerProcess:
        worker = WorkerProcess(config_file, logs / f"worker-{len(started)}.log", VLQ_MODELS=models, **env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="session")
def worker(start_worker: Any) -> WorkerProcess:
    """The shared worker serving tiny-random for the whole session (per database)."""
    process = start_worker(TINY)
    process.wait_live(TINY)
    return process


@pytest.fixture(scope="session")
def app(settings: Settings) -> Any:
    return create_app(settings)


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    """A connection pool on the test's database (a module's own `settings` fixture decides which one)."""
    database = Database(settings.database_url)
    yield database
    database.dispose()


def make_key(settings: Settings, **spec: Any) -> str:
    """A new API key's secret; `spec` as for `vlq keys create` (name, tenant, admin, rate_limit_rps, ...)."""
    from service.core.keys import KeySpec, create_key

    database = Database(settings.database_url)
    try:
        with database.session() as session:
            _, secret = create_key(session, KeySpec.from_fields({"name": "test", **spec}))
    finally:
        database.dispose()
    return secret


def keyed(test_client: Any, secret: str | None) -> Any:
    """A Flask test client that sends `secret` as its bearer key on every request."""
    if secret is not None:
        test_client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {secret}"
    return test_client


@pytest.fixture(scope="session")
def api_key(settings: Settings) -> str:
    """The session's key: tenant `acme`, no rate limit or quota (the tests poll fast and leave jobs queued)."""
    return make_key(settings, name="session", tenant=TENANT, rate_limit_rps=0, max_queued_jobs=0)


@pytest.fixture
def client(app: Any, api_key: str) -> Any:
    return keyed(app.test_client(), api_key)


@pytest.fixture
def http(api_key: str) -> Iterator[requests.Session]:
    """`requests` as a client of the live server uses it: with the session's key on every request."""
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {api_key}"
        yield session


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """`app` on a real loopback HTTP server, for clients that need a URL (the openai SDK, requests, the CLI)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


@pytest.fixture(scope="session")
def live_server(app: Any) -> Iterator[str]:
    """The session's app on a real loopback HTTP server."""
    with serve(app) as url:
        yield url


# -- inputs ------------------------------------------------------------------------------------

def make_image(fmt: str = "PNG", size: tuple[int, int] = (96, 64), color: tuple[int, int, int] = (200, 30, 30),
               **save_args: Any) -> bytes:
    """A small real image, encoded in `fmt`."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


def jpeg_bomb(size: tuple[int, int] = (6000, 6000)) -> bytes:
    """A few hundred bytes whose header claims `size`: the frame header, the scan's first bytes, the end marker."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (255, 255, 255)).save(buffer, "JPEG", quality=10)
    data = buffer.getvalue()
    scan = data.index(b"\xff\xda")
    header_end = scan + 2 + int.from_bytes(data[scan + 2:scan + 4], "big")
    return data[:header_end + 40] + b"\xff\xd9"


def data_url(image: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(image).decode()}"


def wait_for_status(client: Any, job_id: str, statuses: set[str], timeout: float = 60,
                    resource: str = "jobs") -> dict[str, Any]:
    """Poll GET /v1/{resource}/{id} (a job, or a batch) until its status is one of `statuses`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = client.get(f"/v1/{resource}/{job_id}").get_json()
        if found["status"] in statuses:
            return found
        time.sleep(0.05)
    raise TimeoutError(f"{resource} {job_id} stayed {found['status']}")


# -- webhook receiver --------------------------------------------------------------------------

@dataclass
class Delivery:
    """One request the receiver got: its webhook-id, whether the signature verified, the payload, its answer."""

    webhook_id: str
    verified: bool
    payload: dict[str, Any] | None
    answered: int | None  # the status it answered, None if it was stalled or timed out
    body: bytes = b""  # exactly as received, with its headers: for verifiers other than standardwebhooks
    headers: dict[str, str] = field(default_factory=dict)


class Receiver:
    """A real HTTP server on loopback that verifies every request with `standardwebhooks` and answers from a script.

    Script entries: a status code, (status, {headers}), "timeout" (answers only after the sender gave up),
    or "stall" (holds the request until `release()`; `stalled` is set when one arrives). Then 200s.
    """

    def __init__(self, timeout_s: float) -> None:
        self.secret = generate_secret()
        self.deliveries: list[Delivery] = []
        self.stalled = threading.Event()
        self._released = threading.Event()
        self._script: list[Any] = []
        self._lock = threading.Lock()
        self._timeout_s = timeout_s
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def script(self, *answers: Any) -> None:
        self._script = list(answers)

    def release(self) -> None:
        self._released.set()

    def wait_for(self, count: int, timeout: float = 30) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while len(self.deliveries) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.deliveries) >= count, f"got {len(self.deliveries)} deliveries, wanted {count}"
        return self.deliveries

    def close(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                try:
                    payload = Webhook(receiver.secret).verify(body, dict(self.headers))
                    verified = True
                except Exception:
                    payload, verified = json.loads(body or b"null"), False
                with receiver._lock:
                    answer = receiver._script.pop(0) if receiver._script else 200
                    record = Delivery(self.headers.get("webhook-id", ""), verified, payload, None, body,
                                      dict(self.headers))
                    receiver.deliveries.append(record)
                if answer == "stall":
                    receiver.stalled.set()
                    receiver._released.wait(60)
                    return
                if answer == "timeout":
                    time.sleep(receiver._timeout_s + 0.5)
                    return
                status, headers = answer if isinstance(answer, tuple) else (answer, {})
                record.answered = status
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def receiver(settings: Settings) -> Iterator[Receiver]:
    server = Receiver(settings.webhook_timeout_s)
    yield server
    server.close()


def queued_job(runtime: Any, model: str, **fields: Any) -> str:
    """A queued job row for `model`, its image in the runtime's blob store, created by the state machine and never
    sent: the test hands it to `execute_job` itself."""
    from service.core import lifecycle
    from service.core.models import new_id

    job_id = new_id("job")
    fields.setdefault("image_sha256", runtime.blobs.put(make_image()))
    fields.setdefault("max_tokens", 8)
    with runtime.db.session() as session:
        lifecycle.create_job(session, id=job_id, tenant=fields.pop("tenant", TENANT), model=model,
                             prompt="What is this?", priority="bulk", image_format="PNG", image_width=96,
                             image_height=64, temperature=fields.pop("temperature", 0.0),
                             ignore_eos=fields.pop("ignore_eos", True), request_sha256="x", **fields)
    return job_id


def read_job(runtime: Any, job_id: str) -> tuple[Any, list[str]]:
    """A job's row and its event types, in order."""
    from service.core import lifecycle
    from service.core.models import Job

    with runtime.db.session() as session:
        return session.get(Job, job_id), [event.type for event in lifecycle.events(session, job_id)]


def finished_job(database: Any, status: str = "succeeded", model: str = "tiny-priority", **fields: Any) -> str:
    """A job (of the session key's tenant unless `tenant` says otherwise) taken through queued -> running ->
    `status` by the state machine, and so through the outbox."""
    from service.core import lifecycle
    from service.core.models import Job, JobStatus, new_id

    job_id = new_id("job")
    fields.setdefault("tenant", TENANT)
    ending = {name: fields.pop(name) for name in ("error_code", "error_message") if name in fields}  # set by `finish`
    with database.session() as session:
        lifecycle.create_job(session, id=job_id, model=model, prompt="p", priority="bulk", image_sha256="0" * 64,
                             image_format="PNG", image_width=1, image_height=1, max_tokens=4, temperature=0.0,
                             ignore_eos=False, request_sha256="x", **fields)
    with database.session() as session:
        lifecycle.claim(session, job_id, "test-worker")
    with database.session() as session:
        job = session.get(Job, job_id)
        assert lifecycle.finish(session, job, JobStatus(status), result_text="forty-two", prompt_tokens=3,
                                completion_tokens=2, **ending)
    return job_id


def drive_delivery(database: Any, settings: Settings, delivery_id: str, timeout: float = 20) -> Any:
    """Make each due attempt of a delivery (a worker may make some of them) until it is no longer pending."""
    from service.core.models import WebhookDelivery, utcnow
    from workers.webhooks import deliver

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with database.session() as session:
            delivery = session.get(WebhookDelivery, delivery_id)
        if delivery.status != "pending":
            return delivery
        if delivery.next_attempt_at <= utcnow():
            deliver(database, settings, delivery_id)
        time.sleep(0.02)
    raise TimeoutError(f"delivery {delivery_id} still pending")
