"""Batch submission, ingest and cancel in the core, on a real database, blob store and broker (no HTTP, no worker):
lines become jobs or line errors, a re-run ingests nothing twice, and an Idempotency-Key replays only the same
request."""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from service.adapters.blobs import LocalBlobStore
from service.adapters.broker import Broker
from service.adapters.db import Database
from service.core import batches, logs
from service.core.config import Settings
from service.core.errors import ApiError
from service.core.jobs import resolve_task
from service.core.models import Batch, File, Job, JobEvent
from service.core.requests import task_model
from service.core.tenancy import Caller
from service.core.validation import parse
from tests.conftest import TENANT, make_image

MODEL = "tiny-idle"  # no worker ever serves it: the jobs sent here stay in their queue


@pytest.fixture
def blobs(tmp_path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


@pytest.fixture
def broker(settings: Settings, module_db: Database) -> Iterator[Broker]:
    broker = Broker(settings, module_db)
    yield broker
    broker.close()


def _line(custom_id: str, image: bytes | str | None = None, **body: Any) -> dict[str, Any]:
    image = make_image() if image is None else image
    url = image if isinstance(image, str) else "data:image/png;base64," + base64.b64encode(image).decode()
    return {"custom_id": custom_id, "method": "POST", "url": batches.CHAT_ENDPOINT, "body": {
        "model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is the total?"}, {"type": "image_url", "image_url": {"url": url}}]}],
        **body}}


def _input_file(db: Database, blobs: LocalBlobStore, lines: list[Any], tenant: str = TENANT) -> str:
    raw = b"\n".join(line if isinstance(line, bytes) else json.dumps(line).encode() for line in lines)
    with db.session() as session:
        return batches.store_file(session, blobs, io.BytesIO(raw), "input.jsonl", "batch", tenant).id


def _openai(file_id: str, **options: Any) -> batches.BatchRequest:
    return batches.BatchRequest(endpoint=batches.CHAT_ENDPOINT, input_file_id=file_id,
                                **{"completion_window": "24h", "priority": "bulk", "metadata": None, **options})


def _native(settings: Settings, blobs: LocalBlobStore, images: dict[str, bytes], **options: Any
            ) -> batches.BatchRequest:
    fields = parse(task_model(settings), {"prompt": "What is the total?", "model": MODEL, "max_tokens": 4})
    task = resolve_task(settings, fields)
    return batches.BatchRequest(endpoint=batches.NATIVE_ENDPOINT, task_fields=task.job_fields(),
                                images=tuple(batches.store_image(settings, blobs, name, data, model=MODEL)
                                             for name, data in images.items()),
                                **{"completion_window": "24h", "priority": "bulk", "metadata": None, **options})


def _submit(db: Database, blobs: LocalBlobStore, broker: Broker, settings: Settings, request: batches.BatchRequest,
            key: str | None = None, caller: Caller | None = None) -> tuple[str, bool]:
    # As in a request: the session is the request's (submit commits it), and the log ids it binds end with it.
    with db.sessions() as session, logs.context():
        batch, replayed = batches.submit(session, db, blobs, broker, settings, caller or Caller(tenant=TENANT),
                                         request, key)
        return batch.id, replayed


def _ingest(db: Database, blobs: LocalBlobStore, broker: Broker, settings: Settings, batch_id: str) -> str | None:
    return batches.ingest(db, blobs, broker, settings, batch_id, give_up=lambda: True)


def _batch(db: Database, batch_id: str) -> Batch:
    with db.session() as session:
        return session.get(Batch, batch_id)


def _items(db: Database, batch_id: str) -> dict[str, Job]:
    with db.session() as session:
        return {job.custom_id: job for job in session.scalars(select(Job).where(Job.batch_id == batch_id))}


def test_ingest_makes_a_job_of_each_line_a_failed_item_of_each_bad_request_and_sends_the_queued(
        module_db, blobs, broker, settings):
    file_id = _input_file(module_db, blobs, [
        _line("a"), _line("b", make_image(color=(1, 2, 3))), b"   ",  # a blank line is skipped
        _line("broken", make_image()[:60]),  # parses, but its image is truncated
        _line("remote", "https://example.com/r.png"),  # URLs are not fetched here
    ])
    batch_id, _ = _submit(module_db, blobs, broker, settings, _openai(file_id))
    assert _batch(module_db, batch_id).status == "validating" and not _items(module_db, batch_id)

    assert _ingest(module_db, blobs, broker, settings, batch_id) == "in_progress"
    items = _items(module_db, batch_id)
    assert {custom_id: job.status for custom_id, job in items.items()} == {
        "a": "queued", "b": "queued", "broken": "failed", "remote": "failed"}
    assert (items["broken"].error_code, items["remote"].error_code) == ("invalid_image", "unsupported_image_url")
    assert items["a"].enqueued_at is not None and items["b"].enqueued_at is not None  # sent once committed
    assert items["a"].image_sha256 != items["b"].image_sha256 and items["a"].model == MODEL
    batch = _batch(module_db, batch_id)
    assert batch.in_progress_at is not None and batch.errors is None

    # A redelivered ingest task finds the batch no longer validating and adds nothing.
    assert _ingest(module_db, blobs, broker, settings, batch_id) is None
    assert _items(module_db, batch_id).keys() == items.keys()
    with module_db.session() as session:
        events = session.scalars(select(JobEvent.type).where(JobEvent.job_id == items["a"].id)).all()
    assert events == ["job.queued"]


