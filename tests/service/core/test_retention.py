"""Retention: old images, results and files go; what a live job or a running batch needs, and recent blobs, stay.

Each test runs on the local store and on S3 (a real S3-protocol server): S3 stamps its own LastModified, so there
the grace is shortened and blobs age by waiting it out.
"""
import dataclasses
import hashlib
import os
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from service.adapters import s3
from service.adapters.blobs import LocalBlobStore
from service.adapters.s3_blobs import S3BlobStore
from service.core import batch_lifecycle, batches, lifecycle, retention
from service.core.config import load_settings
from service.core.models import BatchStatus, File, Job, JobStatus, WebhookDelivery, new_id, utcnow
from service.core.retention import purge_expired
from service.core.shapes import JobOut
from tests.conftest import TENANT, TINY

HOUR = 3600
S3_GRACE_S = 3.0  # long enough for a purge pass on a loaded machine, short enough to wait out


@pytest.fixture(params=["local", "s3"])
def blobs(request, tmp_path, monkeypatch):
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    bucket = request.getfixturevalue("s3_server").bucket()
    monkeypatch.setattr(retention, "BLOB_GRACE_S", S3_GRACE_S)
    return S3BlobStore(s3.S3Location.parse(f"s3://{bucket}/vlq"), s3.client())


@pytest.fixture
def settings(fresh_database_url, tmp_path):
    (tmp_path / "empty.yaml").write_text("{}")
    return load_settings({"database_url": fresh_database_url, "default_model": TINY, "retention_images_s": 2 * HOUR,
                          "retention_results_s": 4 * HOUR, "retention_files_s": 6 * HOUR},
                         environ={"VLQ_CONFIG": str(tmp_path / "empty.yaml")})


def _aged_blob(blobs, data):
    """A blob past the grace: at once on the local store; on S3 once `_let_age` has waited."""
    digest = blobs.put(data)
    if isinstance(blobs, LocalBlobStore):
        old = time.time() - 2 * retention.BLOB_GRACE_S
        os.utime(blobs._path(digest), (old, old))
    return digest


def _let_age(blobs):
    if not isinstance(blobs, LocalBlobStore):
        time.sleep(S3_GRACE_S + 1.1)  # S3's LastModified counts whole seconds


def _job(db, image, *, ended_ago_s=None, status="succeeded", webhook=False):
    """A job on `image`, queued, or ended `ended_ago_s` ago with a result (and a delivery of its event)."""
    job_id = new_id("job")
    with db.session() as session:
        lifecycle.create_job(session, id=job_id, model=TINY, prompt="p", priority="bulk", image_sha256=image,
                             image_format="PNG", image_width=1, image_height=1, max_tokens=4, temperature=0.0,
                             ignore_eos=False, request_sha256="x", cache_key=f"key-{job_id}", tenant=TENANT,
                             **({"webhook_url": "http://127.0.0.1:9/hook", "webhook_secret": "whsec_c2VjcmV0"}
                                if webhook else {}))
    if ended_ago_s is None:
        return job_id
    with db.session() as session:
        lifecycle.claim(session, job_id, "w")
    with db.session() as session:
        lifecycle.finish(session, session.get(Job, job_id), JobStatus(status), result_text="the answer",
                         prompt_tokens=3, completion_tokens=2,
                         grounding={"fields": {}, "review": False, "review_reasons": []})
        ended = utcnow() - timedelta(seconds=ended_ago_s)
        session.execute(update(Job).where(Job.id == job_id).values(finished_at=ended))
        session.execute(update(WebhookDelivery).where(WebhookDelivery.subject_id == job_id).values(status="succeeded"))
    return job_id


def _file(db, blobs, data, *, age_s, expires_in_s=None):
    expires_at = None if expires_in_s is None else utcnow() + timedelta(seconds=expires_in_s)
    with db.session() as session:
        file = File(id=new_id("file"), tenant=TENANT, filename="f.jsonl", purpose="batch", bytes=len(data),
                    sha256=_aged_blob(blobs, data), created_at=utcnow() - timedelta(seconds=age_s),
                    expires_at=expires_at)
        session.add(file)
    return file.id


def _get(db, model, ident):
    with db.session() as session:
        return session.get(model, ident)


