"""Hosts that share no directory: each has its own working directory, config file and model cache, and they share
only Redis, Postgres and an S3 bucket, as VMs or pods would. Used by tests/e2e/test_multi_host.py and by the chaos
harness's `--hosts N --s3` run."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from service.core.config import Settings, load_settings
from tests.conftest import ROOT, TINY, WorkerProcess

MODEL_DIR = f"{TINY}-fp16"


class Hosts:
    def __init__(self, root: Path, *, database_url: str, redis_url: str, blob_url: str, s3_env: dict[str, str],
                 **config: Any) -> None:
        self.root = root
        self.s3_env = s3_env
        # Relative paths: each process resolves them in its own host's directory.
        self.config = {
            "database_url": database_url, "redis_url": redis_url, "blob_url": blob_url, "blob_dir": "blobs",
            "model_cache": "models", "batch_size": 4, "default_model": TINY, "job_timeout_s": 30,
            "heartbeat_interval_s": 0.5, "heartbeat_ttl_s": 3, "sweep_interval_s": 1, "dispatch_grace_s": 1,
            "shutdown_grace_s": 5, "egress_allow_cidrs": ["127.0.0.0/8"],
            "models": {TINY: {"source": "builtin:tiny-random", "weight_format": "fp16", "max_pixels": 128 * 128}},
            **config,
        }
        self.processes: list[WorkerProcess] = []

    def dir(self, host: str) -> Path:
        """The host's own directory, with its config file (made on first use)."""
        path = self.root / host
        if not (path / "config.yaml").exists():
            path.mkdir(parents=True, exist_ok=True)
            (path / "config.yaml").write_text(yaml.safe_dump(self.config))
        return path

    def settings(self, host: str) -> Settings:
        """The host's settings, for an API run in the test's process (it uses no local path)."""
        return load_settings(environ={"VLQ_CONFIG": str(self.dir(host) / "config.yaml")})

    def start(self, host: str, command: str = "worker", **env: str) -> WorkerProcess:
        """`vlq <command>` on `host`: its working directory, its config, the S3 variables."""
        path = self.dir(host)
        process = WorkerProcess(path / "config.yaml", path / f"{command}-{len(self.processes)}.log", command,
                                cwd=path, **self.s3_env, **env)
        self.processes.append(process)
        return process

    def cli(self, host: str, *args: str) -> subprocess.CompletedProcess[str]:
        """A `vlq` command on `host` (e.g. `model push`), run to its end."""
        path = self.dir(host)
        return subprocess.run([sys.executable, "-m", "service.cli", *args], cwd=path, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "VLQ_CONFIG": str(path / "config.yaml"),
                                                "PYTHONPATH": str(ROOT), **self.s3_env})

    def give_model(self, host: str, model_cache: Path) -> Path:
        """Put the tiny export in `host`'s own cache (a copy, as `vlq model export` there would leave it)."""
        target = self.dir(host) / "models" / MODEL_DIR
        if not target.exists():
            target.mkdir(parents=True)
            for item in (model_cache / MODEL_DIR).iterdir():
                (target / item.name).write_bytes(item.read_bytes())
        return target

    def model_digests(self, host: str) -> dict[str, str]:
        folder = self.dir(host) / "models" / MODEL_DIR
        return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
                for path in sorted(folder.iterdir()) if path.is_file()}

    def local_blob_dirs(self) -> list[Path]:
        """Any local blob directory a host made: with blobs on S3 there must be none."""
        return sorted(self.root.glob("*/blobs"))

    def stop(self) -> None:
        for process in self.processes:
            process.stop()
