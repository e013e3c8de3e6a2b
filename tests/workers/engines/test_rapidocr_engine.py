"""The rapidocr engine in-process, on a receipt and an invoice rendered by the benchmark generator."""
import random

import pytest

from bench.ocr_eval import fields
from bench.receipts import Style, make_document, render
from service.core.config import load_settings
from workers.engines import create_engine
from workers.engines.base import GenerationRequest
from workers.modelstore.registry import local_model


def test_the_model_is_available_wherever_the_package_is_installed():
    settings = load_settings({"default_model": "rapidocr"}, environ={})
    local = local_model(settings, settings.registry["rapidocr"])
    assert local.exported and any(local.path.glob("*.onnx"))  # PP-OCR models inside the wheel


@pytest.fixture(scope="module")
def engine():
    settings = load_settings({"default_model": "rapidocr"}, environ={})
    engine = create_engine(local_model(settings, settings.registry["rapidocr"]), settings)
    engine.load()
    yield engine
    engine.close()


def test_it_reads_a_receipts_total_and_an_invoices_number(engine):
    rng = random.Random(7)
    receipt, invoice = make_document(rng, "receipt", 5), make_document(rng, "invoice", 3)
    read_receipt = engine.submit(GenerationRequest("", render(receipt, Style(size=22)), 1)).result(timeout=120)
    read_invoice = engine.submit(GenerationRequest("", render(invoice, Style(rotation=1.0, blur=0.6)), 1)).result(
        timeout=120)
    assert fields(read_receipt.text)["total"] == receipt.total
    assert fields(read_invoice.text)["invoice_number"] == invoice.invoice_number
    assert fields(read_invoice.text)["total"] == invoice.total


def test_the_result_has_lines_with_boxes_and_no_tokens(engine):
    doc = make_document(random.Random(1), "receipt", 2)
    result = engine.submit(GenerationRequest("", render(doc), 1)).result(timeout=120)
    assert [line["text"] for line in result.lines] == result.text.splitlines()
    assert len(result.lines) == len(doc.lines)
    first = result.lines[0]
    assert len(first["box"]) == 4 and all(len(point) == 2 for point in first["box"])
    assert 0.5 < first["confidence"] <= 1
    assert result.prompt_tokens is None and result.completion_tokens is None and result.ttft_ms is None
    assert result.inference_ms > 0 and result.batch_size == 1 and result.finish_reason == "stop"


def test_a_request_cancelled_while_waiting_does_not_run(engine):
    image = render(make_document(random.Random(2), "receipt", 30))
    busy = engine.submit(GenerationRequest("", image, 1))
    waiting = engine.submit(GenerationRequest("", image, 1))
    waiting.cancel()
    assert waiting.result(timeout=120).finish_reason == "cancelled"
    assert busy.result(timeout=120).finish_reason == "stop"


def test_word_boxes_split_each_line_into_its_words_inside_the_lines_box(engine):
    doc = make_document(random.Random(3), "invoice", 2)
    result = engine.submit(GenerationRequest("", render(doc), 1, word_boxes=True)).result(timeout=120)
    for line in result.lines:
        assert " ".join(word["text"] for word in line["words"]) == " ".join(line["text"].split())
        xs, ys = [p[0] for p in line["box"]], [p[1] for p in line["box"]]
        for word in line["words"]:
            assert all(min(xs) - 3 <= x <= max(xs) + 3 and min(ys) - 3 <= y <= max(ys) + 3 for x, y in word["box"])
            assert 0 < word["confidence"] <= 1
    assert all("words" not in line for line in engine.submit(GenerationRequest("", render(doc), 1)).result(
        timeout=120).lines)
