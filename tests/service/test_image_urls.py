"""image_url parts given as http(s) URLs: fetched through the SSRF guard only where `image_url_fetch` is on."""
import dataclasses
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from service.adapters.blobs import LocalBlobStore
from service.app import create_app
from service.core import batches
from service.core.models import Batch
from tests.conftest import TINY, make_image, serve

IMAGE = make_image("JPEG", color=(250, 200, 0))


@pytest.fixture(scope="module")
def image_server():
    """A loopback server: /receipt.jpg is an image, /big.png is over the test's byte limit, the rest 404."""
    files = {"/receipt.jpg": IMAGE, "/big.png": make_image(size=(400, 400), compress_level=0)}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = files.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("content-length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _ask(url, image_url, api_key):
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0)
    return sdk.chat.completions.create(model=TINY, max_tokens=4, messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": "What is it?"}]}])


def test_an_image_url_is_fetched_when_allowed(settings, worker, image_server, api_key):
    with serve(create_app(dataclasses.replace(settings, image_url_fetch=True, max_image_bytes=100_000))) as url:
        assert _ask(url, f"{image_server}/receipt.jpg", api_key).usage.prompt_tokens > 0
        with pytest.raises(openai.BadRequestError) as caught:
            _ask(url, f"{image_server}/missing.jpg", api_key)
        assert caught.value.code == "image_url_unreachable"
        with pytest.raises(openai.APIStatusError) as caught:
            _ask(url, f"{image_server}/big.png", api_key)
        assert caught.value.status_code == 413 and caught.value.code == "image_too_large"


def test_private_addresses_are_refused_unless_allowed(settings, image_server, api_key):
    app = create_app(dataclasses.replace(settings, image_url_fetch=True, egress_allow_cidrs=()))
    with serve(app) as url, pytest.raises(openai.BadRequestError) as caught:
        _ask(url, f"{image_server}/receipt.jpg", api_key)
    assert caught.value.code == "image_url_forbidden"


def test_batch_lines_fetch_image_urls_too(settings, image_server, tmp_path):
    def line(custom_id, image_url):
        content = [{"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": "Total?"}]
        return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": {
            "model": TINY, "messages": [{"role": "user", "content": content}]}}).encode()

    batch = Batch(id="batch_test", endpoint="/v1/chat/completions", priority="bulk")
    lines = [line("fetched", f"{image_server}/receipt.jpg"), line("gone", f"{image_server}/missing.jpg")]
    blobs = LocalBlobStore(str(tmp_path))
    fetching = batches.read_openai_lines(lines, batch, dataclasses.replace(settings, image_url_fetch=True), blobs)
    rows = {row["custom_id"]: row for row in fetching.rows}
    assert "error_code" not in rows["fetched"]  # a row to queue, not one refused at ingest
    assert rows["fetched"]["image_format"] == "JPEG" and blobs.get(rows["fetched"]["image_sha256"]) == IMAGE
    assert rows["gone"]["error_code"] == "image_url_unreachable"

    refusing = batches.read_openai_lines(lines, batch, settings, blobs)
    assert {row["error_code"] for row in refusing.rows} == {"unsupported_image_url"}
