"""Content-addressed blob storage: images, batch files and results. A local directory here; S3 in `s3_blobs`."""
from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

_DIGEST = re.compile(r"[0-9a-f]{64}")


class BlobNotFound(KeyError):
    """No blob with that digest is stored."""


class BlobStoreUnavailable(Exception):
    """The store cannot be reached, or refuses this service (credentials, a missing bucket): worth a retry, and
    never the fault of the data. Deliberately not an OSError, which callers read as an unreadable blob."""


class BlobStore(ABC):
    """Stores bytes under their sha256, so identical images are kept once."""

    def describe(self) -> str:
        """Where the blobs live, for log lines."""
        return type(self).__name__

    def check(self) -> None:
        """Raise BlobStoreUnavailable unless the store answers and accepts this service (readiness, start-up)."""
        return None  # a local directory was created by the constructor

    def presigned_url(self, digest: str, expires_s: float, *, disposition: str, content_type: str) -> str | None:
        """A URL that serves the blob directly for `expires_s` seconds, or None where the store has none."""
        return None

    def put(self, data: bytes) -> str:
        """Store `data` and return its sha256 hex digest."""
        return self.put_stream(io.BytesIO(data))[0]

    @abstractmethod
    def put_stream(self, stream: BinaryIO) -> tuple[str, int]:
        """Store everything `stream` yields, without holding it all in memory; returns (sha256, size)."""

    @abstractmethod
    def get(self, digest: str) -> bytes:
        """Return the bytes stored under `digest`, or raise BlobNotFound."""

    @abstractmethod
    def open(self, digest: str) -> BinaryIO:
        """A readable binary stream of the blob (large batch files are read line by line)."""

    @abstractmethod
    def exists(self, digest: str) -> bool: ...

    @abstractmethod
    def digests(self, older_than_s: float) -> Iterator[str]:
        """Every stored blob last written more than `older_than_s` seconds ago (the retention pass's leak sweep)."""

    @abstractmethod
    def delete_unused(self, digest: str, grace_s: float) -> bool:
        """Delete a blob no row refers to any more, unless it was written within `grace_s` seconds: then a new
        job or file may hold it before its row is committed. Returns whether it was deleted."""


class LocalBlobStore(BlobStore):
    """Blobs as files under a directory (a shared mount when workers run on several hosts)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def describe(self) -> str:
        return str(self.root)

    def put(self, data: bytes) -> str:
        """Store `data` unless the same bytes are stored already (then only touched); return the sha256."""
        digest = hashlib.sha256(data).hexdigest()
        try:
            # Touched, not rewritten: `delete_unused` judges a blob by its mtime after moving it aside, so a touch
            # before that move keeps it, and after it the blob is gone here and written anew below.
            os.utime(self._path(digest))
            return digest
        except FileNotFoundError:
            return super().put(data)

    def put_stream(self, stream: BinaryIO) -> tuple[str, int]:
        # Hash while writing to a temporary file, then rename into place: readers never see half a blob.
        hasher, size = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                while chunk := stream.read(1024 * 1024):
                    hasher.update(chunk)
                    handle.write(chunk)
                    size += len(chunk)
            path = self._path(hasher.hexdigest())
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return hasher.hexdigest(), size

    def get(self, digest: str) -> bytes:
        try:
            return self._path(digest).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(digest) from None

    def open(self, digest: str) -> BinaryIO:
        try:
            return self._path(digest).open("rb")
        except FileNotFoundError:
            raise BlobNotFound(digest) from None

    def exists(self, digest: str) -> bool:
        return self._path(digest).exists()

    def digests(self, older_than_s: float) -> Iterator[str]:
        cutoff = time.time() - older_than_s
        for path in self.root.glob("??/??/*"):
            if not path.name.startswith(".") and path.stat().st_mtime < cutoff:
                yield path.name

    def delete_unused(self, digest: str, grace_s: float) -> bool:
        path = self._path(digest)
        # Move it aside first, then judge its age: a `put` racing with us either wrote before the move (the
        # moved file is recent, so it goes back) or after it (a fresh file in place); neither loses the blob.
        doomed = path.with_name(f".del-{digest}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(path, doomed)
        except FileNotFoundError:
            return False
        if time.time() - doomed.stat().st_mtime < grace_s:
            try:
                os.link(doomed, path)  # same bytes by construction; a newer copy already in place wins
            except FileExistsError:
                pass
            doomed.unlink()
            return False
        doomed.unlink()
        return True

    def _path(self, digest: str) -> Path:
        if not is_digest(digest):
            raise ValueError(f"not a sha256 hex digest: {digest!r}")
        return self.root / digest[:2] / digest[2:4] / digest


def is_digest(text: str) -> bool:
    return _DIGEST.fullmatch(text) is not None  # one regex: a per-character check was 0.25 ms per put