def test_malformed_lines_fail_the_batch_with_each_line_named_and_no_job(module_db, blobs, broker, settings):
    file_id = _input_file(module_db, blobs, [
        _line("a"), b"{not json}", _line("a"), {"method": "POST", "url": batches.CHAT_ENDPOINT, "body": {}},
        {**_line("c"), "url": "/v1/embeddings"}, b"[1, 2]",
    ])
    batch_id, _ = _submit(module_db, blobs, broker, settings, _openai(file_id))
    assert _ingest(module_db, blobs, broker, settings, batch_id) == "failed"
    batch = _batch(module_db, batch_id)
    assert [(error["line"], error["code"]) for error in batch.errors["data"]] == [
        (2, "invalid_json_line"), (3, "duplicate_custom_id"), (4, "missing_custom_id"), (5, "invalid_url"),
        (6, "invalid_request")]
    assert batch.failed_at is not None and not _items(module_db, batch_id)
    assert _ingest(module_db, blobs, broker, settings, batch_id) is None
    assert _batch(module_db, batch_id).status == "failed"


def test_an_empty_input_file_fails_the_batch(module_db, blobs, broker, settings):
    batch_id, _ = _submit(module_db, blobs, broker, settings, _openai(_input_file(module_db, blobs, [b""])))
    assert _ingest(module_db, blobs, broker, settings, batch_id) == "failed"
    assert [error["code"] for error in _batch(module_db, batch_id).errors["data"]] == ["empty_batch"]


def test_a_batch_whose_every_item_is_refused_completes_at_ingest(module_db, blobs, broker, settings):
    file_id = _input_file(module_db, blobs, [_line("broken", make_image()[:60])])
    batch_id, _ = _submit(module_db, blobs, broker, settings, _openai(file_id))
    assert _ingest(module_db, blobs, broker, settings, batch_id) == "completed"
    batch = _batch(module_db, batch_id)
    assert batch.output_file_id is None and batch.error_file_id is not None
    with module_db.session() as session:
        error_line = json.loads(blobs.open(session.get(File, batch.error_file_id).sha256).read())
    assert (error_line["custom_id"], error_line["error"]["code"]) == ("broken", "invalid_image")


def test_a_native_batch_is_ingested_when_submitted(module_db, blobs, broker, settings):
    images = {"r1.png": make_image(), "r2.png": make_image(color=(9, 9, 9)), "bad.png": b"not an image"}
    batch_id, replayed = _submit(module_db, blobs, broker, settings, _native(settings, blobs, images))
    assert not replayed and _batch(module_db, batch_id).status == "in_progress"
    items = _items(module_db, batch_id)
    assert {custom_id: job.status for custom_id, job in items.items()} == {
        "r1.png": "queued", "r2.png": "queued", "bad.png": "failed"}
    assert items["r1.png"].prompt == "What is the total?" and items["r1.png"].enqueued_at is not None


def test_an_openai_batch_needs_an_input_file_of_its_own_tenant(module_db, blobs, broker, settings):
    theirs = _input_file(module_db, blobs, [_line("a")], tenant="globex")
    for file_id in (theirs, "file_missing"):
        with pytest.raises(ApiError) as refused:
            _submit(module_db, blobs, broker, settings, _openai(file_id))
        assert (refused.value.code, refused.value.details) == ("invalid_field", {"field": "input_file_id"})


def test_a_batch_that_would_pass_the_quota_is_refused_whole(module_db, blobs, broker, settings):
    caller = Caller(tenant="quota-tenant", max_queued_jobs=1)
    images = {"a.png": make_image(), "b.png": make_image(color=(1, 1, 1))}
    with pytest.raises(ApiError) as refused:
        _submit(module_db, blobs, broker, settings, _native(settings, blobs, images), caller=caller)
    assert refused.value.code == "quota_exceeded"
    with module_db.session() as session:
        assert session.scalars(select(Batch).where(Batch.tenant == "quota-tenant")).first() is None


