"""What a caller is told about a model no live worker serves, and the queue timeout that ends its waiting jobs."""
import dataclasses
from datetime import timedelta

from sqlalchemy import update

from service.core import availability, batch_lifecycle, lifecycle
from service.core.errors import ErrorCode
from service.core.models import Job, WebhookDelivery, new_id, utcnow
from tests.conftest import TENANT

MODEL = "tiny-unit"  # no worker serves it in these tests
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_a_live_model_has_no_notice_and_the_others_say_why_and_what_fixes_it(settings):
    states = {"tiny-random": {"status": "live"}, "tiny-stuck": {"status": "loading"},
              "tiny-broken": {"status": "unavailable", "reason": "model 'tiny-broken' is not exported: run X"}}
    workers = {"a": {"models": states}}
    assert availability.notice(settings, "tiny-random", workers) is None
    loading = availability.notice(settings, "tiny-stuck", workers)
    assert loading.code == ErrorCode.MODEL_LOADING and loading.retryable
    unavailable = availability.notice(settings, "tiny-broken", workers)
    assert unavailable.code == ErrorCode.MODEL_UNAVAILABLE and not unavailable.retryable
    assert "run X" in unavailable.message
    nobody = availability.notice(settings, "tiny-idle", workers)
    assert nobody.code == ErrorCode.NO_WORKER and nobody.retryable
    assert "`vlq worker`" in nobody.message and "`vlq model build-tiny`" in nobody.message
    # One worker loading a model another failed to load: it may still come.
    both = {"c": {"models": {"m": {"status": "unavailable", "reason": "r"}}},
            "d": {"models": {"m": {"status": "loading"}}}}
    assert availability.notice(settings, "m", both).code == ErrorCode.MODEL_LOADING
    assert availability.served_models(workers | both) == {"tiny-random", "tiny-stuck", "m"}


def test_the_fix_names_the_exact_command_for_each_kind_of_model(settings):
    assert availability.fix(settings.model("tiny-random"), "tiny-random") == (
        "run `vlq model build-tiny` (offline, under a minute)")
    real = dataclasses.replace(settings.model("tiny-random"), name="qwen3-vl-2b", source="Qwen/Qwen3-VL-2B-Instruct")
    assert "`vlq model export qwen3-vl-2b`" in availability.fix(real, "qwen3-vl-2b")
    assert "config.yaml" in availability.fix(None, "gone")


def test_a_warning_says_how_long_the_job_waits(settings):
    item = availability.notice(settings, "tiny-idle", {})
    warning = availability.with_timeout(settings, item, "interactive")
    assert "up to 300s (queue_timeout_s.interactive)" in warning.message
    forever = dataclasses.replace(settings, queue_timeout_s={"interactive": 0, "bulk": 0})
    assert "waits until a worker serves" in availability.with_timeout(forever, item, "bulk").message


def _queued(db, *, age_s: float, priority: str = "interactive", model: str = MODEL, batch_id: str | None = None,
            webhook_url: str | None = None) -> str:
    job_id = new_id("job")
    with db.session() as session:
        lifecycle.create_job(session, id=job_id, model=model, prompt="p", priority=priority, image_sha256="0" * 64,
                             image_format="PNG", image_width=1, image_height=1, max_tokens=4, temperature=0.0,
                             ignore_eos=False, request_sha256="x", tenant=TENANT, batch_id=batch_id,
                             webhook_url=webhook_url, webhook_secret=SECRET if webhook_url else None)
    with db.session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(created_at=utcnow() - timedelta(seconds=age_s)))
    return job_id


def _job(db, job_id):
    with db.session() as session:
        return session.get(Job, job_id)


def test_queued_jobs_fail_only_after_their_prioritys_timeout_of_no_worker(db, settings):
    timed = dataclasses.replace(settings, queue_timeout_s={"interactive": 60, "bulk": 600})
    old = _queued(db, age_s=120, webhook_url="https://example.com/hook")
    young = _queued(db, age_s=30)
    old_bulk = _queued(db, age_s=120, priority="bulk")
    now = utcnow()

    # The model was served until 30 s ago: nobody waited 60 s without a worker yet, however old the job.
    assert availability.fail_unserved(db, timed, {MODEL: now - timedelta(seconds=30)}, now) == 0
    # A model not in the clocks is served (a live worker has it, busy or not): its queue never times out.
    assert availability.fail_unserved(db, timed, {}, now) == 0
    assert _job(db, old).status == "queued"

    assert availability.fail_unserved(db, timed, {MODEL: now - timedelta(seconds=90)}, now) == 1
    failed = _job(db, old)
    assert (failed.status, failed.error_code, failed.attempts) == ("failed", "model_unavailable", 0)
    assert "for 60s (queue_timeout_s.interactive)" in failed.error_message
    assert "`vlq model build-tiny`" in failed.error_message and failed.finished_at is not None
    assert _job(db, young).status == "queued" and _job(db, old_bulk).status == "queued"
    with db.session() as session:
        assert [e.type for e in lifecycle.events(session, old)] == ["job.queued", "job.failed"]
        assert session.query(WebhookDelivery).filter_by(subject_id=old, event_type="job.failed").count() == 1

    # 0 waits for ever.
    forever = dataclasses.replace(settings, queue_timeout_s={"interactive": 0, "bulk": 0})
    assert availability.fail_unserved(db, forever, {MODEL: now - timedelta(days=1)}, now) == 0


def test_a_batchs_waiting_items_fail_together(db, settings):
    batch_id = new_id("batch")
    with db.session() as session:
        batch_lifecycle.create(session, id=batch_id, tenant=TENANT, endpoint="/v1/jobs", priority="bulk",
                               completion_window="24h", expires_at=utcnow() + timedelta(days=1))
    items = [_queued(db, age_s=4000, priority="bulk", batch_id=batch_id) for _ in range(3)]
    now = utcnow()
    assert availability.fail_unserved(db, settings, {MODEL: now - timedelta(seconds=3700)}, now) >= 3
    assert {_job(db, item).error_code for item in items} == {"model_unavailable"}
