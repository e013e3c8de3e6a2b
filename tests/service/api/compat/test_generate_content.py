"""POST /v1/models/{model}:generateContent with JSON, as Google's REST API documents it, against a live server."""
import base64
import json

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
        (TINY, {"contents": _contents(mime="image/gif")}, 400, "INVALID_ARGUMENT"),
        (TINY, {"contents": _contents(text="")}, 400, "INVALID_ARGUMENT"),
        (TINY, {"contents": [{"role": "user", "parts": [{"text": "no image"}]}]}, 400, "INVALID_ARGUMENT"),
        (TINY, {"contents": [{"parts": [{"text": "both", "inline_data": {"data": 5}}]}]}, 400, "INVALID_ARGUMENT"),
        (TINY, {"contents": _contents(), "generation_config": {"max_output_tokens": 0}}, 400, "INVALID_ARGUMENT"),
    ],
)
def test_errors_come_in_googles_shape(generate, model, body, status, name):
    response = generate(model=model, **body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == status and error["status"] == name and error["message"]


def test_url_safe_unpadded_base64_is_accepted_as_googles_sdk_sends_it(generate):
    image = make_image("JPEG")
    contents = [{"role": "user", "parts": [{"inline_data": {
        "mime_type": "image/jpeg", "data": base64.urlsafe_b64encode(image).decode().rstrip("=")}}, {"text": "Hi"}]}]
    assert base64.b64encode(image).startswith(b"/9j/")  # so the URL-safe form differs: "_9j_"
    response = generate(contents=contents, generation_config={"max_output_tokens": 2})
    assert response.status_code == 200, response.text


def test_stream_generate_content_as_sse_and_as_a_json_array(http, live_server, worker):
    body = {"contents": _contents(), "generationConfig": {"maxOutputTokens": 6}}
    url = f"{live_server}/v1beta/models/{TINY}:streamGenerateContent"
    with http.post(f"{url}?alt=sse", json=body, stream=True, timeout=60) as response:
        assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/event-stream")
        events = [json.loads(line[len(b"data: "):]) for line in response.iter_lines() if line.startswith(b"data: ")]
    body["contents"] = _contents("Another question, not answered from the cache?")
    response = http.post(url, json=body, timeout=60)
    assert response.status_code == 200
    for chunks in (events, response.json()):
        *pieces, last = chunks
        assert all("finishReason" not in chunk["candidates"][0] for chunk in pieces)
        assert last["candidates"][0]["finishReason"] in ("STOP", "MAX_TOKENS")
        assert last["usageMetadata"]["candidatesTokenCount"] >= 1
        assert len({chunk["responseId"] for chunk in chunks}) == 1


def test_response_schema_gives_json_that_validates(generate):
    schema = {"type": "OBJECT", "properties": {"total": {"type": "NUMBER"}, "currency": {
        "type": "STRING", "enum": ["EUR", "USD"]}}, "required": ["total", "currency"],
        "propertyOrdering": ["currency", "total"]}
    response = generate(contents=_contents(), generationConfig={"responseMimeType": "application/json",
                                                                 "responseSchema": schema, "maxOutputTokens": 200})
    assert response.status_code == 200, response.text
    answer = json.loads(response.json()["candidates"][0]["content"]["parts"][0]["text"])
    assert list(answer) == ["currency", "total"] and answer["currency"] in ("EUR", "USD")
    assert isinstance(answer["total"], int | float)


def test_count_tokens_without_a_worker_run(http, live_server, worker):
    url = f"{live_server}/v1/models/{TINY}:countTokens"
    response = http.post(url, json={"contents": [{"parts": [{"text": "How much?"}]}]}, timeout=30)
    assert response.status_code == 200 and response.json()["totalTokens"] > 0
    response = http.post(f"{live_server}/v1/models/rapidocr:countTokens", json={"contents": _contents()}, timeout=30)
    assert (response.status_code, response.json()["error"]["status"]) == (400, "INVALID_ARGUMENT")


@pytest.mark.parametrize(
    ("method", "path", "status", "name"),
    [
        ("post", f"/v1beta/models/{TINY}:embedContent", 404, "NOT_FOUND"),
        ("post", f"/v1/models/{TINY}:embedContent", 404, "NOT_FOUND"),
        ("get", f"/v1beta/models/{TINY}:generateContent", 405, "METHOD_NOT_ALLOWED"),
        ("get", f"/v1/models/{TINY}:countTokens", 405, "METHOD_NOT_ALLOWED"),
        ("delete", "/v1beta/models", 405, "METHOD_NOT_ALLOWED"),
        ("get", "/v1beta/tunedModels", 404, "NOT_FOUND"),
        ("get", "/v1beta/models/no-such-model", 404, "NOT_FOUND"),
        ("post", f"/v1beta/models/{TINY}:streamGenerateContent?alt=proto", 400, "INVALID_ARGUMENT"),
        ("post", f"/v1beta/models/{TINY}:generateContent", 400, "INVALID_ARGUMENT"),  # no JSON body
    ],
)
def test_every_google_path_answers_errors_in_googles_shape(client, method, path, status, name):
    response = getattr(client, method)(path)
    assert response.status_code == status, response.get_data(as_text=True)
    assert set(response.get_json()) == {"error"}
    assert response.get_json()["error"] == {"code": status, "status": name, "message": response.get_json()["error"][
        "message"]} and response.get_json()["error"]["message"]


def test_a_refused_key_is_googles_unauthenticated(app):
    response = app.test_client().post(f"/v1beta/models/{TINY}:embedContent", headers={"x-goog-api-key": "vlq_sk_no"})
    assert response.status_code == 401 and response.get_json()["error"]["status"] == "UNAUTHENTICATED"


def test_the_model_list_is_googles_for_googles_sdks_and_openais_otherwise(client, settings):
    sdk = {"x-goog-api-client": "google-genai-sdk/3.6.1 gl-python/3.11.7"}
    google = client.get("/v1beta/models").get_json()
    assert [model["name"] for model in google["models"]] == [f"models/{name}" for name in settings.registry]
    assert client.get("/v1/models", headers=sdk).get_json() == google
    assert client.get("/v1/models").get_json()["object"] == "list"  # OpenAI's, for everyone else
    one = client.get(f"/v1/models/{TINY}", headers=sdk).get_json()
    assert one["name"] == f"models/{TINY}" and "countTokens" in one["supportedGenerationMethods"]
    missing = client.get("/v1/models/no-such-model", headers=sdk)
    assert (missing.status_code, missing.get_json()["error"]["status"]) == (404, "NOT_FOUND")
    assert client.get("/v1/models/no-such-model").get_json()["error"]["code"] == "model_not_found"