@pytest.mark.parametrize("form", ["openai", "native"])
def test_an_idempotency_key_replays_the_same_request_and_refuses_a_different_one(
        module_db, blobs, broker, settings, form):
    if form == "openai":
        file_id = _input_file(module_db, blobs, [_line("a")])
        same, different = _openai(file_id), _openai(file_id, completion_window="90m")
    else:
        same = _native(settings, blobs, {"a.png": make_image()})
        different = _native(settings, blobs, {"a.png": make_image(color=(0, 0, 0))})  # same name, other bytes
    key = f"key-{form}"
    batch_id, replayed = _submit(module_db, blobs, broker, settings, same, key)
    assert not replayed
    assert _submit(module_db, blobs, broker, settings, same, key) == (batch_id, True)
    with pytest.raises(ApiError) as reused:
        _submit(module_db, blobs, broker, settings, different, key)
    assert (reused.value.status, reused.value.code) == (409, "idempotency_key_reused")
    assert reused.value.details == {"batch_id": batch_id}
    # Keys are per tenant: another tenant's same key is a batch of its own.
    if form == "native":
        other, replayed = _submit(module_db, blobs, broker, settings, different, key, Caller(tenant="globex"))
        assert other != batch_id and not replayed
    with module_db.session() as session:
        assert session.scalars(select(Batch.id).where(Batch.idempotency_key == key, Batch.tenant == TENANT)).all() \
            == [batch_id]


def test_a_batch_stored_before_fingerprints_replays_for_its_key(module_db, blobs, broker, settings):
    file_id = _input_file(module_db, blobs, [_line("a")])
    with module_db.session() as session:
        old = batches.create_batch(session, tenant=TENANT, endpoint=batches.CHAT_ENDPOINT, input_file_id=file_id,
                                   completion_window="24h", priority="bulk", metadata=None, idempotency_key="old")
        old_id = old.id
    assert _submit(module_db, blobs, broker, settings, _openai(file_id, metadata={"x": "1"}), "old") == (old_id, True)


def test_the_fingerprint_covers_what_is_asked_and_not_how_the_bytes_are_held(settings, blobs):
    request = _native(settings, blobs, {"a.png": make_image()})
    assert request.fingerprint() == _native(settings, blobs, {"a.png": bytes(make_image())}).fingerprint()
    for other in (_native(settings, blobs, {"b.png": make_image()}),
                  _native(settings, blobs, {"a.png": make_image()}, priority="high"),
                  _native(settings, blobs, {"a.png": make_image()}, webhook_url="https://example.com/hook")):
        assert other.fingerprint() != request.fingerprint()


def test_cancel_ends_a_batch_with_nothing_running_at_once(module_db, blobs, broker, settings):
    batch_id, _ = _submit(module_db, blobs, broker, settings, _native(settings, blobs, {"a.png": make_image()}))
    with module_db.sessions() as session:
        batches.cancel(module_db, session, blobs, session.get(Batch, batch_id))
        assert session.get(Batch, batch_id).status == "cancelled"  # the caller's session sees the ending
    assert _items(module_db, batch_id)["a.png"].status == "cancelled"
    with module_db.sessions() as session, pytest.raises(ApiError) as refused:
        batches.cancel(module_db, session, blobs, session.get(Batch, batch_id))
    assert refused.value.code == "batch_not_cancellable"


def test_hostile_lines_are_line_errors_alike_on_every_database_and_the_batch_never_stays_validating(
        module_db, blobs, broker, settings):
    deep = b'{"custom_id": "deep", "method": "POST", "url": "/v1/chat/completions", "body": ' + b"[" * 100_000 \
        + b"]" * 100_000 + b"}"
    huge = b'{"custom_id": "huge", "pad": "' + b"x" * (batches.max_line_bytes(settings) + 10) + b'"}'
    file_id = _input_file(module_db, blobs, [
        _line("fine"), deep, b'{"custom_id": "s\\ud800x", "method": "POST", "url": "/v1/chat/completions"}',
        {**_line("nul"), "custom_id": "a\u0000b"}, _line("n" * 256), _line("text", **{"user": "x\u0000y"}), huge,
        _line("after"),
    ])
    batch_id, _ = _submit(module_db, blobs, broker, settings, _openai(file_id))
    assert _ingest(module_db, blobs, broker, settings, batch_id) == "failed"
    assert [(error["line"], error["code"]) for error in _batch(module_db, batch_id).errors["data"]] == [
        (2, "invalid_json_line"), (3, "invalid_request"), (4, "invalid_request"), (5, "invalid_custom_id"),
        (6, "invalid_request"), (7, "line_too_long")]


