"""Models through the bucket, against a real S3-protocol server: `vlq model push` once, pulls that are checksummed,
atomic (a worker never sees half a model) and resumable."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from service.adapters import s3
from service.cli import cli
from service.core.config import ModelSpec
from tests.conftest import TINY
from workers.modelstore.registry import LocalModel
from workers.modelstore.remote import PullError, RemoteModels

SPEC = ModelSpec(name=TINY, source="builtin:tiny-random", weight_format="fp16")


class _Interrupted(Exception):
    pass


@pytest.fixture
def remote(s3_server: Any) -> RemoteModels:
    return RemoteModels(s3.S3Location.parse(f"s3://{s3_server.bucket()}/vlq"), s3.client())


@pytest.fixture
def source(model_cache: Path) -> LocalModel:
    return LocalModel(SPEC, model_cache / SPEC.export_dir_name)


def _digests(root: Path) -> dict[str, str]:
    return {path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file() and not path.name.startswith(".")}


def test_push_once_then_pull_on_a_fresh_host(remote: RemoteModels, source: LocalModel, tmp_path: Path) -> None:
    uploads = []
    remote.client.meta.events.register("before-parameter-build.s3.PutObject",
                                       lambda **kw: uploads.append(kw["params"]["Key"]))
    manifest = remote.push(source)
    assert {entry["path"] for entry in manifest["files"]} == set(_digests(source.path))
    first = len(uploads)
    remote.push(source)  # again: only the manifest is written, the files are already there
    assert len(uploads) == first + 1 and uploads[-1].endswith("manifest.json")

    target = LocalModel(SPEC, tmp_path / "cache" / SPEC.export_dir_name)
    seen: list[tuple[int, int]] = []
    stats = remote.pull(SPEC, target.path, lambda done, total: seen.append((done, total)))
    assert target.exported and _digests(target.path) == _digests(source.path)
    assert stats.downloaded_bytes == stats.total_bytes == seen[-1][0] == seen[-1][1] > 0
    left = sorted(path.name for path in target.path.parent.iterdir())
    assert left == [f".pull-{SPEC.export_dir_name}.lock", SPEC.export_dir_name]  # no staging folder left behind


def test_an_interrupted_pull_leaves_no_model_and_resumes(remote: RemoteModels, source: LocalModel,
                                                         tmp_path: Path) -> None:
    remote.push(source)
    target = LocalModel(SPEC, tmp_path / SPEC.export_dir_name)

    def stop_after_five(done: int, total: int, calls: list[int] = []) -> None:  # noqa: B006 (a counter)
        calls.append(done)
        if len(calls) == 5:
            raise _Interrupted

    with pytest.raises(_Interrupted):
        remote.pull(SPEC, target.path, stop_after_five)
    assert not target.path.exists() and not target.exported
    staged = tmp_path / f".pull-{SPEC.export_dir_name}"
    kept = sum(path.stat().st_size for path in staged.rglob("*") if path.is_file())
    # And a file cut off mid-download: half of the largest one, as a .part the next pull continues.
    largest = max(source.path.iterdir(), key=lambda path: path.stat().st_size)
    half = largest.stat().st_size // 2
    if not (staged / largest.name).exists():
        (staged / f"{largest.name}.part").write_bytes(largest.read_bytes()[:half])
        kept += half
    stats = remote.pull(SPEC, target.path)
    assert target.exported and _digests(target.path) == _digests(source.path)
    assert kept > 0 and stats.downloaded_bytes == stats.total_bytes - kept
    assert not staged.exists()


def test_a_corrupt_file_fails_the_pull_and_nothing_is_loadable(remote: RemoteModels, source: LocalModel,
                                                              tmp_path: Path) -> None:
    remote.push(source)
    key = remote.location.key("models", SPEC.export_dir_name, "files", "openvino_language_model.xml")
    remote.client.put_object(Bucket=remote.location.bucket, Key=key, Body=b"<net>tampered</net>")
    target = LocalModel(SPEC, tmp_path / SPEC.export_dir_name)
    with pytest.raises(PullError, match="openvino_language_model.xml"):
        remote.pull(SPEC, target.path)
    assert not target.path.exists() and not target.exported
    assert not list((tmp_path / f".pull-{SPEC.export_dir_name}").glob("*.part"))


def test_a_model_never_pushed_is_none(remote: RemoteModels, tmp_path: Path) -> None:
    assert remote.pull(SPEC, tmp_path / SPEC.export_dir_name) is None and not (tmp_path / SPEC.export_dir_name).exists()


def test_vlq_model_push_and_pull(s3_server: Any, source: LocalModel, tmp_path: Path) -> None:
    bucket = s3_server.bucket()
    config = {"blob_url": f"s3://{bucket}/team", "default_model": TINY,
              "models": {TINY: {"source": "builtin:tiny-random", "weight_format": "fp16"}}}
    pusher, puller = tmp_path / "pusher.yaml", tmp_path / "puller.yaml"
    pusher.write_text(yaml.safe_dump({**config, "model_cache": str(source.path.parent)}))
    puller.write_text(yaml.safe_dump({**config, "model_cache": str(tmp_path / "other-host")}))
    pushed = CliRunner(env={"VLQ_CONFIG": str(pusher)}).invoke(cli, ["model", "push", TINY])
    assert pushed.exit_code == 0, pushed.output
    assert f"s3://{bucket}/team/models/{SPEC.export_dir_name}" in pushed.output
    pulled = CliRunner(env={"VLQ_CONFIG": str(puller)}).invoke(cli, ["model", "pull", TINY])
    assert pulled.exit_code == 0, pulled.output
    assert _digests(tmp_path / "other-host" / SPEC.export_dir_name) == _digests(source.path)
    local_only = tmp_path / "local.yaml"
    local_only.write_text(yaml.safe_dump({**config, "blob_url": "", "model_cache": str(source.path.parent)}))
    refused = CliRunner(env={"VLQ_CONFIG": str(local_only)}).invoke(cli, ["model", "push", TINY])
    assert refused.exit_code != 0 and "blob_url" in refused.output
