"""One S3 client setup for blobs and models: where (`s3://bucket/prefix`), how errors read, and streamed reads.

The client follows the standard AWS chain (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
a profile or an instance role), so a host needs only what any AWS tool on it would need.
"""
from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from service.adapters.blobs import BlobNotFound, BlobStoreUnavailable

# Multipart above 64 MiB, in 16 MiB parts, four at a time: a large upload holds at most 64 MiB in memory.
TRANSFER = TransferConfig(multipart_threshold=64 * 1024**2, multipart_chunksize=16 * 1024**2, max_concurrency=4)
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" or ends with "/"

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """`s3://bucket/some/prefix` -> bucket, "some/prefix/" (config validation already checked the scheme)."""
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        prefix = prefix.strip("/")
        return cls(bucket=bucket, prefix=f"{prefix}/" if prefix else "")

    def key(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def client(addressing_style: str = "path") -> Any:
    """An S3 client with short connect timeouts, so an unreachable store fails a request in seconds, not minutes."""
    config = Config(connect_timeout=3, read_timeout=30, retries={"mode": "standard", "max_attempts": 3},
                    s3={"addressing_style": addressing_style}, signature_version="s3v4")  # v4: presigned URLs too
    return boto3.session.Session().client("s3", config=config)


@contextmanager
def errors(what: str, *, missing: str | None = None) -> Iterator[None]:
    """Translate botocore errors: a missing key is BlobNotFound(missing) when `missing` is given; everything else
    (unreachable, timed out, refused credentials, no such bucket, a 5xx) is BlobStoreUnavailable."""
    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if missing is not None and code in _NOT_FOUND:
            raise BlobNotFound(missing) from None
        raise BlobStoreUnavailable(f"{what}: {code or 'error'} ({exc})") from exc
    except BotoCoreError as exc:
        raise BlobStoreUnavailable(f"{what}: {exc}") from exc


class _BodyReader(io.RawIOBase):
    """A GetObject body as a raw stream, so callers get a normal buffered file (readline, iteration, `with`)."""

    def __init__(self, body: Any, what: str) -> None:
        self._body = body
        self._what = what

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with errors(self._what):
            data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


def reader(body: Any, what: str) -> io.BufferedReader:
    """Wrap a streaming body; it is read a megabyte at a time, never whole."""
    return io.BufferedReader(_BodyReader(body, what), buffer_size=1024 * 1024)
