"""The web UI in headless Chromium against a live server and a real worker: chat, follow-ups, batches, errors.

The tiny model's answers are noise, so these assert structure: the streamed answer and its figures appear, the
follow-up request carries the earlier turns, the batch ends with one row per image, the CSV has those rows.
`VLQ_SCREENSHOT_DIR=docs/screenshots` (`make screenshots`) keeps the screenshots the README shows.
"""
from __future__ import annotations

import base64
import csv
import dataclasses
import io
import json
import os
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from service.app import create_app
from tests.conftest import TINY, serve
from tests.inputs import make_pdf

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps trying to reach Google's services.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CSV_HEADER = ["custom_id", "status", "text", "prompt_tokens", "completion_tokens", "total_tokens", "queue_ms",
              "ttft_ms", "inference_ms", "total_ms", "error_code", "error_message", "job_id"]
UNSERVED_MODEL = "tiny-idle"  # no worker serves it: a batch on it stays queued until cancelled


# -- browser -----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: the web UI tests need Debian's browser. "
                    "Install it with `apt-get install -y chromium chromium-driver` (.ci/run does).", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: `pip install -r requirements.lock`.", pytrace=False)
    with sync_playwright() as playwright:
        # Debian's Chromium, never Playwright's own download (`playwright install` cannot reach its CDN).
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, live_server: str, worker: Any, api_key: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1360, "height": 900}, accept_downloads=True,
                                  color_scheme="light")
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server)
    tab = context.new_page()
    blocked: list[str] = []  # what the page's Content-Security-Policy refused: nothing the page does may be
    tab.on("console", lambda message: blocked.append(message.text)
           if "Content Security Policy" in message.text else None)
    tab.goto(live_server)
    tab.wait_for_selector("body[data-ready='true']")
    expect(tab.locator("#service-status .label")).to_have_text("Ready")  # no key yet: no worker count
    tab.fill("#api-key", api_key)  # the server runs with auth on: the user pastes a key once
    tab.press("#api-key", "Tab")
    expect(tab.locator("#service-status .label")).to_have_text(re.compile(r"Ready: \d+ workers?"))
    yield tab
    context.close()
    assert blocked == []


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("VLQ_SCREENSHOT_DIR")
    path = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def snapshot(page: Any, path: Path, **options: Any) -> None:
    page.evaluate("window.scrollTo(0, 0)")  # Playwright's clicks scroll the window a little
    page.screenshot(path=str(path), **options)


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


# -- inputs ------------------------------------------------------------------------------------

def picture(index: int, size: tuple[int, int] = (320, 240)) -> bytes:
    """A small receipt-like PNG, different for each index."""
    image = Image.new("RGB", size, (248, 246, 240))
    draw = ImageDraw.Draw(image)
    hue = [(79, 70, 229), (22, 121, 76), (180, 35, 24), (161, 92, 7)][index % 4]
    draw.rectangle([0, 0, size[0], 36], fill=hue)
    draw.text((12, 12), f"STORE #{index + 1}", fill=(255, 255, 255))
    for row in range(5):
        y = 52 + row * 26
        draw.text((12, y), f"item {row + 1}", fill=(40, 40, 40))
        draw.text((size[0] - 70, y), f"{(index + 1) * (row + 2)}.{row}0", fill=(40, 40, 40))
    draw.line([12, 190, size[0] - 12, 190], fill=(120, 120, 120))
    draw.text((12, 204), "TOTAL", fill=(20, 20, 20))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def upload(name: str, data: bytes, mime: str = "image/png") -> dict[str, Any]:
    return {"name": name, "mimeType": mime, "buffer": data}


def drop_files(page: Any, files: list[tuple[str, bytes]]) -> None:
    """Drop files on the drop zone the way a browser does, with a DataTransfer."""
    payload = [{"name": name, "b64": base64.b64encode(data).decode()} for name, data in files]
    page.evaluate("""(files) => {
        const transfer = new DataTransfer();
        for (const f of files) {
            const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
            transfer.items.add(new File([bytes], f.name, {type: "image/png"}));
        }
        const zone = document.getElementById("dropzone");
        for (const type of ["dragenter", "dragover", "drop"]) {
            zone.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true, cancelable: true}));
        }
    }""", payload)


def chat_requests(page: Any) -> list[Any]:
    sent: list[Any] = []
    page.on("request", lambda request: sent.append(request) if request.url.endswith("/v1/chat/completions") else None)
    return sent


