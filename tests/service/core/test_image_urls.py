"""image_url parts given as http(s) URLs: fetched through the SSRF guard only where `image_url_fetch` is on."""
import base64
import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest
import requests

from service.adapters.blobs import LocalBlobStore
from service.app import create_app
from service.core import batches
from service.core.errors import ApiError
from service.core.image_urls import load_image_url
from service.core.models import Batch
from tests.conftest import ROOT, TINY, make_image, serve

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


@pytest.fixture(scope="module")
def drip_server():
    """A loopback server whose /slow.png sends its headers, then 10 bytes every 0.5 s (a slow-drip body)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("content-type", "image/png")
            self.send_header("content-length", "100000")
            self.end_headers()
            try:
                for _ in range(10_000):
                    self.wfile.write(b"x" * 10)
                    self.wfile.flush()
                    time.sleep(0.5)
            except OSError:
                pass

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _chat(url, api_key, image_url):
    body = {"model": TINY, "max_tokens": 2, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": "What is it?"}]}]}
    started = time.monotonic()
    response = requests.post(f"{url}/v1/chat/completions", json=body, timeout=30,
                             headers={"Authorization": f"Bearer {api_key}"})
    return response, time.monotonic() - started


def test_a_slow_drip_image_url_is_abandoned_at_the_limit(settings, drip_server, api_key):
    app = create_app(dataclasses.replace(settings, image_url_fetch=True, image_url_timeout_s=2))
    with serve(app) as url:
        response, elapsed = _chat(url, api_key, f"{drip_server}/slow.png")
    assert response.status_code == 400 and elapsed < 2 + 1
    error = response.json()["error"]
    assert error["code"] == "image_url_unreachable" and "no complete answer within 2s" in error["message"]


@pytest.mark.worker  # starts a service process (the gunicorn API), as the worker-process tests do
def test_slow_image_urls_cannot_take_every_api_thread(config_file, drip_server, api_key, tmp_path):
    """The real server (`vlq api`: gunicorn, one process of 4 threads) with 6 slow-drip fetches asked at once: 2 are
    fetched (and abandoned at the limit), the rest are refused at once, and /healthz answers meanwhile."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "VLQ_CONFIG": str(config_file), "VLQ_PORT": str(port), "VLQ_IMAGE_URL_FETCH": "true",
           "VLQ_IMAGE_URL_TIMEOUT_S": "3", "VLQ_IMAGE_URL_MAX_CONCURRENT": "2"}
    log = (tmp_path / "api.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "service.cli", "api", "--workers", "1", "--threads", "4"],
                               cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "api.log").read_text()
            try:
                if requests.get(f"{url}/healthz", timeout=2).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        with ThreadPoolExecutor(6) as pool:
            asked = [pool.submit(_chat, url, api_key, f"{drip_server}/slow.png?{n}") for n in range(6)]
            time.sleep(0.5)  # the fetches are under way
            health_times = []
            for _ in range(3):
                started = time.monotonic()
                assert requests.get(f"{url}/healthz", timeout=5).ok
                health_times.append(time.monotonic() - started)
                time.sleep(0.3)
            answers = [future.result() for future in asked]
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert max(health_times) < 1, health_times
    codes = sorted(response.json()["error"]["code"] for response, _ in answers)
    assert codes == ["image_url_busy"] * 4 + ["image_url_unreachable"] * 2, codes
    for response, elapsed in answers:
        if response.status_code == 503:
            assert response.headers["Retry-After"] == "1" and elapsed < 1
        else:
            assert elapsed < 3 + 1


def test_a_data_url_in_url_safe_base64_loads_as_a_standard_one(settings):
    raw = make_image("JPEG")
    standard, safe = base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert standard != safe
    for payload in (standard, safe):
        assert load_image_url(settings, f"data:image/jpeg;base64,{payload}", "messages[0]") == raw
    with pytest.raises(ApiError) as caught:
        load_image_url(settings, "data:image/jpeg;base64,@@@", "messages[0].content[0].image_url")
    assert (caught.value.code, caught.value.details) == ("invalid_base64",
                                                         {"field": "messages[0].content[0].image_url"})
