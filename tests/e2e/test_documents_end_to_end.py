"""Documents through real workers: PDF, TIFF and HEIC read by the tiny model (whole, and page by page) and by
rapidocr, whose text shows each page was read from the right page."""
import base64
import io
import json

import pytest
from PIL import Image

from tests.conftest import data_url, make_image, wait_for_status
from tests.inputs import encrypted_pdf, make_heic, make_pdf, make_tiff

DOCS = "tiny-docs"  # an alias of the tiny model that only this module's worker serves
TEXTS = ["INVOICE 4711", "TOTAL 93.50", "SIGNED BY ANNA"]


@pytest.fixture(scope="module")
def docs_worker(start_worker):
    process = start_worker(f"rapidocr,{DOCS}")
    process.wait_live("rapidocr")
    process.wait_live(DOCS)
    yield process
    process.stop()


def _run(client, *files, **fields):
    data = {"image": [(io.BytesIO(content), "upload") for content in files], **fields}
    response = client.post("/v1/jobs", data=data)
    assert response.status_code == 202, response.get_json()
    job = wait_for_status(client, response.get_json()["id"], {"succeeded", "failed", "cancelled"}, timeout=180)
    assert job["status"] == "succeeded", job["error"]
    return job


def _words(text):
    return text.upper().replace(" ", "")


def test_a_pdf_in_one_request_renders_and_stores_every_page(client, docs_worker):
    job = _run(client, make_pdf(TEXTS), model=DOCS, prompt="What is the total?", max_tokens="8")
    assert job["page_mode"] == "document" and job["usage"]["prompt_tokens"] > 0 and job["result"]["text"]
    for page in job["pages"]:
        assert page["image"] is not None and page["result"] is None and page["status"] is None
        rendered = client.get(f"/v1/jobs/{job['id']}/pages/{page['page']}/image")
        assert rendered.mimetype == "image/png"
        assert Image.open(io.BytesIO(rendered.data)).size == (page["width"], page["height"])
    # Three pages cost the model more than one: each page is in the prompt.
    single = _run(client, make_pdf(TEXTS[:1]), model=DOCS, prompt="What is the total?", max_tokens="8")
    assert job["usage"]["prompt_tokens"] > single["usage"]["prompt_tokens"]


def test_per_page_mode_answers_each_page_and_sums_them(client, docs_worker):
    job = _run(client, make_pdf(TEXTS), model=DOCS, prompt="Read it.", max_tokens="6", pages="3,1",
               page_mode="per_page")
    pages = job["pages"]
    assert [page["page"] for page in pages] == [3, 1]
    assert all(page["status"] == "succeeded" and page["usage"]["completion_tokens"] > 0 for page in pages)
    assert all(page["timings"]["inference_ms"] > 0 for page in pages)
    assert job["usage"]["completion_tokens"] == sum(page["usage"]["completion_tokens"] for page in pages)
    assert job["result"]["text"] == "\n\n".join(page["result"]["text"] for page in pages)


def test_grounding_with_ocr_reads_every_page_into_the_prompt(client, docs_worker):
    fields = {"model": DOCS, "prompt": "What is the total?", "max_tokens": "2"}
    grounded = _run(client, make_pdf(TEXTS), ground_with_ocr="true", **fields)
    plain = _run(client, make_pdf(TEXTS), **fields)
    # Three pages of OCR text ("Page N:" and its words) went into the prompt.
    assert grounded["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"] + 15


def test_several_images_in_one_request(client, docs_worker):
    job = _run(client, make_image(color=(0, 0, 255)), make_image("JPEG", color=(0, 255, 0)), model=DOCS,
               prompt="Compare them.", max_tokens="4")
    assert [page["source_format"] for page in job["pages"]] == ["PNG", "JPEG"] and job["result"]["text"]


def test_ocr_reads_each_pdf_page_on_its_own(client, docs_worker):
    job = _run(client, make_pdf(TEXTS), model="rapidocr")
    assert job["page_mode"] == "per_page"  # an OCR engine reads one page at a time
    for page, text in zip(job["pages"], TEXTS, strict=True):
        assert _words(text) in _words(page["result"]["text"])
        assert all(_words(other) not in _words(page["result"]["text"]) for other in TEXTS if other != text)
    assert {line["page"] for line in job["result"]["lines"]} == {1, 2, 3}


def test_ocr_reads_tiff_frames_and_heic(client, docs_worker):
    tiff = _run(client, make_tiff(["FRAME ONE", "FRAME TWO"]), model="rapidocr")
    assert [_words(page["result"]["text"]) for page in tiff["pages"]] == ["FRAMEONE", "FRAMETWO"]
    heic = _run(client, make_heic("HEIC 42"), model="rapidocr")
    assert _words(heic["result"]["text"]) == "HEIC42"