def relay(route: Any, answers: list[str]) -> None:
    """Pass a chat request to the live server and keep the text its stream carried, for the page to be held to."""
    response = route.fetch(timeout=60_000)
    answers.append(streamed_text(response.text()))
    route.fulfill(response=response)


def streamed_text(events: str) -> str:
    """The answer a chat completion stream spells out, delta by delta."""
    text = ""
    for line in events.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            text += "".join(choice["delta"].get("content") or "" for choice in json.loads(line[6:]).get("choices", []))
    return text


def expect_answer_shown(message: Any, answer: str) -> None:
    """The page shows the answer as streamed, and marks one of only whitespace instead of showing nothing."""
    text = message.locator(".message-text")
    assert text.text_content() == answer
    blank = re.compile(r"\bblank\b")
    if answer.strip():
        expect(text).not_to_have_class(blank)
    else:
        expect(text).to_have_class(blank)


# -- conversation ------------------------------------------------------------------------------

def test_an_image_gets_an_answer_and_a_follow_up_carries_the_conversation(page, screenshot_dir):
    sent = chat_requests(page)
    held: list[Any] = []
    page.route("**/v1/chat/completions", lambda route: held.append(route))  # held until the test lets it go

    page.set_input_files("#file-input", [upload("receipt.png", picture(0))])
    expect(page.locator("#staged li")).to_have_count(1)
    expect(page.locator("#submit")).to_have_text("Ask about this image")
    page.fill("#prompt", "What is the total on this receipt?")
    page.fill("#max-tokens", "12")
    page.fill("#temperature", "1")  # greedy, the tiny model answers only newlines; sampled, it shows words
    page.click("#submit")

    # Thinking: the button is blocked and a second submit sends nothing.
    thinking = page.locator(".message.thinking")
    expect(thinking).to_be_visible()
    expect(thinking).to_contain_text("Thinking")
    expect(page.locator("#submit")).to_be_disabled()
    expect(page.locator("#reply-send")).to_be_disabled()
    page.evaluate("document.getElementById('compose-form').requestSubmit()")
    page.evaluate("document.getElementById('reply-form').requestSubmit()")
    assert len(held) == 1
    # The tiny model's sampled answer may be only whitespace: the page is held to whatever the server streamed.
    answers: list[str] = []
    relay(held[0], answers)
    page.unroute("**/v1/chat/completions")
    page.route("**/v1/chat/completions", lambda route: relay(route, answers))

    first = page.locator(".message.answered").first
    expect(first).to_be_visible(timeout=60_000)
    expect(thinking).to_have_count(0)
    answer = answers[0]
    expect_answer_shown(first, answer)
    expect(first.locator(".figure.tokens")).to_have_text(re.compile(r"^[1-9]\d* tokens out$"))
    expect(first.locator(".figure.prompt-tokens")).to_have_text(re.compile(r"^[1-9]\d* in$"))
    expect(first.locator(".figure.latency")).to_have_text(re.compile(r"^\d+(\.\d+)? (ms|s)$"))
    expect(page.locator(".message.user img.message-image")).to_have_count(1)
    expect(page.locator("#submit")).to_have_text("Add an image to start")

    body = sent[0].post_data_json
    assert (body["model"], body["max_tokens"], body["temperature"], body["stream"]) == (TINY, 12, 1, True)
    [message] = body["messages"]
    parts = {part["type"]: part for part in message["content"]}
    assert parts["image_url"]["image_url"]["url"].startswith("data:image/png;base64,")
    assert parts["text"]["text"] == "What is the total on this receipt?"

    first.locator(".copy-button").click()
    expect(first.locator(".copy-button")).to_contain_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == answer

    page.fill("#reply", "And which store is it?")
    with page.expect_response("**/v1/chat/completions", timeout=60_000) as answered:
        page.press("#reply", "Enter")
    assert answered.value.ok
    shown = page.locator(".message.answered")
    expect(shown).to_have_count(2, timeout=60_000)
    expect_answer_shown(shown.nth(1), answers[1])
    expect(shown.nth(1).locator(".figure.tokens")).to_have_text(re.compile(r"^[1-9]\d* tokens out$"))

    follow_up = sent[1].post_data_json["messages"]
    assert [m["role"] for m in follow_up] == ["user", "assistant", "user"]
    assert follow_up[0] == message
    assert follow_up[1]["content"] == answer
    assert follow_up[2]["content"] == "And which store is it?"
    assert len(sent) == 2  # the blocked submits never sent a request
    snapshot(page, screenshot_dir / "chat.png")


