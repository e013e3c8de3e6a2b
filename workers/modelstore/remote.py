"""Exported models through the blob store's bucket: `vlq model push` uploads one, a worker lacking it pulls it.

Layout: `<prefix>models/<name>-<format>/files/<path>` for each file, then `.../manifest.json` (each file's size and
sha256), written last: a model is in the store once its manifest is. A pull downloads into a staging folder beside
the cache entry, checks every file's sha256, and renames the folder into place only when all are there, so a worker
never loads a partial model; an interrupted pull resumes where it stopped (whole files kept, a partial one continued
with a ranged GET).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from service.adapters import s3
from service.adapters.blobs import BlobNotFound, BlobStoreUnavailable
from service.core.config import ModelSpec, Settings
from workers.host_lock import host_lock
from workers.modelstore.registry import LocalModel

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_CHUNK = 1024 * 1024
_LOCK_WAIT_S = 3600.0  # another worker on this host pulling the same model: wait for it, bounded

Progress = Callable[[int, int], None]  # (bytes in place, bytes in all)


class PullError(Exception):
    """The pull cannot complete (a file's checksum is wrong, a path is unsafe); the message says which."""


@dataclass
class PullStats:
    files: int = 0
    total_bytes: int = 0
    downloaded_bytes: int = 0  # fetched this time; the rest was already staged by an interrupted pull
    seconds: float = 0.0


class RemoteModels:
    """The models part of the bucket that `blob_url` names."""

    def __init__(self, location: s3.S3Location, client: Any) -> None:
        self.location = location
        self.client = client

    def push(self, model: LocalModel) -> dict[str, Any]:
        """Upload `model`'s export (files already there with the same sha256 are skipped), then its manifest."""
        entries = []
        for path in _export_files(model.path):
            relative = path.relative_to(model.path).as_posix()
            digest, size = _file_sha256(path)
            key = self._key(model.spec, "files", relative)
            if self._stored_sha256(key) != digest:
                with s3.errors(f"uploading {relative}"):
                    self.client.upload_file(str(path), self.location.bucket, key, Config=s3.TRANSFER,
                                            ExtraArgs={"Metadata": {"sha256": digest}})
            entries.append({"path": relative, "bytes": size, "sha256": digest})
        manifest = {"model": model.spec.name, "export": model.spec.export_dir_name, "files": entries}
        with s3.errors(f"uploading the manifest of {model.spec.name}"):
            self.client.put_object(Bucket=self.location.bucket, Key=self._key(model.spec, MANIFEST),
                                   Body=json.dumps(manifest, indent=1).encode(), ContentType="application/json")
        return manifest

    def manifest(self, spec: ModelSpec) -> dict[str, Any] | None:
        """The pushed model's manifest, or None if it was never pushed."""
        key = self._key(spec, MANIFEST)
        try:
            with s3.errors(f"reading {key}", missing=key):
                body = self.client.get_object(Bucket=self.location.bucket, Key=key)["Body"].read()
        except BlobNotFound:
            return None
        return json.loads(body)

    def pull(self, spec: ModelSpec, target: Path, progress: Progress | None = None) -> PullStats | None:
        """Download the pushed model into `target` (atomically: all of it or nothing); None if it was never pushed.

        Raises BlobStoreUnavailable if the store fails meanwhile and PullError on a bad file; either way what was
        staged stays for the next try, and `target` is untouched."""
        manifest = self.manifest(spec)
        if manifest is None:
            return None
        started = time.monotonic()
        stats = PullStats(files=len(manifest["files"]), total_bytes=sum(e["bytes"] for e in manifest["files"]))
        with _host_lock(target.parent / f".pull-{target.name}.lock"):
            if LocalModel(spec, target).exported:  # another worker on this host pulled it meanwhile
                return stats
            staging = target.parent / f".pull-{target.name}"
            staging.mkdir(parents=True, exist_ok=True)
            done = 0
            for entry in manifest["files"]:
                stats.downloaded_bytes += self._fetch(spec, staging, entry)
                done += entry["bytes"]
                if progress is not None:
                    progress(done, stats.total_bytes)
            _replace_dir(staging, target)
        stats.seconds = time.monotonic() - started
        return stats

    def _fetch(self, spec: ModelSpec, staging: Path, entry: dict[str, Any]) -> int:
        """Put one file in place in `staging`, checked; returns the bytes downloaded for it."""
        destination = staging / _safe_path(entry["path"])
        if destination.is_file() and _file_sha256(destination) == (entry["sha256"], entry["bytes"]):
            return 0
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_name(destination.name + ".part")
        offset = partial.stat().st_size if partial.exists() else 0
        if offset > entry["bytes"]:
            partial.unlink()
            offset = 0
        downloaded = 0
        if offset < entry["bytes"]:
            key = self._key(spec, "files", entry["path"])
            with s3.errors(f"downloading {entry['path']}"):
                body = self.client.get_object(Bucket=self.location.bucket, Key=key, Range=f"bytes={offset}-")["Body"]
            with s3.reader(body, f"downloading {entry['path']}") as stream, open(partial, "ab") as handle:
                while chunk := stream.read(_CHUNK):
                    handle.write(chunk)
                    downloaded += len(chunk)
        else:
            partial.touch()
        if _file_sha256(partial) != (entry["sha256"], entry["bytes"]):
            partial.unlink()  # the next try starts this file over
            raise PullError(f"{spec.name}: {entry['path']} does not match its manifest's sha256; push it again")
        os.replace(partial, destination)
        return downloaded

    def _stored_sha256(self, key: str) -> str | None:
        try:
            with s3.errors(f"reading {key}", missing=key):
                return self.client.head_object(Bucket=self.location.bucket, Key=key).get("Metadata", {}).get("sha256")
        except BlobNotFound:
            return None

    def _key(self, spec: ModelSpec, *parts: str) -> str:
        return self.location.key("models", spec.export_dir_name, *parts)


def remote_models(settings: Settings) -> RemoteModels | None:
    """The bucket's models, or None when blobs are local (`blob_url` empty): then exports are copied by hand."""
    if not settings.blob_url:
        return None
    return RemoteModels(s3.S3Location.parse(settings.blob_url), s3.client(settings.s3_addressing_style))


def _export_files(root: Path) -> list[Path]:
    """The export's files; hidden ones (OpenVINO's compiled cache, locks) stay on the host that made them."""
    return sorted(path for path in root.rglob("*")
                  if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts))


def _file_sha256(path: Path) -> tuple[str, int]:
    hasher, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return hasher.hexdigest(), size


def _safe_path(relative: str) -> Path:
    """A manifest path, refused if it would land outside the model's folder."""
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise PullError(f"unsafe path in the manifest: {relative!r}")
    return Path(*path.parts)


def _replace_dir(staging: Path, target: Path) -> None:
    """Rename the complete staging folder onto `target`; a stale, incomplete `target` is moved aside first."""
    if target.exists() or target.is_symlink():
        aside = target.with_name(f".stale-{target.name}-{uuid.uuid4().hex[:8]}")
        os.rename(target, aside)
        shutil.rmtree(aside, ignore_errors=True)
    os.rename(staging, target)


@contextmanager
def _host_lock(path: Path) -> Iterator[None]:
    """One pull of a model per host at a time (workers on one host share its model cache)."""
    with host_lock(path, _LOCK_WAIT_S) as held:
        if not held:
            raise BlobStoreUnavailable(f"{path}: another pull held the lock too long")
        yield

