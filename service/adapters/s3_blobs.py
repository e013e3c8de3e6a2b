"""Blobs on S3-compatible storage, under `<prefix>blobs/ab/cd/<sha256>`: the same interface as LocalBlobStore."""
from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from collections.abc import Iterator
from typing import Any, BinaryIO

from service.adapters import s3
from service.adapters.blobs import BlobNotFound, BlobStore, BlobStoreUnavailable, is_digest
from service.adapters.s3 import S3Location

log = logging.getLogger(__name__)

# A streamed upload is hashed into a spool first (its key is its hash): in memory up to this, on local disk beyond.
_SPOOL_BYTES = 8 * 1024 * 1024


class S3BlobStore(BlobStore):
    """Content-addressed blobs in a bucket. A PUT is atomic, so readers never see half a blob."""

    def __init__(self, location: S3Location, client: Any) -> None:
        self.location = location
        self.client = client

    def describe(self) -> str:
        return str(self.location)

    def check(self) -> None:
        with s3.errors(f"bucket {self.location.bucket!r} ({self.client.meta.endpoint_url})"):
            self.client.head_bucket(Bucket=self.location.bucket)

    def create_bucket(self) -> bool:
        """Create the bucket unless it exists (a self-hosted S3's first start); True if it was created."""
        try:
            self.check()
            return False
        except BlobStoreUnavailable:
            pass
        with s3.errors(f"creating bucket {self.location.bucket!r}"):
            self.client.create_bucket(Bucket=self.location.bucket)
        return True

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        # Always written, even when present: a fresh LastModified keeps the leak sweep off it until its row commits.
        with s3.errors(f"storing blob {digest}"):
            self.client.put_object(Bucket=self.location.bucket, Key=self._key(digest), Body=data)
        return digest

    def put_stream(self, stream: BinaryIO) -> tuple[str, int]:
        hasher, size = hashlib.sha256(), 0
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
            while chunk := stream.read(1024 * 1024):
                hasher.update(chunk)
                spool.write(chunk)
                size += len(chunk)
            spool.seek(0)
            digest = hasher.hexdigest()
            # A failed multipart upload is aborted by the transfer manager: nothing half-stored stays visible.
            with s3.errors(f"storing blob {digest}"):
                self.client.upload_fileobj(spool, self.location.bucket, self._key(digest), Config=s3.TRANSFER)
        return digest, size

    def get(self, digest: str) -> bytes:
        with self.open(digest) as stream:
            return stream.read()

    def open(self, digest: str) -> BinaryIO:
        with s3.errors(f"reading blob {digest}", missing=digest):
            body = self.client.get_object(Bucket=self.location.bucket, Key=self._key(digest))["Body"]
        return s3.reader(body, f"reading blob {digest}")

    def exists(self, digest: str) -> bool:
        return self._modified(digest) is not None

    def digests(self, older_than_s: float) -> Iterator[str]:
        cutoff = time.time() - older_than_s
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.location.bucket, Prefix=self.location.key("blobs/"))
        with s3.errors("listing blobs"):
            for page in pages:
                for item in page.get("Contents", []):
                    name = item["Key"].rsplit("/", 1)[-1]
                    if is_digest(name) and item["LastModified"].timestamp() < cutoff:
                        yield name

    def delete_unused(self, digest: str, grace_s: float) -> bool:
        # S3 has no rename, so unlike the local store there is a window of one round trip between reading the
        # age and deleting, in which a new upload of the same bytes would be lost; the caller checked rows first,
        # and a new row's blob is written within BLOB_GRACE_S before it, so that window needs a put landing
        # between two requests of this call.
        modified = self._modified(digest)
        if modified is None or time.time() - modified < grace_s:
            return False
        with s3.errors(f"deleting blob {digest}"):
            self.client.delete_object(Bucket=self.location.bucket, Key=self._key(digest))
        return True

    def presigned_url(self, digest: str, expires_s: float, *, disposition: str, content_type: str) -> str | None:
        # Signed locally: no request is made, so this cannot fail on an unreachable store.
        return self.client.generate_presigned_url("get_object", ExpiresIn=int(expires_s), Params={
            "Bucket": self.location.bucket, "Key": self._key(digest),
            "ResponseContentType": content_type, "ResponseContentDisposition": disposition})

    def _modified(self, digest: str) -> float | None:
        try:
            with s3.errors(f"reading blob {digest}", missing=digest):
                head = self.client.head_object(Bucket=self.location.bucket, Key=self._key(digest))
        except BlobNotFound:
            return None
        return head["LastModified"].timestamp()

    def _key(self, digest: str) -> str:
        if not is_digest(digest):
            raise ValueError(f"not a sha256 hex digest: {digest!r}")
        return self.location.key("blobs", digest[:2], digest[2:4], digest)
