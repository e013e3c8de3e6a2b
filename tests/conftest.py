"""Shared fixtures: real Redis, real SQLite and Postgres, the tiny model, and real worker processes."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import yaml
from PIL import Image

from service import presence
from service.app import create_app
from service.config import Settings, load_settings
from service.migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("VLQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get("VLQ_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# Built once and reused across runs; `make clean` removes it.
MODEL_CACHE = Path(os.environ.get("VLQ_TEST_MODEL_CACHE", ROOT / ".cache" / "test-models"))
TINY = "tiny-random"


# -- the tiny model ----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def model_cache() -> Path:
    """The tiny Qwen3-VL, built and exported through the real CLI path the first time."""
    if not (MODEL_CACHE / f"{TINY}-fp16" / "openvino_language_model.xml").exists():
        env = {**os.environ, "VLQ_MODEL_CACHE": str(MODEL_CACHE)}
        subprocess.run([sys.executable, "-m", "service.cli", "model", "build-tiny"], cwd=ROOT, env=env, check=True)
    return MODEL_CACHE


# -- databases ---------------------------------------------------------------------------------

@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A freshly migrated database of each kind: a SQLite file, and a private schema in Postgres."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'vlq.db'}"
        upgrade(url)
        yield url
        return
    schema = f"vlq_test_{uuid.uuid4().hex[:10]}"
    dsn = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    upgrade(url)
    yield url
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


# -- configuration -----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def config_file(database_url: str, model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One config file that the test's API and its worker processes both read (as VLQ_CONFIG)."""
    tmp = tmp_path_factory.mktemp("config")
    config = {
        "database_url": database_url,
        "redis_url": REDIS_URL,
        "blob_dir": str(tmp / "blobs"),
        "model_cache": str(model_cache),
        "batch_size": 4,
        "default_model": TINY,
        "job_timeout_s": 60,
        "heartbeat_interval_s": 0.5,
        "heartbeat_ttl_s": 3,
        "sweep_interval_s": 1,
        "models": {
            TINY: {"source": "builtin:tiny-random", "weight_format": "fp16", "max_pixels": 128 * 128},
            # Aliases of the same export, each served only by the workers a test starts for it.
            **{alias: {"source": "builtin:tiny-random", "weight_format": "fp16", "max_pixels": 128 * 128}
               for alias in ("tiny-victim", "tiny-priority", "tiny-grounded")},
        },
    }
    for alias in ("tiny-victim", "tiny-priority", "tiny-grounded"):
        link = model_cache / f"{alias}-fp16"
        if not link.exists():
            link.symlink_to(model_cache / f"{TINY}-fp16", target_is_directory=True)
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    redis.Redis.from_url(REDIS_URL).flushdb()
    return path


@pytest.fixture(scope="session")
def settings(config_file: Path) -> Settings:
    return load_settings(environ={"VLQ_CONFIG": str(config_file)})


# -- processes ---------------------------------------------------------------------------------

class WorkerProcess:
    """A real `vlq worker` subprocess."""

    def __init__(self, config_file: Path, log_path: Path, **env: str) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "worker"], cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, "VLQ_CONFIG": str(config_file), "PYTHONUNBUFFERED": "1", **env},
        )
        self.name: str | None = None

    def wait_live(self, model: str, timeout: float = 120) -> str:
        """Wait until this process announces `model` live; returns its worker name."""
        client = redis.Redis.from_url(REDIS_URL)
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
def start_worker(config_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
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
def client(app: Any) -> Any:
    return app.test_client()


# -- inputs ------------------------------------------------------------------------------------

def make_image(fmt: str = "PNG", size: tuple[int, int] = (96, 64), color: tuple[int, int, int] = (200, 30, 30),
               **save_args: Any) -> bytes:
    """A small real image, encoded in `fmt`."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


def wait_for_status(client: Any, job_id: str, statuses: set[str], timeout: float = 60) -> dict[str, Any]:
    """Poll GET /v1/jobs/{id} until its status is one of `statuses`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").get_json()
        if job["status"] in statuses:
            return job
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} stayed {job['status']}")