def test_bad_files_are_refused_in_the_browser_and_server_errors_are_shown(page, live_server, screenshot_dir, http):
    too_big = b"\x89PNG\r\n\x1a\n" + bytes(10 * 1024 * 1024)
    page.set_input_files("#file-input", [upload("notes.txt", b"not an image", "text/plain"),
                                         upload("huge.png", too_big)])
    errors = page.locator("#file-errors li")
    expect(errors).to_have_count(2)
    expect(errors.nth(0)).to_have_text("notes.txt: not a JPEG, PNG, WebP, PDF, TIFF or HEIC file.")
    expect(errors.nth(1)).to_contain_text("huge.png is 10.0 MB; the limit is 10.0 MB per image.")
    expect(page.locator("#staged li")).to_have_count(0)
    expect(page.locator("#submit")).to_be_disabled()

    broken = picture(1)[:120]  # a PNG cut short: the browser cannot tell, the server can
    page.set_input_files("#file-input", [upload("broken.png", broken)])
    expect(errors).to_have_count(0)
    page.click("#submit")
    expect(page.locator("#compose-error")).to_have_text("Write a prompt, or choose a preset.")

    page.fill("#prompt", "What is this?")
    page.click("#submit")
    error = page.locator(".message.error")
    expect(error).to_be_visible(timeout=30_000)
    data_url = "data:image/png;base64," + base64.b64encode(broken).decode()
    direct = http.post(f"{live_server}/v1/chat/completions", timeout=30, json={"model": TINY, "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url}},
                                     {"type": "text", "text": "What is this?"}]}]})
    assert direct.status_code == 400
    expect(error).to_have_text(direct.json()["error"]["message"])
    expect(page.locator("#reply-form")).to_be_hidden()  # nothing to follow up on
    expect(error.locator(".retry-button")).to_have_count(0)  # a broken image stays broken: no retry offered
    snapshot(page, screenshot_dir / "errors.png")


def test_a_pdf_is_read_page_by_page_and_shown_as_page_thumbnails(page, screenshot_dir):
    page.set_input_files("#file-input", [upload("invoice.pdf", make_pdf(["ONE", "TWO", "THREE"]), "application/pdf")])
    expect(page.locator("#staged li .doc")).to_have_text("PDF")  # a browser cannot draw a PDF in <img>
    expect(page.locator("#submit")).to_have_text("Ask about this document")
    expect(page.locator("#document-options")).to_be_visible()
    page.fill("#prompt", "What is the total?")
    page.fill("#max-tokens", "4")
    page.fill("#pages", "1,3")
    page.select_option("#page-mode", "per_page")
    with page.expect_response("**/v1/jobs") as created:
        page.click("#submit")
    job = created.value.json()
    assert job["page_mode"] == "per_page" and [entry["page"] for entry in job["pages"]] == [1, 3]

    figures = page.locator(".message.user .page-strip figure")
    expect(figures).to_have_count(2, timeout=90_000)
    expect(figures.locator("figcaption")).to_have_text(["Page 1", "Page 3"])
    for index in range(2):  # each page as the worker rendered it: Letter at 150 dpi
        page.wait_for_function("(img) => img.complete && img.naturalWidth === 1275",
                               arg=figures.nth(index).locator("img").element_handle())
    answers = page.locator(".message.answered .page-answer")
    expect(answers).to_have_count(2)
    expect(answers.nth(0)).to_contain_text("Page 1:")
    expect(answers.nth(1)).to_contain_text("Page 3:")
    expect(page.locator("#reply-form")).to_be_hidden()  # a document is asked once
    snapshot(page, screenshot_dir / "document.png")


def test_a_failed_answer_can_be_retried_in_place_with_the_same_image(page):
    sent = chat_requests(page)
    busy = {"error": {"message": "Too many requests are waiting; retry shortly.", "type": "server_error",
                      "param": None, "code": "overloaded"}}
    failures = iter([True])  # the first request fails as an overloaded server would answer; the retry goes through
    page.route("**/v1/chat/completions", lambda route: route.fulfill(status=503, json=busy)
               if next(failures, False) else route.continue_())

    page.set_input_files("#file-input", [upload("shelf.png", picture(2))])
    page.fill("#prompt", "What is the price?")
    page.fill("#max-tokens", "6")
    page.click("#submit")
    error = page.locator(".message.error")
    expect(error).to_contain_text("Too many requests are waiting")
    retry = error.locator(".retry-button")
    expect(retry).to_be_visible()
    retry.click()

    answer = page.locator(".message.answered")
    expect(answer).to_have_count(1, timeout=60_000)
    expect(error).to_have_count(0)
    expect(page.locator(".message.user")).to_have_count(1)  # the question is asked again, not twice
    expect(page.locator("#reply-form")).to_be_visible()
    assert len(sent) == 2 and sent[1].post_data_json["messages"] == sent[0].post_data_json["messages"]


