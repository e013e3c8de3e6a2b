"""Grounded fields through a real worker: the tiny VLM extracts, the worker's own RapidOCR finds each value on the
page, and the job, its webhook and its batch CSV carry fields with page, box, confidence, and the review flag."""
import csv
import io
import json
import random
import time

import pytest

from bench.documents import make_invoice
from service.core.grounding import iou
from tests.conftest import wait_for_status

GROUNDED = "tiny-grounded"  # this module's worker serves it alone: its OCR engine is the private one for grounding


@pytest.fixture(scope="module")
def vlm_worker(start_worker):
    process = start_worker(GROUNDED)
    process.wait_live(GROUNDED)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def invoice():
    doc = make_invoice(random.Random(5), n_pages=1, items_per_page=2)
    buffer = io.BytesIO()
    doc.pages[0].save(buffer, format="PNG")
    return doc, buffer.getvalue()


def _forced(doc):
    """A response_format whose enums leave the random model one answer: the invoice's true values (and an invented
    vendor reference), so where each value is printed is known."""
    truth, item = doc.values, doc.values["line_items"][1]
    properties = {
        "invoice_number": {"enum": [truth["invoice_number"]]}, "date": {"enum": [truth["date"]]},
        "total": {"enum": [truth["total"]]}, "vendor_reference": {"enum": ["REF-77X-NOWHERE"]},
        "line_items": {"type": "array", "minItems": 1, "maxItems": 1, "items": {
            "type": "object", "additionalProperties": False, "required": ["description", "amount"],
            "properties": {"description": {"enum": [item["description"]]}, "amount": {"enum": [item["amount"]]}}}},
    }
    schema = {"type": "object", "additionalProperties": False, "required": list(properties), "properties": properties}
    return json.dumps({"type": "json_schema", "json_schema": {"name": "forced", "schema": schema}})


def test_an_extraction_has_fields_on_their_page_with_boxes_confidence_and_review(client, vlm_worker, invoice,
                                                                                receiver):
    doc, image = invoice
    job_id = client.post("/v1/jobs", data={
        "image": (io.BytesIO(image), "invoice.png"), "preset": "invoice", "model": GROUNDED,
        "response_format": _forced(doc), "webhook_url": receiver.url, "webhook_secret": receiver.secret,
    }).get_json()["id"]
    job = wait_for_status(client, job_id, {"succeeded", "failed"}, timeout=180)
    assert job["status"] == "succeeded", job["error"]
    result = job["result"]
    fields = result["fields"]
    assert list(fields) == ["invoice_number", "date", "total", "vendor_reference", "line_items[0].description",
                            "line_items[0].amount"]
    for path, where in (("invoice_number", "invoice_number"), ("date", "date"), ("total", "total"),
                        ("line_items[0].description", "line_items[1].description"),
                        ("line_items[0].amount", "line_items[1].amount")):
        field = fields[path]
        assert field["grounded"] and field["page"] == 1, (path, field)
        assert iou(tuple(field["bbox"]), doc.placed[where].box) >= 0.5, (path, field, doc.placed[where])
        assert 0.5 <= field["confidence"] <= 1  # OCR agrees (~1); the model's half is its forced tokens' probability
    assert fields["total"]["value"] == result["json"]["total"] == doc.values["total"]
    invented = fields["vendor_reference"]
    assert invented == {"value": "REF-77X-NOWHERE", "confidence": invented["confidence"], "page": None,
                        "bbox": None, "grounded": False}
    assert invented["confidence"] <= 0.5
    assert result["review"] is True
    assert {"field": "vendor_reference", "reason": "ungrounded", "confidence": invented["confidence"]} in \
        result["review_reasons"]

    # The webhook carries the same fields.
    deadline = time.monotonic() + 60
    while not receiver.deliveries and time.monotonic() < deadline:
        time.sleep(0.1)
    payload = receiver.deliveries[-1].payload
    assert payload["type"] == "job.succeeded" and payload["data"]["result"]["fields"] == fields


def test_a_job_that_is_not_an_extraction_has_no_fields(client, vlm_worker, invoice):
    _, image = invoice
    job_id = client.post("/v1/jobs", data={"image": (io.BytesIO(image), "i.png"), "prompt": "What is it?",
                                           "model": GROUNDED, "max_tokens": 4}).get_json()["id"]
    job = wait_for_status(client, job_id, {"succeeded", "failed"}, timeout=120)
    assert job["status"] == "succeeded" and "fields" not in job["result"] and "review" not in job["result"]


def test_a_batch_csv_has_a_column_per_field_and_its_confidence(client, vlm_worker, invoice):
    doc, image = invoice
    response = client.post("/v1/batches", data={
        "images": [(io.BytesIO(image), "a.png"), (io.BytesIO(image), "b.png")], "preset": "invoice",
        "model": GROUNDED, "response_format": _forced(doc), "no_cache": "true"})
    assert response.status_code in (200, 201, 202), response.get_json()
    batch = wait_for_status(client, response.get_json()["id"], {"completed", "failed"}, timeout=240,
                            resource="batches")
    assert batch["status"] == "completed", batch
    text = client.get(f"/v1/batches/{batch['id']}/results?format=csv").get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 2
    for row in rows:
        assert row["fields.invoice_number"] == doc.values["invoice_number"]
        assert float(row["fields.total"]) == doc.values["total"]
        assert 0.5 <= float(row["fields.total.confidence"]) <= 1
        assert float(row["fields.vendor_reference.confidence"]) <= 0.5 and row["review"] == "True"
    lines = [json.loads(line) for line in client.get(f"/v1/batches/{batch['id']}/results").get_data(
        as_text=True).splitlines()]
    assert all(line["fields"]["total"]["grounded"] and line["review"] is True for line in lines)