def test_a_batch_whose_window_passes_while_validating_expires(module_db, blobs, broker, settings):
    batch_id, _ = _submit(module_db, blobs, broker, settings, _openai(_input_file(module_db, blobs, [_line("a")])))
    with module_db.session() as session:
        session.get(Batch, batch_id).expires_at = batches.utcnow() - batches.timedelta(seconds=1)
    assert batches.expire_overdue(module_db, blobs) == 1
    batch = _batch(module_db, batch_id)
    assert batch.status == "expired" and batch.expired_at is not None and batch.output_file_id is None
    assert _ingest(module_db, blobs, broker, settings, batch_id) is None  # its ingest task, if it comes, does nothing


def test_counting_requests_counts_a_long_line_without_holding_it(module_db, blobs):
    long_line = b'{"custom_id": "big", "pad": "' + b"x" * 300_000 + b'"}'
    file_id = _input_file(module_db, blobs, [long_line, b"  ", _line("a")])
    with module_db.session() as session:
        assert batches.count_requests(blobs, session.get(File, file_id)) == 2
    with blobs.open(_sha(module_db, file_id)) as stream:
        assert [line is None for line in batches.bounded_lines(stream, 1024)] == [True, False, False]


def _sha(db: Database, file_id: str) -> str:
    with db.session() as session:
        return session.get(File, file_id).sha256


def _responses_line(custom_id: str, content: Any, **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": batches.RESPONSES_ENDPOINT, "body": {
        "model": MODEL, "max_output_tokens": 5, "input": [{"role": "user", "content": content}], **body}}


def test_responses_lines_become_jobs_with_their_instructions_image_and_schema(module_db, blobs, broker, settings):
    image = make_image(color=(5, 6, 7))
    with module_db.session() as session:
        image_file = batches.store_file(session, blobs, io.BytesIO(image), "r.png", "vision", TENANT).id
        other_tenants = batches.store_file(session, blobs, io.BytesIO(image), "r.png", "vision", "someone-else").id
    url = "data:image/png;base64," + base64.b64encode(make_image()).decode()
    schema = {"type": "object", "properties": {"total": {"type": "integer"}}, "required": ["total"]}
    file_id = _input_file(module_db, blobs, [
        _responses_line("data-url", [{"type": "input_text", "text": "Total?"},
                                     {"type": "input_image", "image_url": url}],
                        instructions="Be brief.", temperature=0.5,
                        text={"format": {"type": "json_schema", "name": "r", "schema": schema}}),
        _responses_line("file-id", [{"type": "input_image", "file_id": image_file},
                                    {"type": "input_text", "text": "?"}]),
        _responses_line("string", "Just words", max_output_tokens=3),
        {**_responses_line("plain", []), "body": {"model": MODEL, "input": "no image at all"}},
        _responses_line("foreign-file", [{"type": "input_image", "file_id": other_tenants},
                                         {"type": "input_text", "text": "?"}]),
        _responses_line("bad-format", [{"type": "input_image", "image_url": url}, {"type": "input_text", "text": "?"}],
                        text={"format": {"type": "xml"}}),
        _responses_line("bad-tokens", [{"type": "input_image", "image_url": url}, {"type": "input_text", "text": "?"}],
                        max_output_tokens=0),
    ])
    request = dataclasses.replace(_openai(file_id), endpoint=batches.RESPONSES_ENDPOINT)
    batch_id, _ = _submit(module_db, blobs, broker, settings, request)
    assert _ingest(module_db, blobs, broker, settings, batch_id) == "in_progress"
    items = _items(module_db, batch_id)

    assert (items["data-url"].status, items["file-id"].status) == ("queued", "queued")
    assert items["data-url"].messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Total?"}, {"type": "image"}]}]
    assert items["data-url"].response_schema == schema and items["data-url"].temperature == 0.5
    assert items["data-url"].max_tokens == 5 and items["file-id"].prompt == "?"
    assert items["file-id"].image_sha256 == hashlib.sha256(image).hexdigest()
    failed = {name: (job.status, job.error_code, job.error_message) for name, job in items.items()
              if name not in ("data-url", "file-id")}
    assert {name: code for name, (_, code, _) in failed.items()} == {
        "string": "invalid_field", "plain": "invalid_field", "foreign-file": "invalid_field",
        "bad-format": "invalid_response_format", "bad-tokens": "invalid_field"}
    assert "one image" in failed["plain"][2] and other_tenants in failed["foreign-file"][2]
    assert "'text.format'" in failed["bad-format"][2] and "max_output_tokens" in failed["bad-tokens"][2]