def test_on_a_phone_the_page_never_overflows_its_width(browser, live_server, worker, api_key, http):
    created = http.post(f"{live_server}/v1/batches", timeout=30, data={"prompt": "x", "model": UNSERVED_MODEL},
                        files=[("images", ("a-rather-long-file-name-for-a-phone.png", picture(0)))]).json()
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        phone = context.new_page()
        phone.goto(f"{live_server}/#batch={created['id']}")
        phone.wait_for_selector("body[data-ready='true']")
        phone.fill("#api-key", api_key)
        phone.press("#api-key", "Tab")
        expect(phone.locator(f"#recent-batches [data-batch-id='{created['id']}']")).to_be_visible()
        expect(phone.locator("#results-body tr")).to_have_count(1)
        width = phone.evaluate("document.documentElement.scrollWidth")
        # What sticks out, if anything (a table scrolls inside its own box and does not count).
        wide = phone.evaluate("""() => [...document.querySelectorAll('body *')]
            .filter((e) => e.getBoundingClientRect().right > 390.5 && !e.closest('.table-wrap'))
            .map((e) => `${e.tagName}#${e.id}.${e.className} ${Math.round(e.getBoundingClientRect().right)}`)""")
        assert width <= 390 and wide == [], f"the page is {width}px wide on a 390px screen: {wide[:12]}"
    finally:
        context.close()
        http.post(f"{live_server}/v1/batches/{created['id']}/cancel", timeout=10)


# -- batches -----------------------------------------------------------------------------------

