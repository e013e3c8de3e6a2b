"""Grounded fields through a real worker: the tiny VLM extracts, the worker's own RapidOCR finds each value on the
page, and the job, its webhook and its batch CSV carry fields with page, box, confidence, and the review flag."""
import csv
import io
import json
import random
import time

import pytest

from bench.documents import make_invoice, to_pdf
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


def _two_page_invoice_pdf():
    doc = make_invoice(random.Random(6), n_pages=2, items_per_page=2)
    schema = {"type": "object", "additionalProperties": False, "required": ["invoice_number", "total"],
              "properties": {"invoice_number": {"enum": [doc.values["invoice_number"]]},
                             "total": {"enum": [doc.values["total"]]}}}
    return doc, to_pdf(doc.pages), json.dumps({"type": "json_schema", "json_schema": {"name": "f", "schema": schema}})


def test_a_pdf_extraction_grounds_each_field_on_the_page_it_is_printed_on(client, vlm_worker):
    doc, pdf, response_format = _two_page_invoice_pdf()
    assert (doc.placed["invoice_number"].page, doc.placed["total"].page) == (1, 2)
    job_id = client.post("/v1/jobs", data={"image": (io.BytesIO(pdf), "invoice.pdf"), "preset": "invoice",
                                           "model": GROUNDED, "response_format": response_format}).get_json()["id"]
    job = wait_for_status(client, job_id, {"succeeded", "failed"}, timeout=240)
    assert job["status"] == "succeeded" and job["page_mode"] == "document", job["error"]
    fields = job["result"]["fields"]
    for path in ("invoice_number", "total"):
        placed = doc.placed[path]
        assert fields[path]["grounded"] and fields[path]["page"] == placed.page, (path, fields[path])
        assert iou(tuple(fields[path]["bbox"]), placed.box) >= 0.5, (path, fields[path], placed)
    # (the tiny model's probabilities may still flag a field low_confidence; none is ungrounded)
    assert all(reason["reason"] != "ungrounded" for reason in job["result"]["review_reasons"])


def test_a_per_page_extraction_answers_each_page_without_fields(client, vlm_worker):
    # per_page: each page has its own answer, and `fields` describe one answer; grounded fields are document mode's.
    _, pdf, response_format = _two_page_invoice_pdf()
    job_id = client.post("/v1/jobs", data={"image": (io.BytesIO(pdf), "invoice.pdf"), "preset": "invoice",
                                           "model": GROUNDED, "response_format": response_format,
                                           "page_mode": "per_page"}).get_json()["id"]
    job = wait_for_status(client, job_id, {"succeeded", "failed"}, timeout=240)
    assert job["status"] == "succeeded", job["error"]
    assert "fields" not in job["result"] and "review" not in job["result"]
    assert [page["page"] for page in job["pages"]] == [1, 2]
    assert all("json" in page["result"] and "fields" not in page["result"] for page in job["pages"])
