"""Retention: images, results and files are removed a configured time after their job ended (files: after they
were created). Run by the periodic `vlq.maintenance.retention` task; safe to run twice at once.

A job keeps its row, with status, timings, usage and error; `image_expired_at` and `result_expired_at` say what
went. An expired result also leaves the dedup cache, and the webhook deliveries that carried it (with their
attempt logs) are deleted. An expired file (`retention_files_s` after it was created, or past its own `expires_at`:
service.core.expiry) is deleted like `DELETE /v1/files/{id}`, unless a running batch reads it.

Blobs are content-addressed and shared (one image in many jobs, a file whose bytes equal an image), so a blob goes
only when nothing that still needs it refers to it: no job whose image has not expired (queued and running ones
included; a job's page rows count, with its further inputs and rendered pages), and no file. A blob written in
the last `BLOB_GRACE_S` stays too: its new row may not be committed yet.
Each pass also deletes blobs that no row refers to at all (a deleted file's, an upload that failed half-way).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from itertools import islice

from sqlalchemy import delete, or_, select, update

from service.adapters.blobs import BlobStore
from service.adapters.db import Database
from service.core.config import Settings
from service.core.models import TERMINAL_STATES, Batch, BatchStatus, File, Job, JobPage, WebhookDelivery, utcnow

log = logging.getLogger(__name__)

BLOB_GRACE_S = 3600.0  # longer than any upload or batch ingest takes from writing a blob to committing its row
_CHUNK = 500
_ENDED = [status.value for status in TERMINAL_STATES]
_READING_BATCHES = [BatchStatus.VALIDATING.value, BatchStatus.IN_PROGRESS.value, BatchStatus.CANCELLING.value]


def purge_expired(db: Database, blobs: BlobStore, settings: Settings, now: datetime | None = None) -> dict[str, int]:
    """Remove what is past its retention period; returns how many results, images, files and blobs went."""
    now = now or utcnow()
    counts = {"results": 0, "images": 0, "files": 0, "blobs": 0}
    if settings.retention_results_s:
        counts["results"] = _expire_results(db, now, now - timedelta(seconds=settings.retention_results_s))
    if settings.retention_images_s:
        cutoff = now - timedelta(seconds=settings.retention_images_s)
        counts["images"], blobs_gone = _expire_images(db, blobs, now, cutoff)
        counts["blobs"] += blobs_gone
    cutoff = now - timedelta(seconds=settings.retention_files_s) if settings.retention_files_s else None
    counts["files"], blobs_gone = _expire_files(db, blobs, now, cutoff)
    counts["blobs"] += blobs_gone
    counts["blobs"] += _delete_orphans(db, blobs)
    if any(counts.values()):
        log.info("retention: removed %s", ", ".join(f"{count} {what}" for what, count in counts.items()))
    return counts


def _expire_results(db: Database, now: datetime, cutoff: datetime) -> int:
    expired = 0
    while True:
        with db.session() as session:
            ids = list(session.scalars(select(Job.id).where(
                Job.status.in_(_ENDED), Job.finished_at < cutoff, Job.result_expired_at.is_(None)).limit(_CHUNK)))
            if not ids:
                return expired
            session.execute(update(Job).where(Job.id.in_(ids), Job.result_expired_at.is_(None)).values(
                result_text=None, result_json=None, result_lines=None, grounding=None, cache_key=None,
                result_expired_at=now))
            session.execute(update(JobPage).where(JobPage.job_id.in_(ids)).values(
                result_text=None, result_json=None, result_lines=None))
            # The deliveries' bodies hold the result; the attempt logs go with them (ON DELETE CASCADE).
            session.execute(delete(WebhookDelivery).where(WebhookDelivery.subject_id.in_(ids),
                                                          WebhookDelivery.status != "pending"))
        expired += len(ids)


def _expire_images(db: Database, blobs: BlobStore, now: datetime, cutoff: datetime) -> tuple[int, int]:
    expired = deleted = 0
    while True:
        with db.session() as session:
            rows = session.execute(select(Job.id, Job.image_sha256).where(
                Job.status.in_(_ENDED), Job.finished_at < cutoff, Job.image_expired_at.is_(None),
                Job.image_sha256.is_not(None)).limit(_CHUNK)).all()
        if not rows:
            return expired, deleted
        ids = [row.id for row in rows]
        digests = {row.image_sha256 for row in rows} | _page_blobs(db, ids)
        # Blobs first, then the stamps: if this stops half-way, the next pass finds the same jobs again.
        deleted += _delete_unused(db, blobs, digests, jobs=ids)
        with db.session() as session:
            session.execute(update(Job).where(Job.id.in_(ids)).values(image_expired_at=now))
        expired += len(ids)


def _page_blobs(db: Database, job_ids: list[str]) -> set[str]:
    """The blobs of these jobs' pages: their inputs (documents, further images) and their rendered pages."""
    with db.session() as session:
        rows = session.execute(select(JobPage.source_sha256, JobPage.blob_sha256)
                               .where(JobPage.job_id.in_(job_ids))).all()
    return {digest for row in rows for digest in row if digest is not None}


def _expire_files(db: Database, blobs: BlobStore, now: datetime, cutoff: datetime | None) -> tuple[int, int]:
    """Files created before `cutoff` (None: none by age) or past their own `expires_at`."""
    reading = select(Batch.input_file_id).where(Batch.status.in_(_READING_BATCHES), Batch.input_file_id.is_not(None))
    due = File.expires_at <= now if cutoff is None else or_(File.created_at < cutoff, File.expires_at <= now)
    expired = deleted = 0
    while True:
        with db.session() as session:
            rows = session.execute(select(File.id, File.sha256).where(
                due, File.id.not_in(reading)).limit(_CHUNK)).all()
        if not rows:
            return expired, deleted
        ids = [row.id for row in rows]
        deleted += _delete_unused(db, blobs, {row.sha256 for row in rows}, files=ids)
        with db.session() as session:
            session.execute(delete(File).where(File.id.in_(ids)))
        expired += len(ids)


def _delete_orphans(db: Database, blobs: BlobStore) -> int:
    """Blobs no row ever kept: a deleted file's, an upload whose request failed before its commit."""
    deleted = 0
    digests = blobs.digests(older_than_s=BLOB_GRACE_S)
    while chunk := set(islice(digests, _CHUNK)):
        deleted += _delete_unused(db, blobs, chunk)
    return deleted


def _delete_unused(db: Database, blobs: BlobStore, digests: set[str], *, jobs: Iterable[str] = (),
                   files: Iterable[str] = ()) -> int:
    """Delete those of `digests` that nothing but the given jobs and files (about to let go of them) refers to."""
    with db.session() as session:
        kept = [Job.image_expired_at.is_(None), Job.id.not_in(list(jobs))]
        needed = set(session.scalars(select(Job.image_sha256).where(Job.image_sha256.in_(digests), *kept).distinct()))
        for column in (JobPage.source_sha256, JobPage.blob_sha256):
            needed |= set(session.scalars(select(column).join(Job, Job.id == JobPage.job_id)
                                          .where(column.in_(digests), *kept).distinct()))
        needed |= set(session.scalars(select(File.sha256).where(
            File.sha256.in_(digests), File.id.not_in(list(files))).distinct()))
    return sum(blobs.delete_unused(digest, BLOB_GRACE_S) for digest in digests - needed)
