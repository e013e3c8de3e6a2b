"""Webhook delivery against a real receiver: retries, backoff, Retry-After, 410, SSRF, and the periodic pass."""
import dataclasses

from sqlalchemy import select

from service.adapters.broker import Broker
from service.core.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, new_id, utcnow
from tests.conftest import TENANT, drive_delivery, finished_job
from workers.maintenance import requeue_due_deliveries
from workers.webhooks import deliver, next_delay_s


def _deliveries(db, job_id):
    with db.session() as session:
        return list(session.scalars(select(WebhookDelivery).where(WebhookDelivery.subject_id == job_id)))


def _log(db, delivery_id):
    with db.session() as session:
        return list(session.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery_id)
                                    .order_by(WebhookAttempt.id)))


def test_a_terminal_transition_writes_one_delivery_with_the_full_result(db, settings, receiver):
    job_id = finished_job(db, webhook_url=receiver.url, webhook_secret=receiver.secret)
    [delivery] = _deliveries(db, job_id)
    assert (delivery.event_type, delivery.status, delivery.target) == ("job.succeeded", "pending", "request")
    assert drive_delivery(db, settings, delivery.id).status == "succeeded"
    [seen] = receiver.deliveries
    assert seen.verified and seen.webhook_id == delivery.id
    assert seen.payload["type"] == "job.succeeded"
    data = seen.payload["data"]
    assert data["id"] == job_id and data["result"] == {"text": "forty-two"} and data["usage"]["total_tokens"] == 5
    assert "timings" in data and data["webhook"] == {"url": receiver.url}
    assert receiver.secret not in str(seen.payload)


def test_failures_are_retried_with_backoff_and_the_same_webhook_id(db, settings, receiver):
    receiver.script(500, "timeout", (429, {"Retry-After": "1"}), 200)
    job_id = finished_job(db, webhook_url=receiver.url, webhook_secret=receiver.secret)
    [delivery] = _deliveries(db, job_id)
    assert drive_delivery(db, settings, delivery.id).status == "succeeded"

    assert [d.webhook_id for d in receiver.deliveries] == [delivery.id] * 4
    assert all(d.verified for d in receiver.deliveries)
    log = _log(db, delivery.id)
    assert [(a.attempt, a.status_code, a.error) for a in log] == [
        (1, 500, None), (2, None, "timeout"), (3, 429, None), (4, 200, None)]
    assert log[0].response_body == "ok" and log[0].next_attempt_at is not None and log[3].next_attempt_at is None
    assert (log[3].created_at - log[2].created_at).total_seconds() >= 1.0  # Retry-After honoured
    assert log[1].latency_ms >= settings.webhook_timeout_s * 1000 * 0.9


def test_the_schedule_runs_out_and_the_delivery_fails(db, settings, receiver):
    receiver.script(*[503] * 10)
    job_id = finished_job(db, status="failed", webhook_url=receiver.url, webhook_secret=receiver.secret)
    [delivery] = _deliveries(db, job_id)
    final = drive_delivery(db, settings, delivery.id)
    assert (final.status, final.attempts, final.last_status_code) == ("failed", 5, 503)
    assert len(receiver.deliveries) == len(settings.webhook_retry_schedule_s)
    assert receiver.deliveries[0].payload["type"] == "job.failed"


def test_a_4xx_other_than_429_is_not_retried(db, settings, receiver):
    receiver.script(400)
    job_id = finished_job(db, status="cancelled", webhook_url=receiver.url, webhook_secret=receiver.secret)
    [delivery] = _deliveries(db, job_id)
    assert drive_delivery(db, settings, delivery.id).status == "failed"
    assert len(receiver.deliveries) == 1


def test_a_410_disables_the_endpoint_and_cancels_its_pending_deliveries(db, settings, receiver):
    with db.session() as session:
        endpoint = WebhookEndpoint(id=new_id("whep"), tenant=TENANT, url=receiver.url, secret=receiver.secret,
                                   events=["job.failed"], status="active", created_at=utcnow())
        session.add(endpoint)
    receiver.script(410)
    first, second = finished_job(db, status="failed"), finished_job(db, status="failed")
    ignored = finished_job(db, status="succeeded")  # not in the endpoint's filter
    assert _deliveries(db, ignored) == []
    [delivery] = _deliveries(db, first)
    assert drive_delivery(db, settings, delivery.id).status == "failed"
    with db.session() as session:
        endpoint = session.get(WebhookEndpoint, endpoint.id)
    assert endpoint.status == "disabled" and "410" in endpoint.disabled_reason
    [other] = _deliveries(db, second)
    assert other.status == "cancelled"
    assert finished_job(db, status="failed") and len(receiver.deliveries) == 1


def test_a_url_that_resolves_to_a_private_address_is_refused_when_sending(db, settings, receiver):
    strict = dataclasses.replace(settings, egress_allow_cidrs=())
    job_id = finished_job(db, webhook_url=receiver.url, webhook_secret=receiver.secret)
    [delivery] = _deliveries(db, job_id)
    assert deliver(db, strict, delivery.id) == "failed"
    assert receiver.deliveries == []
    [attempt] = _log(db, delivery.id)
    assert attempt.error == "forbidden_address" and "non-public" in attempt.response_body


def test_redirects_are_not_followed(db, settings, receiver):
    receiver.script((302, {"Location": receiver.url + "/elsewhere"}))
    job_id = finished_job(db, webhook_url=receiver.url, webhook_secret=receiver.secret)
    [delivery] = _deliveries(db, job_id)
    assert drive_delivery(db, settings, delivery.id).status == "failed"
    assert len(receiver.deliveries) == 1


def test_a_held_delivery_is_not_taken_twice_and_the_pass_resends_due_ones(db, settings, receiver):
    job_id = finished_job(db, model="tiny-priority", webhook_url=receiver.url, webhook_secret=receiver.secret)
    [delivery] = _deliveries(db, job_id)
    with db.session() as session:  # as if a worker took it and died: leased, due again later
        row = session.get(WebhookDelivery, delivery.id)
        row.lease_until = utcnow().replace(year=2100)
    assert deliver(db, settings, delivery.id) is None
    assert receiver.deliveries == []
    with db.session() as session:
        row = session.get(WebhookDelivery, delivery.id)
        row.lease_until, row.next_attempt_at = utcnow(), utcnow().replace(year=2000)
    broker = Broker(dataclasses.replace(settings, webhook_queue="vlq.webhooks.unconsumed"), db)
    assert requeue_due_deliveries(db, broker, settings) >= 1
    with db.session() as session:
        enqueued_at = session.get(WebhookDelivery, delivery.id).enqueued_at
    assert enqueued_at is not None
    requeue_due_deliveries(db, broker, settings)  # too soon: not enqueued a second time
    with db.session() as session:
        assert session.get(WebhookDelivery, delivery.id).enqueued_at == enqueued_at
    broker.close()


def test_the_retry_delay_follows_the_schedule_with_jitter_and_retry_after(settings):
    schedule = dataclasses.replace(settings, webhook_retry_schedule_s=(0, 5, 300))
    assert 5 <= next_delay_s(schedule, 1) <= 5.5
    assert 300 <= next_delay_s(schedule, 2) <= 330
    assert next_delay_s(schedule, 3) is None
    assert next_delay_s(schedule, 1, retry_after_s=120) == 120
    assert next_delay_s(schedule, 1, retry_after_s=10**6) == 300  # capped at the longest wait