def _image_part(data, mime="image/png"):
    return {"type": "image_url", "image_url": {"url": data_url(data, mime)}}


def test_openai_chat_with_several_images_and_a_conversation(client, docs_worker):
    first, second = make_image(color=(255, 0, 0)), make_image(color=(0, 0, 255))
    response = client.post("/v1/chat/completions", json={"model": DOCS, "max_tokens": 4, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Which is red?"}, _image_part(first),
                                     _image_part(second)]}]})
    assert response.status_code == 200, response.get_json()
    job = client.get(f"/v1/jobs/{response.get_json()['id'].removeprefix('chatcmpl-')}").get_json()
    assert [page["page"] for page in job["pages"]] == [1, 2] and job["messages"] is None
    # A conversation: each image where its turn put it.
    response = client.post("/v1/chat/completions", json={"model": DOCS, "max_tokens": 4, "messages": [
        {"role": "user", "content": [_image_part(first), {"type": "text", "text": "Remember this."}]},
        {"role": "assistant", "content": "Done."},
        {"role": "user", "content": [_image_part(second), {"type": "text", "text": "Same colour?"}]}]})
    assert response.status_code == 200, response.get_json()
    job = client.get(f"/v1/jobs/{response.get_json()['id'].removeprefix('chatcmpl-')}").get_json()
    assert len(job["pages"]) == 2 and len(job["messages"]) == 3


def test_generate_content_with_several_inline_images_and_a_pdf(client, docs_worker):
    parts = [{"text": "Compare."}] + [{"inline_data": {"mime_type": mime, "data": base64.b64encode(data).decode()}}
                                      for data, mime in ((make_image(), "image/png"),
                                                         (make_pdf(TEXTS[:2]), "application/pdf"))]
    response = client.post(f"/v1/models/{DOCS}:generateContent",
                           json={"contents": [{"role": "user", "parts": parts}],
                                 "generationConfig": {"maxOutputTokens": 4}})
    assert response.status_code == 200, response.get_json()
    job = client.get(f"/v1/jobs/{response.get_json()['responseId']}").get_json()
    assert [(page["page"], page["source_format"]) for page in job["pages"]] == [(1, "PNG"), (2, "PDF"), (3, "PDF")]


def test_a_batch_line_with_several_images_and_a_native_batch_of_documents(client, docs_worker):
    line = {"custom_id": "pair", "method": "POST", "url": "/v1/chat/completions", "body": {
        "model": DOCS, "max_tokens": 4, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Compare."}, _image_part(make_image()),
            _image_part(make_image("JPEG"), "image/jpeg")]}]}}
    uploaded = client.post("/v1/files", data={"purpose": "batch",
                                              "file": (io.BytesIO(json.dumps(line).encode()), "in.jsonl")})
    batch = client.post("/v1/batches", json={"input_file_id": uploaded.get_json()["id"],
                                             "endpoint": "/v1/chat/completions", "completion_window": "24h"})
    batch = wait_for_status(client, batch.get_json()["id"], {"completed", "failed"}, 180, resource="batches")
    assert batch["request_counts"]["completed"] == 1, batch
    job = client.get("/v1/jobs").get_json()["data"][0]
    assert job["custom_id"] == "pair" and len(job["pages"]) == 2

    response = client.post("/v1/batches", data={
        "model": "rapidocr", "pages": "1",
        "images": [(io.BytesIO(make_pdf(TEXTS)), "invoice.pdf"), (io.BytesIO(make_tiff(["FRAME ONE"])), "scan.tif"),
                   (io.BytesIO(encrypted_pdf()), "locked.pdf")]})
    assert response.status_code == 200, response.get_json()
    batch = wait_for_status(client, response.get_json()["id"], {"completed"}, 180, resource="batches")
    assert batch["request_counts"] == {"total": 3, "completed": 2, "failed": 1, "cancelled": 0}
    items = {item["custom_id"]: item for item in map(json.loads, client.get(
        f"/v1/batches/{batch['id']}/results").get_data(as_text=True).splitlines())}
    assert _words(TEXTS[0]) in _words(items["invoice.pdf"]["text"]) and _words(TEXTS[1]) not in _words(
        items["invoice.pdf"]["text"])
    assert _words(items["scan.tif"]["text"]) == "FRAMEONE"
    assert items["locked.pdf"]["error_code"] == "pdf_encrypted"
