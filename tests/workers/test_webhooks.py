"""Webhook delivery against a real receiver: retries, backoff, Retry-After, 410, SSRF, the periodic pass, and a slow
receiver that never gets two attempts at once."""
import dataclasses
import hashlib
import threading
import time
from datetime import UTC
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sqlalchemy import select

from service.adapters.broker import Broker
from service.core.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, new_id, utcnow
from tests.conftest import TENANT, drive_delivery, finished_job
from workers.maintenance import requeue_due_deliveries
from workers.webhooks import BUSY_RETRY_S, deliver, next_delay_s


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
    assert data["id"] == job_id and data["result"]["text"] == "forty-two" and data["usage"]["total_tokens"] == 5
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


def test_the_development_setting_lets_a_delivery_reach_a_receiver_on_this_machine(db, settings, receiver):
    local = dataclasses.replace(settings, egress_allow_cidrs=(), webhook_allow_loopback=True)
    job_id = finished_job(db, webhook_url=receiver.url, webhook_secret=receiver.secret)
    [delivery] = _deliveries(db, job_id)
    assert drive_delivery(db, local, delivery.id).status == "succeeded"
    assert len(receiver.deliveries) == 1


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


class DripReceiver:
    """A receiver that reads the delivery, then answers one byte every 0.2 s: every attempt times out mid-answer.
    It records when each request came, with its webhook-id, and how many were open at once."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[str, float]] = []
        self.open_now: dict[str, int] = {}
        self.most_open = 0
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("content-length", 0)))
                webhook_id = self.headers.get("webhook-id", "")
                with lock:
                    receiver.arrivals.append((webhook_id, time.time()))
                    receiver.open_now[webhook_id] = receiver.open_now.get(webhook_id, 0) + 1
                    receiver.most_open = max(receiver.most_open, receiver.open_now[webhook_id])
                try:
                    for byte in b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok":
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.2)
                except OSError:
                    pass
                finally:
                    with lock:
                        receiver.open_now[webhook_id] -= 1
                    self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def test_a_slow_receiver_gets_each_attempt_once_on_schedule(db, settings, worker, receiver):
    slow = DripReceiver()
    job_id = finished_job(db, webhook_url=slow.url, webhook_secret=receiver.secret)
    [delivery] = _deliveries(db, job_id)
    broker = Broker(settings, db)
    try:
        broker.enqueue_delivery(delivery.id)  # to the session's worker, which sends it and its retries
        final = _wait_until_settled(db, delivery.id, timeout=60)
    finally:
        broker.close()
        slow.server.shutdown()
    schedule = settings.webhook_retry_schedule_s
    assert (final.status, final.attempts, final.last_error) == ("failed", len(schedule), "timeout")
    assert [webhook_id for webhook_id, _ in slow.arrivals] == [delivery.id] * len(schedule)
    assert slow.most_open == 1  # never two attempts at once
    log = _log(db, delivery.id)
    assert [a.attempt for a in log] == list(range(1, len(schedule) + 1))
    for attempt in log:  # each attempt abandoned at the limit (the answer was still dripping)
        assert attempt.error == "timeout" and attempt.latency_ms < (settings.webhook_timeout_s + 0.5) * 1000
    for before, (_, arrived) in zip(log, slow.arrivals[1:], strict=False):
        ended = before.created_at.replace(tzinfo=UTC).timestamp()
        waited = arrived - ended  # the next attempt came after this one ended, and after its delay
        assert waited >= schedule[before.attempt] - 0.05, (before.attempt, waited)


def _wait_until_settled(db, delivery_id, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with db.session() as session:
            delivery = session.get(WebhookDelivery, delivery_id)
        if delivery.status != "pending":
            return delivery
        time.sleep(0.1)
    raise TimeoutError(f"delivery {delivery_id} still pending")


def test_a_receiver_busy_on_another_worker_is_tried_again_later(db, settings, receiver):
    job_id = finished_job(db, webhook_url=receiver.url, webhook_secret=receiver.secret)
    [delivery] = _deliveries(db, job_id)
    broker = Broker(dataclasses.replace(settings, webhook_queue="vlq.webhooks.unconsumed"), db)
    key = "url-" + hashlib.sha256(receiver.url.encode()).hexdigest()[:32]
    held = broker.redis.lock(f"vlq:webhooks:receiver:{key}", timeout=30)
    assert held.acquire(blocking=False)  # another worker is sending to this receiver
    try:
        assert deliver(db, settings, delivery.id, broker=broker) is None
        assert receiver.deliveries == []
        with db.session() as session:
            row = session.get(WebhookDelivery, delivery.id)
            assert (row.status, row.attempts, row.lease_until) == ("pending", 0, None)  # no attempt spent
            assert row.enqueued_at is not None  # sent again, BUSY_RETRY_S later
    finally:
        held.release()
    assert BUSY_RETRY_S <= 5
    assert deliver(db, settings, delivery.id, broker=broker) == "succeeded"
    assert len(receiver.deliveries) == 1
    broker.redis.delete("vlq.webhooks.unconsumed")
    broker.close()