def test_retention_removes_what_expired_and_keeps_what_is_still_needed(db, blobs, settings):
    shared, lonely, fresh = (_aged_blob(blobs, data) for data in (b"shared", b"lonely", b"fresh"))
    old_on_shared = _job(db, shared, ended_ago_s=5 * HOUR, webhook=True)
    waiting_on_shared = _job(db, shared)  # queued: it still needs the image
    old_on_lonely = _job(db, lonely, ended_ago_s=3 * HOUR, status="failed")
    recent = _job(db, fresh, ended_ago_s=HOUR)
    old_file = _file(db, blobs, b"old input", age_s=7 * HOUR)
    read_file = _file(db, blobs, b"input being read", age_s=7 * HOUR)
    with db.session() as session:
        batch = batches.create_batch(session, tenant=TENANT, endpoint=batches.CHAT_ENDPOINT, input_file_id=read_file,
                                     completion_window="24h", priority="bulk", metadata=None, idempotency_key=None)
        session.flush()
        batch_lifecycle.transition(session, batch.id, BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS)
    orphan = _aged_blob(blobs, b"orphan")
    _let_age(blobs)
    young_orphan = blobs.put(b"uploaded a moment ago")

    counts = purge_expired(db, blobs, settings)

    assert counts == {"results": 1, "images": 2, "files": 1, "blobs": 3}
    job = _get(db, Job, old_on_shared)
    assert job.result_text is None and job.result_expired_at is not None and job.cache_key is None
    assert job.grounding is None
    assert job.image_expired_at is not None and job.status == "succeeded" and job.completion_tokens == 2
    shown = JobOut.from_row(job).dump()
    assert shown["result"] is None and shown["result_expired_at"]
    with db.session() as session:  # the delivery carried the result, so it went with it
        assert session.scalars(select(WebhookDelivery).where(WebhookDelivery.subject_id == old_on_shared)).all() == []
    assert _get(db, Job, old_on_lonely).result_text == "the answer"  # results are kept longer than images
    assert _get(db, Job, old_on_lonely).image_expired_at is not None
    assert _get(db, Job, recent).image_expired_at is None and blobs.exists(fresh)
    assert blobs.exists(shared) and _get(db, Job, waiting_on_shared).image_expired_at is None
    assert not blobs.exists(lonely) and not blobs.exists(orphan)
    assert blobs.exists(young_orphan)  # may belong to a request whose row is not committed yet
    assert _get(db, File, old_file) is None and _get(db, File, read_file) is not None

    blobs.put(b"uploaded a moment ago")  # again, as its request would be retried: still within the grace
    assert purge_expired(db, blobs, settings) == {"results": 0, "images": 0, "files": 0, "blobs": 0}


def test_a_blob_written_again_while_it_is_deleted_stays(blobs):
    digest = _aged_blob(blobs, b"image")
    _let_age(blobs)
    assert blobs.delete_unused(digest, retention.BLOB_GRACE_S) and not blobs.exists(digest)
    digest = blobs.put(b"image")  # a new job stores the same image: fresh, so within the grace
    assert not blobs.delete_unused(digest, retention.BLOB_GRACE_S) and blobs.get(digest) == b"image"


def test_zero_keeps_everything_forever(db, blobs, settings):
    job_id = _job(db, _aged_blob(blobs, b"kept"), ended_ago_s=10**6)
    forever = dataclasses.replace(settings, retention_images_s=0, retention_results_s=0, retention_files_s=0)
    assert purge_expired(db, blobs, forever) == {"results": 0, "images": 0, "files": 0, "blobs": 0}
    assert _get(db, Job, job_id).result_text == "the answer"


@pytest.mark.parametrize("retention_files_s", [0, 6 * HOUR])
def test_a_file_past_its_own_expires_at_goes_whatever_the_files_retention(db, blobs, settings, retention_files_s):
    expired = _file(db, blobs, b"asked to expire", age_s=2 * HOUR, expires_in_s=-HOUR)
    later = _file(db, blobs, b"expires later", age_s=2 * HOUR, expires_in_s=HOUR)
    plain = _file(db, blobs, b"no expiry of its own", age_s=2 * HOUR)
    read = _file(db, blobs, b"input being read", age_s=2 * HOUR, expires_in_s=-HOUR)
    with db.session() as session:
        batch = batches.create_batch(session, tenant=TENANT, endpoint=batches.RESPONSES_ENDPOINT, input_file_id=read,
                                     completion_window="24h", priority="bulk", metadata=None, idempotency_key=None)
        session.flush()
        batch_lifecycle.transition(session, batch.id, BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS)
    _let_age(blobs)

    counts = purge_expired(db, blobs, dataclasses.replace(settings, retention_files_s=retention_files_s))

    assert (counts["files"], counts["blobs"]) == (1, 1)
    assert _get(db, File, expired) is None and not blobs.exists(hashlib.sha256(b"asked to expire").hexdigest())
    assert all(_get(db, File, kept) is not None for kept in (later, plain, read))


def _pages(db, job_id, *rows):
    """Page rows for `job_id`: (source digest, rendered digest or None) each."""
    from service.core.models import JobPage

    with db.session() as session:
        session.add_all(JobPage(job_id=job_id, position=position, number=position + 1, source_sha256=source,
                                source_format="PDF", source_index=position, blob_sha256=rendered, width=1, height=1,
                                result_text="page text")
                        for position, (source, rendered) in enumerate(rows))


def test_a_document_jobs_inputs_and_rendered_pages_go_with_its_image(db, blobs, settings):
    from service.core.models import JobPage

    pdf, page_one, page_two, other_pdf, kept_page = (_aged_blob(blobs, data) for data in (
        b"%PDF old", b"png 1", b"png 2", b"%PDF second input", b"png kept"))
    old = _job(db, pdf, ended_ago_s=5 * HOUR)
    _pages(db, old, (pdf, page_one), (pdf, page_two), (other_pdf, None))
    live = _job(db, _aged_blob(blobs, b"%PDF live"))  # queued: its pages (one shared with the old job) stay
    _pages(db, live, (other_pdf, kept_page))
    _let_age(blobs)

    purge_expired(db, blobs, settings)

    assert not any(blobs.exists(digest) for digest in (pdf, page_one, page_two))
    assert blobs.exists(other_pdf) and blobs.exists(kept_page)
    assert _get(db, Job, old).image_expired_at is not None
    with db.session() as session:
        texts = session.scalars(select(JobPage.result_text).where(JobPage.job_id == old)).all()
    assert texts == [None, None, None]  # its results expired too (past retention_results_s)