def test_a_batch_runs_with_progress_thumbnails_and_a_csv_download(page, live_server, settings, http, screenshot_dir,
                                                                   tmp_path):
    names = [f"receipt-{index}.png" for index in range(4)]
    drop_files(page, [(name, picture(index)) for index, name in enumerate(names)])
    expect(page.locator("#staged li")).to_have_count(4)
    expect(page.locator("#submit")).to_have_text("Run batch of 4 files")

    page.select_option("#preset", "describe")
    expect(page.locator("#prompt")).to_have_value(settings.presets["describe"].prompt)
    expect(page.locator("#preset-hint")).to_contain_text("Output: text")
    page.fill("#max-tokens", "8")
    page.fill("#temperature", "1")  # greedy, the tiny model answers only newlines; sampled, it shows words
    with page.expect_response("**/v1/batches") as created:
        page.click("#submit")
    batch_id = created.value.json()["id"]

    expect(page.locator("#tab-batch")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#batch-id")).to_have_text(batch_id)
    expect(page.locator("#batch-status")).to_have_text("completed", timeout=90_000)
    expect(page.locator("#count-total")).to_have_text("4")
    expect(page.locator("#count-completed")).to_have_text("4")
    expect(page.locator("#count-done")).to_have_text("4")
    expect(page.locator("#batch-progress")).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#cancel-batch")).to_be_disabled()
    expect(page.locator("#batch-warning")).to_be_hidden()
    rows = page.locator("#results-body tr")
    expect(rows).to_have_count(4)
    expect(page.locator("#results-body tr[data-status='succeeded']")).to_have_count(4)
    results = {item["custom_id"]: item for item in map(json.loads, http.get(
        f"{live_server}/v1/batches/{batch_id}/results", timeout=10).text.splitlines())}
    assert sorted(rows.locator(".file").all_inner_texts()) == names == sorted(results)
    for index in range(4):
        row = rows.nth(index)
        item = results[row.locator(".file").inner_text()]
        assert item["completion_tokens"] >= 1
        expect(row.locator(".answer")).to_have_text(item["text"], use_inner_text=False)
        expect(row.locator(".tokens")).to_have_text(f"{item['prompt_tokens']} in · {item['completion_tokens']} out")
        expect(row.locator(".latency")).to_have_text(re.compile(r"^\d+(\.\d+)? (ms|s)$"))
    thumbs = rows.locator("img.thumb")
    expect(thumbs).to_have_count(4)
    for index in range(4):
        thumbs.nth(index).scroll_into_view_if_needed()
        page.wait_for_function("(img) => img.complete && img.naturalWidth === 320",
                               arg=thumbs.nth(index).element_handle())
    expect(page.locator(f"#recent-batches [data-batch-id='{batch_id}'] .badge")).to_have_text("completed 4/4")
    snapshot(page, screenshot_dir / "batch.png")

    with page.expect_download() as downloaded:
        page.click("#download-csv")
    assert downloaded.value.suggested_filename == f"{batch_id}.csv"
    path = tmp_path / "results.csv"
    downloaded.value.save_as(path)
    with path.open(newline="") as handle:
        table = list(csv.reader(handle))
    assert table[0] == CSV_HEADER
    assert len(table) == 5
    assert sorted(row[0] for row in table[1:]) == names
    assert {row[1] for row in table[1:]} == {"succeeded"}

    with page.expect_download() as downloaded:
        page.click("#download-jsonl")
    lines = [json.loads(line) for line in Path(downloaded.value.path()).read_text().splitlines()]
    assert sorted(line["custom_id"] for line in lines) == names


def test_a_batch_can_be_cancelled_from_its_view_and_reopened_by_its_link(page, live_server):
    page.set_input_files("#file-input", [upload(f"shelf-{index}.png", picture(index)) for index in range(3)])
    expect(page.locator(f"#model option[value='{UNSERVED_MODEL}']")).to_have_text(f"{UNSERVED_MODEL} (no worker)")
    page.select_option("#model", UNSERVED_MODEL)
    page.fill("#prompt", "Read the price label.")
    page.click("#submit")
    expect(page.locator("#batch-status")).to_have_text("in progress")
    expect(page.locator("#results-body tr[data-status='queued']")).to_have_count(3)
    # The items wait for a model nobody serves: the view says so, and what to do, the moment the batch exists.
    expect(page.locator("#batch-warning")).to_contain_text(f"No live worker serves the model '{UNSERVED_MODEL}'")

    page.click("#cancel-batch")
    expect(page.locator("#batch-status")).to_have_text("cancelled")
    expect(page.locator("#count-cancelled")).to_have_text("3")
    expect(page.locator("#results-body tr[data-status='cancelled']")).to_have_count(3)
    expect(page.locator("#cancel-batch")).to_be_disabled()
    # Nothing ran: no green full bar, and no latency for items that never left the queue.
    expect(page.locator("#batch-progress")).to_have_attribute("data-state", "cancelled")
    expect(page.locator("#batch-progress")).to_have_attribute("aria-valuenow", "0")
    expect(page.locator("#results-body .latency")).to_have_text(["", "", ""])

    batch_id = page.locator("#batch-id").inner_text()
    page.goto(f"{live_server}/#batch={batch_id}")
    page.reload()
    expect(page.locator("#batch-status")).to_have_text("cancelled")
    expect(page.locator("#results-body tr")).to_have_count(3)


def test_a_live_model_is_selected_when_the_default_one_has_no_worker(browser, settings, worker, api_key):
    app = create_app(dataclasses.replace(settings, default_model=UNSERVED_MODEL))
    with serve(app) as url:
        context = browser.new_context()
        tab = context.new_page()
        tab.goto(url)
        tab.wait_for_selector("body[data-ready='true']")
        tab.fill("#api-key", api_key)
        tab.press("#api-key", "Tab")
        expect(tab.locator("#model")).to_have_value(TINY)
        unserved = tab.locator(f"#model option[value='{UNSERVED_MODEL}']")
        expect(unserved).to_have_text(f"{UNSERVED_MODEL} (no worker)")
        expect(unserved).to_have_attribute("title", re.compile("No live worker serves"))
        context.close()


# -- extraction --------------------------------------------------------------------------------

def force_answer(page: Any, values: dict[str, Any]) -> None:
    """Add a response_format to the job the page posts whose enums leave the tiny model one answer: `values`."""
    forced = {"type": "object", "additionalProperties": False, "required": list(values),
              "properties": {name: {"enum": [value]} for name, value in values.items()}}
    part = json.dumps({"type": "json_schema", "json_schema": {"name": "forced", "schema": forced}})

    def add_response_format(route: Any) -> None:
        boundary = route.request.headers["content-type"].split("boundary=")[1].encode()
        body = route.request.post_data_buffer
        closing = b"--" + boundary + b"--"
        extra = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="response_format"\r\n\r\n'
                 + part.encode() + b"\r\n")
        route.continue_(post_data=body.replace(closing, extra + closing))

    page.route("**/v1/jobs", lambda route: add_response_format(route) if route.request.method == "POST"
               else route.continue_())


