"""The blob store contract, held by both stores: a local directory, and S3 through a real S3-protocol server."""
from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from service.adapters import s3
from service.adapters.blobs import BlobNotFound, BlobStore, BlobStoreUnavailable, LocalBlobStore
from service.adapters.s3 import S3Location
from service.adapters.s3_blobs import S3BlobStore
from service.core.config import load_settings
from service.wiring import blob_store


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs")
    else:
        server = request.getfixturevalue("s3_server")
        yield S3BlobStore(S3Location.parse(f"s3://{server.bucket()}/some/prefix"), s3.client())


class _Counting(io.RawIOBase):
    """A stream of `size` bytes made on demand, recording the largest read asked of it."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.largest = 0
        self.hasher = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left)
        self.largest = max(self.largest, n)
        chunk = (b"0123456789abcdef" * (n // 16 + 1))[:n]
        self.hasher.update(chunk)
        buffer[:n] = chunk
        self.left -= n
        return n


def test_put_get_exists_open(store: BlobStore) -> None:
    digest = store.put(b"hello")
    assert digest == hashlib.sha256(b"hello").hexdigest()
    assert store.exists(digest) and store.get(digest) == b"hello"
    assert store.put(b"hello") == digest  # content-addressed: the same bytes, the same key
    with store.open(digest) as stream:
        assert stream.read() == b"hello"
    missing = hashlib.sha256(b"absent").hexdigest()
    assert not store.exists(missing)
    with pytest.raises(BlobNotFound):
        store.get(missing)
    with pytest.raises(BlobNotFound):
        store.open(missing)
    with pytest.raises(ValueError):
        store.exists("../../etc/passwd")


def test_large_stream_goes_in_and_out_in_pieces(store: BlobStore) -> None:
    """A batch file larger than the multipart threshold: written from a stream, read back line by line."""
    size = 70 * 1024 * 1024 + 123
    source = _Counting(size)
    digest, stored = store.put_stream(io.BufferedReader(source, buffer_size=1024 * 1024))
    assert (digest, stored) == (source.hasher.hexdigest(), size)
    assert source.largest <= 1024 * 1024
    hasher, total, longest = hashlib.sha256(), 0, 0
    with store.open(digest) as stream:
        for line in iter(lambda: stream.readline(64 * 1024), b""):
            hasher.update(line)
            total += len(line)
            longest = max(longest, len(line))
    assert (hasher.hexdigest(), total) == (digest, size) and longest <= 64 * 1024


def test_leak_sweep_lists_and_deletes_only_past_the_grace(store: BlobStore) -> None:
    old = store.put(b"old")
    assert old not in set(store.digests(older_than_s=60))  # just written
    assert store.delete_unused(old, grace_s=60) is False and store.exists(old)
    time.sleep(1.1)  # S3 stamps LastModified to the second
    assert old in set(store.digests(older_than_s=1))
    assert store.delete_unused(old, grace_s=1) is True
    assert not store.exists(old) and store.delete_unused(old, grace_s=0) is False


def test_presigned_url_serves_the_bytes_from_the_bucket(s3_server: Any, tmp_path: Path) -> None:
    store = S3BlobStore(S3Location.parse(f"s3://{s3_server.bucket()}"), s3.client())
    digest = store.put(b'{"a": 1}\n')
    url = store.presigned_url(digest, 60, disposition='attachment; filename="out.jsonl"',
                              content_type="application/jsonl")
    answer = requests.get(url, timeout=10)
    assert answer.status_code == 200 and answer.content == b'{"a": 1}\n'
    assert answer.headers["Content-Type"] == "application/jsonl"
    assert LocalBlobStore(tmp_path).presigned_url(
        digest, 60, disposition="attachment", content_type="x/y") is None


def test_missing_bucket_is_said_at_wiring_naming_the_bucket(s3_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings({"blob_url": "s3://no-such-bucket-here/p"}, environ={})
    store = blob_store(settings)
    assert "no-such-bucket-here" in caplog.text
    with pytest.raises(BlobStoreUnavailable, match="no-such-bucket-here"):
        store.check()
    with pytest.raises(BlobStoreUnavailable):
        store.put(b"x")


def test_unreachable_store_is_unavailable_not_missing(s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    store = S3BlobStore(S3Location.parse("s3://bucket"), s3.client())
    digest = hashlib.sha256(b"x").hexdigest()
    for call in (lambda: store.put(b"x"), lambda: store.get(digest), lambda: store.exists(digest),
                 lambda: list(store.digests(0)), lambda: store.put_stream(io.BytesIO(b"x")), store.check):
        with pytest.raises(BlobStoreUnavailable):
            call()
