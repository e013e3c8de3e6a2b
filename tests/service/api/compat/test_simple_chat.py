"""POST /api/v1/chat with requests (base64 JSON) against a live server and worker, and its input error codes."""
import base64
import dataclasses
import io

import pytest
from PIL import Image

from service.app import create_app
from tests.conftest import TINY, data_url, make_image, serve


@pytest.fixture
def chat(http, live_server, worker):
    def post(**body):
        return http.post(f"{live_server}/api/v1/chat", json=body, timeout=60)
    return post


def test_a_data_url_image_and_prompt_get_the_answer_with_token_usage(chat):
    response = chat(image=data_url(make_image("JPEG"), "image/jpeg"), prompt="What is on the receipt?",
                    max_tokens=64, temperature=0.2)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["code"] == 0 and body["message"] == "success"
    data = body["data"]
    assert isinstance(data["response"], str)
    usage = data["token_usage"]
    assert usage["prompt_tokens"] > 0 and 1 <= usage["completion_tokens"] <= 64
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert isinstance(data["inference_time_ms"], int) and data["inference_time_ms"] >= 0  # as documented: 2340


def test_health_names_the_model(http, live_server, worker, settings):
    body = http.get(f"{live_server}/api/v1/health", timeout=10).json()
    assert body["status"] == "ok" and body["model"] == settings.default_model == TINY
    assert body["multimodal"] is True and body["cpu_optimized"] is True and body["timestamp"].endswith("Z")


def test_health_agrees_with_the_openai_health_when_the_default_model_is_not_served(http, worker, settings):
    # The default model has no worker, tiny-random has one: both health checks say ready, and this one names
    # the model a request should ask for.
    app = create_app(dataclasses.replace(settings, default_model="tiny-idle"))
    with serve(app) as url:
        assert http.get(f"{url}/health", timeout=10).json() == {"status": "healthy"}
        response = http.get(f"{url}/api/v1/health", timeout=10)
        assert response.status_code == 200 and response.json()["status"] == "ok"
        assert response.json()["model"] == TINY


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="GIF")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("body", "code", "status"),
    [
        ({"prompt": "x"}, 4000, 400),  # no image
        ({"image": data_url(make_image())}, 4000, 400),  # no prompt
        ({"image": data_url(make_image()), "prompt": "  "}, 4000, 400),  # empty prompt
        ({"image": data_url(make_image()), "prompt": "x", "max_tokens": 32}, 4000, 400),  # under 64
        ({"image": data_url(make_image()), "prompt": "x", "max_tokens": 2048}, 4000, 400),  # over 1024
        ({"image": data_url(make_image()), "prompt": "x", "temperature": "hot"}, 4000, 400),
        ({"image": data_url(make_image()[:50]), "prompt": "x"}, 4000, 400),  # truncated image
        ({"image": base64.b64encode(make_image()).decode(), "prompt": "x"}, 4001, 400),  # bare base64
        ({"image": data_url(_gif(), "image/gif"), "prompt": "x"}, 4002, 400),  # GIF, declared as such
        ({"image": data_url(_gif(), "image/png"), "prompt": "x"}, 4002, 400),  # GIF bytes behind a PNG header
        ({"image": data_url(make_image(size=(4097, 8))), "prompt": "x"}, 4003, 400),  # a side over 4096 px
        ({"image": data_url(make_image()), "prompt": "x", "model": "gpt-4o"}, 4000, 400),  # an unknown model
    ],
)
def test_input_errors_carry_the_documented_codes(chat, body, code, status):
    response = chat(**body)
    assert response.status_code == status
    answer = response.json()
    assert answer["code"] == code and answer["data"] is None and answer["message"]


def test_a_body_that_is_not_json_is_4000(http, live_server):
    response = http.post(f"{live_server}/api/v1/chat", data="image=x", timeout=10)
    assert response.status_code == 400 and response.json()["code"] == 4000
