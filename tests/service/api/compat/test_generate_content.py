"""POST /v1/models/{model}:generateContent with JSON, as Google's REST API documents it, against a live server."""
import base64

import pytest

from tests.conftest import TINY, make_image


def _contents(text="What is the total?", image=None, mime="image/png"):
    image = make_image() if image is None else image
    return [{"role": "user", "parts": [{"inline_data": {"mime_type": mime, "data": base64.b64encode(image).decode()}},
                                       {"text": text}]}]


@pytest.fixture
def generate(http, live_server, worker):
    def post(model=TINY, prefix="v1", **body):
        return http.post(f"{live_server}/{prefix}/models/{model}:generateContent", json=body, timeout=60)
    return post


def test_generate_content_answers_candidates_and_usage_metadata(generate, client):
    response = generate(contents=_contents(), generation_config={"temperature": 0.7, "top_p": 0.9,
                                                                  "max_output_tokens": 8})
    assert response.status_code == 200, response.text
    body = response.json()
    candidate = body["candidates"][0]
    assert candidate["content"]["role"] == "model" and isinstance(candidate["content"]["parts"][0]["text"], str)
    assert candidate["finishReason"] in ("STOP", "MAX_TOKENS")
    usage = body["usageMetadata"]
    assert usage["promptTokenCount"] > 0 and 1 <= usage["candidatesTokenCount"] <= 8
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
    assert body["modelVersion"] == TINY
    job = client.get(f"/v1/jobs/{body['responseId']}").get_json()
    assert (job["temperature"], job["top_p"], job["max_tokens"]) == (0.7, 0.9, 8)


def test_generation_config_seed_fixes_the_draw(generate, client):
    contents = _contents("Describe it.", make_image(color=(90, 12, 200)))
    answers = [generate(contents=contents, generationConfig={"temperature": 1.0, "maxOutputTokens": 8, "seed": 99})
               for _ in range(2)]
    texts = [answer.json()["candidates"][0]["content"]["parts"][0]["text"] for answer in answers]
    jobs = [client.get(f"/v1/jobs/{answer.json()['responseId']}").get_json() for answer in answers]
    assert texts[0] == texts[1] and [job["seed"] for job in jobs] == [99, 99]


def test_camel_case_a_system_instruction_and_model_turns_make_one_conversation(generate, client):
    contents = [
        *_contents("Describe the picture."),
        {"role": "model", "parts": [{"text": "A red rectangle."}]},
        {"role": "user", "parts": [{"text": "How wide is it?"}]},
    ]
    contents[0]["parts"][0] = {"inlineData": {"mimeType": "image/png",
                                              "data": base64.b64encode(make_image()).decode()}}
    response = generate(prefix="v1beta", contents=contents, systemInstruction={"parts": [{"text": "Be brief."}]},
                        generationConfig={"maxOutputTokens": 4})
    assert response.status_code == 200, response.text
    job = client.get(f"/v1/jobs/{response.json()['responseId']}").get_json()
    assert [turn["role"] for turn in job["messages"]] == ["system", "user", "assistant", "user"]
    assert job["prompt"] == "How wide is it?" and job["max_tokens"] == 4


@pytest.mark.parametrize(
    ("model", "body", "status", "name"),
    [
        ("no-such-model", {"contents": _contents()}, 404, "NOT_FOUND"),
        (TINY, {}, 400, "INVALID_ARGUMENT"),
        (TINY, {"contents": _contents(image=make_image()[:40])}, 400, "INVALID_ARGUMENT"),
        (TINY, {"contents": _contents(mime="application/pdf")}, 400, "INVALID_ARGUMENT"),
        (TINY, {"contents": _contents(text="")}, 400, "INVALID_ARGUMENT"),
        (TINY, {"contents": [{"role": "user", "parts": [{"text": "no image"}]}]}, 400, "INVALID_ARGUMENT"),
        (TINY, {"contents": _contents(), "generation_config": {"max_output_tokens": 0}}, 400, "INVALID_ARGUMENT"),
    ],
)
def test_errors_come_in_googles_shape(generate, model, body, status, name):
    response = generate(model=model, **body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == status and error["status"] == name and error["message"]
