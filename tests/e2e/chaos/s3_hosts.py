"""`--hosts N --s3` for the chaos run: its workers spread over N hosts that share no directory. Each host has its
own working directory and model cache (filled by pulling the model from the bucket at its first worker's start);
blobs and models are on an S3-protocol server (moto's, in the harness process, on loopback)."""
from __future__ import annotations

import itertools
import os
import uuid
from pathlib import Path

from service.adapters import s3
from service.core.config import ModelSpec
from tests.conftest import TINY, moto_server
from workers.modelstore.registry import LocalModel
from workers.modelstore.remote import RemoteModels

SPEC = ModelSpec(name=TINY, source="builtin:tiny-random", weight_format="fp16")


class S3Hosts:
    def __init__(self, root: Path, hosts: int, model_cache: Path) -> None:
        self.root = root
        self.hosts = hosts
        self._server = moto_server(0)
        port = self._server.get_host_and_port()[1]
        # The API and every worker inherit these, as processes on real hosts would read their own.
        os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "chaos",
                           "AWS_SECRET_ACCESS_KEY": "chaos", "AWS_REGION": "us-east-1",
                           "AWS_EC2_METADATA_DISABLED": "true"})
        bucket = f"vlq-chaos-{uuid.uuid4().hex[:8]}"
        client = s3.client()
        client.create_bucket(Bucket=bucket)
        self.blob_url = f"s3://{bucket}/chaos"
        # Pushed once, from the machine that built it; every host pulls it.
        RemoteModels(s3.S3Location.parse(self.blob_url), client).push(
            LocalModel(SPEC, model_cache / SPEC.export_dir_name))
        self._turns = itertools.cycle(range(hosts))

    def place(self, host: int | None = None) -> tuple[int, Path, dict[str, str]]:
        """A host for a new worker (the next in turn, or `host`): its index, working directory and settings."""
        index = next(self._turns) if host is None else host
        path = self.root / f"host-{index}"
        path.mkdir(parents=True, exist_ok=True)
        return index, path, {"VLQ_MODEL_CACHE": str(path / "models")}

    def pulled(self) -> int:
        """Hosts whose cache got the model (by pulling it: none had it)."""
        return sum((self.root / f"host-{i}" / "models" / SPEC.export_dir_name).is_dir() for i in range(self.hosts))

    def local_blob_dirs(self) -> list[Path]:
        return sorted(path for path in self.root.rglob("blobs") if path.is_dir())

    def close(self) -> None:
        self._server.stop()
