"""A streamed job's text as it is generated: one short-lived Redis stream per job.

The worker appends each piece of text and, once the job's ending is committed, an end marker; the API
reads from the start, so nothing is lost whether it starts reading before the first piece or after the last.
"""
from __future__ import annotations

from dataclasses import dataclass

import redis

TTL_S = 600  # refreshed on every append; a reader that is this late has long given up


@dataclass(frozen=True)
class Piece:
    id: str  # the stream entry id: read on from here
    text: str | None  # None marks the end


def key(job_id: str) -> str:
    return f"vlq:stream:{job_id}"


def append(client: redis.Redis, job_id: str, text: str) -> None:
    with client.pipeline(transaction=False) as pipe:
        pipe.xadd(key(job_id), {"t": text})
        pipe.expire(key(job_id), TTL_S)
        pipe.execute()


def end(client: redis.Redis, job_id: str) -> None:
    """Mark the stream finished; call after the job's ending is committed, so readers then find it ended."""
    with client.pipeline(transaction=False) as pipe:
        pipe.xadd(key(job_id), {"end": "1"})
        pipe.expire(key(job_id), TTL_S)
        pipe.execute()


def read(client: redis.Redis, job_id: str, after: str, block_ms: int) -> list[Piece]:
    """Pieces after entry id `after` ("0" for all), waiting up to `block_ms` for the first one."""
    answer = client.xread({key(job_id): after}, block=block_ms or None, count=256)
    pieces = []
    for _stream, entries in answer or ():
        for entry_id, fields in entries:
            text = fields.get(b"t")
            pieces.append(Piece(entry_id.decode(), None if text is None else text.decode()))
    return pieces
