"""Presets through real workers: OCR on rapidocr, schema extraction grounded with OCR, and the cache."""
import io
import random

import pytest

from bench.receipts import make_document, render
from service.core.structured import validation_error
from tests.conftest import wait_for_status

GROUNDED = "tiny-grounded"  # an alias of the tiny model that only this module's worker serves


@pytest.fixture(scope="module")
def ocr_worker(start_worker):
    process = start_worker(f"rapidocr,{GROUNDED}")
    process.wait_live("rapidocr")
    process.wait_live(GROUNDED)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def invoice():
    doc = make_document(random.Random(11), "invoice", 4)
    buffer = io.BytesIO()
    render(doc).save(buffer, format="PNG")
    return doc, buffer.getvalue()


def _submit(client, image, **fields):
    response = client.post("/v1/jobs", data={"image": (io.BytesIO(image), "invoice.png"), **fields})
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def test_the_ocr_preset_returns_text_and_lines_then_a_repeat_comes_from_the_cache(client, ocr_worker, invoice):
    doc, image = invoice
    job = wait_for_status(client, _submit(client, image, preset="ocr")["id"], {"succeeded", "failed"})
    assert job["status"] == "succeeded", job["error"]
    assert job["model"] == "rapidocr" and job["worker"] == ocr_worker.name and job["cached"] is False
    assert doc.invoice_number in job["result"]["text"] and doc.total in job["result"]["text"]
    assert len(job["result"]["lines"]) == len(doc.lines) and "json" not in job["result"]
    assert job["usage"] is None and job["timings"]["inference_ms"] > 0 and job["batch_size"] == 1

    repeat = _submit(client, image, preset="ocr")
    assert repeat["status"] == "succeeded" and repeat["cache_of"] == job["id"]
    assert repeat["result"] == job["result"]
    fresh = _submit(client, image, preset="ocr", no_cache="true")
    assert fresh["status"] == "queued"
    assert wait_for_status(client, fresh["id"], {"succeeded", "failed"})["status"] == "succeeded"


def test_an_invoice_grounded_with_ocr_returns_json_that_validates(client, ocr_worker, invoice, settings):
    _, image = invoice
    grounded, plain = (
        wait_for_status(client, _submit(client, image, preset="invoice", model=GROUNDED, **extra)["id"],
                        {"succeeded", "failed"}, timeout=120)
        for extra in ({"ground_with_ocr": "true"}, {})
    )
    schema = settings.presets["invoice"].output_schema()
    for job in (grounded, plain):
        assert job["status"] == "succeeded", job["error"]
        assert validation_error(job["result"]["json"], schema) is None
    # The OCR text (the invoice's 10 printed lines) went into the grounded job's prompt.
    assert grounded["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"] + 40