def test_an_extraction_draws_each_grounded_field_over_the_image_and_hover_highlights_it(page, screenshot_dir):
    from bench.documents import make_invoice

    doc = make_invoice(random.Random(9), n_pages=1, items_per_page=2)
    buffer = io.BytesIO()
    doc.pages[0].save(buffer, format="PNG")
    # The tiny model's values are noise: the job's own response_format (added to the form the page sends) leaves it
    # one answer, the invoice's true total and number and an invented reference, so what is on the page is known.
    force_answer(page, {"invoice_number": doc.values["invoice_number"], "total": doc.values["total"],
                        "reference": "NOWHERE-123"})
    page.set_input_files("#file-input", [upload("invoice.png", buffer.getvalue())])
    page.select_option("#preset", "invoice")
    with page.expect_response(lambda r: r.url.endswith("/v1/jobs") and r.request.method == "POST") as posted:
        page.click("#submit")
    assert posted.value.status == 202
    extraction = page.locator(".message.answered .extraction")
    expect(extraction).to_be_visible(timeout=180_000)

    expect(extraction.locator("table.fields tbody tr")).to_have_count(3)
    expect(extraction.locator(".field-box")).to_have_count(2)  # the invented reference has no box
    expect(extraction.locator("tr.ungrounded")).to_have_attribute("data-field", "reference")
    expect(extraction.locator(".review.needed")).to_contain_text("reference (ungrounded)")
    image = extraction.locator(".page img")
    expect(image).to_have_js_property("complete", True)
    shown = image.bounding_box()
    box = extraction.locator('.field-box[data-field="total"]')
    drawn = box.bounding_box()
    left, top, right, bottom = doc.placed["total"].box
    # The box sits where the total was printed, on the image as shown (a few pixels of OCR padding allowed).
    assert abs(drawn["x"] - (shown["x"] + left * shown["width"])) < 0.02 * shown["width"] + 4
    assert abs(drawn["y"] - (shown["y"] + top * shown["height"])) < 0.02 * shown["height"] + 4

    row = extraction.locator('tr[data-field="total"]')
    row.hover()
    expect(box).to_have_class(re.compile(r"\bactive\b"))
    expect(row).to_have_class(re.compile(r"\bactive\b"))
    extraction.locator('.field-box[data-field="invoice_number"]').hover()
    expect(box).not_to_have_class(re.compile(r"\bactive\b"))
    expect(extraction.locator('tr[data-field="invoice_number"]')).to_have_class(re.compile(r"\bactive\b"))
    snapshot(page, screenshot_dir / "extraction.png")


def test_a_pdf_extraction_draws_its_fields_on_the_rendered_pages_they_are_on(page):
    from bench.documents import make_invoice, to_pdf

    doc = make_invoice(random.Random(6), n_pages=2, items_per_page=2)
    assert (doc.placed["invoice_number"].page, doc.placed["total"].page) == (1, 2)
    force_answer(page, {"invoice_number": doc.values["invoice_number"], "total": doc.values["total"]})
    page.set_input_files("#file-input", [upload("invoice.pdf", to_pdf(doc.pages), "application/pdf")])
    page.select_option("#preset", "invoice")
    expect(page.locator("#submit")).to_have_text("Ask about this document")
    with page.expect_response(lambda r: r.url.endswith("/v1/jobs") and r.request.method == "POST") as posted:
        page.click("#submit")
    assert posted.value.status == 202
    extraction = page.locator(".message.answered .extraction")
    expect(extraction).to_be_visible(timeout=240_000)
    expect(page.locator(".page-strip figure")).to_have_count(2)  # the document view's thumbnails stay
    expect(extraction.locator("table.fields tbody tr")).to_have_count(2)
    expect(extraction.locator("tr.ungrounded")).to_have_count(0)
    # Each field's box is drawn on the rendered page it was found on.
    expect(extraction.locator('figure.page[data-page="1"] .field-box[data-field="invoice_number"]')).to_have_count(1)
    expect(extraction.locator('figure.page[data-page="2"] .field-box[data-field="total"]')).to_have_count(1)
    rendered = extraction.locator('figure.page[data-page="2"] img').element_handle()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=rendered)  # the job's page 2, fetched
