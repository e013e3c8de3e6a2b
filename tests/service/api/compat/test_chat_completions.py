"""POST /v1/chat/completions with the openai SDK and with requests (multipart), against a live server and worker."""
import dataclasses

import openai
import pytest

from service.app import create_app
from tests.conftest import TINY, data_url, make_image, serve


@pytest.fixture
def sdk(live_server, worker, api_key):
    return openai.OpenAI(base_url=f"{live_server}/v1", api_key=api_key, max_retries=0)


def _user(text, image=None, mime="image/png"):
    image = make_image() if image is None else image
    return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(image, mime)}},
                                        {"type": "text", "text": text}]}


def test_the_sdk_gets_a_chat_completion_with_usage_and_the_job_is_listed(sdk, client):
    image = make_image(color=(31, 41, 59))  # a request no other test makes, so the answer is not from the cache
    completion = sdk.chat.completions.create(model=TINY, messages=[_user("What is the total?", image)], max_tokens=8,
                                             temperature=0)
    assert completion.object == "chat.completion" and completion.model == TINY
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert completion.usage.prompt_tokens > 0 and 1 <= completion.usage.completion_tokens <= 8
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens

    job = client.get(f"/v1/jobs/{completion.id.removeprefix('chatcmpl-')}").get_json()
    assert job["status"] == "succeeded" and job["priority"] == "interactive"
    assert job["result"]["text"] == choice.message.content and job["messages"] is None
    assert job["timings"]["inference_ms"] > 0


def test_a_multi_turn_conversation_is_stored_whole_and_templated_by_the_engine(sdk, client):
    image = make_image(color=(10, 200, 10))
    single = sdk.chat.completions.create(model=TINY, messages=[_user("Describe it.", image)], max_tokens=4)
    conversation = [
        {"role": "system", "content": "Answer in one word."},
        _user("Describe it.", image),
        {"role": "assistant", "content": "A green square."},
        {"role": "user", "content": "What colour is it?"},
    ]
    followup = sdk.chat.completions.create(model=TINY, messages=conversation, max_tokens=4)
    assert isinstance(followup.choices[0].message.content, str)
    # Every turn reached the engine: the follow-up's prompt is the first one plus the other turns' tokens.
    assert followup.usage.prompt_tokens > single.usage.prompt_tokens + 10

    job = client.get(f"/v1/jobs/{followup.id.removeprefix('chatcmpl-')}").get_json()
    assert job["prompt"] == "What colour is it?"
    assert [turn["role"] for turn in job["messages"]] == ["system", "user", "assistant", "user"]
    assert job["messages"][1]["content"] == [{"type": "image"}, {"type": "text", "text": "Describe it."}]
    assert job["messages"][2]["content"] == "A green square."


def test_streaming_sends_the_text_as_it_is_generated_then_usage(sdk, client):
    stream = sdk.chat.completions.create(model=TINY, messages=[_user("Tell me everything.")], max_tokens=24,
                                         stream=True, stream_options={"include_usage": True},
                                         extra_body={"ignore_eos": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) > 1  # token by token, not one piece at the end
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 24
    assert all(chunk.object == "chat.completion.chunk" and chunk.id == chunks[0].id for chunk in chunks)

    job = client.get(f"/v1/jobs/{chunks[0].id.removeprefix('chatcmpl-')}").get_json()
    assert "".join(texts) == job["result"]["text"]


def test_multipart_with_requests_answers_content_and_total_time(http, live_server, worker):
    response = http.post(f"{live_server}/v1/chat/completions", files={"image": ("r.jpg", make_image("JPEG"))},
                             data={"prompt": "What is in the picture?", "max_tokens": "6"}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body["choices"][0]["message"]["content"], str)
    assert body["usage"]["total_time_ms"] > 0 and body["usage"]["completion_tokens"] >= 1


def test_structured_output_cut_off_by_max_tokens_is_a_200_with_finish_reason_length(sdk, client):
    schema = {"type": "object", "additionalProperties": False, "required": ["total"],
              "properties": {"total": {"type": "string", "maxLength": 40}}}
    completion = sdk.chat.completions.create(
        model=TINY, messages=[_user("What is the total?")], max_tokens=3,
        response_format={"type": "json_schema", "json_schema": {"name": "t", "schema": schema}})
    choice = completion.choices[0]
    assert choice.finish_reason == "length" and choice.message.content.startswith('{"')
    assert completion.usage.completion_tokens == 3
    job = client.get(f"/v1/jobs/{completion.id.removeprefix('chatcmpl-')}").get_json()
    assert job["status"] == "succeeded" and job["error"] is None
    assert job["result"] == {"text": choice.message.content, "finish_reason": "length", "json": None}


def test_sampling_differs_per_call_and_openais_seed_reproduces_it(sdk, client):
    image = make_image(color=(5, 150, 77))

    def ask(**options):
        completion = sdk.chat.completions.create(model=TINY, messages=[_user("Describe it.", image)], max_tokens=12,
                                                 temperature=1.0, **options)
        return completion.choices[0].message.content, client.get(
            f"/v1/jobs/{completion.id.removeprefix('chatcmpl-')}").get_json()

    (first, first_job), (second, second_job) = ask(), ask()
    assert first != second and not first_job["cached"] and not second_job["cached"]  # draws are never reused
    assert first_job["seed"] != second_job["seed"]
    (seeded, seeded_job), (again, again_job) = ask(seed=first_job["seed"]), ask(seed=first_job["seed"])
    assert seeded == again == first and seeded_job["seed"] == first_job["seed"]
    assert again_job["cached"] and again_job["cache_of"] == seeded_job["id"]  # a seeded draw is reproducible


def test_models_list_and_health(http, sdk, live_server):
    models = {model.id: model for model in sdk.models.list()}
    assert models[TINY].object == "model" and models[TINY].model_extra["status"] == "live"
    assert "qwen3-vl-2b" in models
    assert sdk.models.retrieve(TINY).id == TINY
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("no-such-model")
    assert http.get(f"{live_server}/health", timeout=10).json() == {"status": "healthy"}


def test_input_errors_come_in_openais_shape(http, sdk, live_server):
    with pytest.raises(openai.BadRequestError) as caught:  # a truncated PNG
        sdk.chat.completions.create(model=TINY, messages=[_user("Hi", make_image()[:60])], max_tokens=4)
    assert caught.value.status_code == 400 and caught.value.code == "invalid_image"
    assert caught.value.body["type"] == "invalid_request_error" and caught.value.param == "messages[0]"

    with pytest.raises(openai.BadRequestError) as caught:  # no text to answer
        sdk.chat.completions.create(model=TINY, messages=[_user("  ")], max_tokens=4)
    assert caught.value.code == "missing_field" and caught.value.body["param"] == "prompt"

    with pytest.raises(openai.NotFoundError) as caught:
        sdk.chat.completions.create(model="gpt-4o", messages=[_user("Hi")], max_tokens=4)
    assert caught.value.code == "model_not_found"

    with pytest.raises(openai.BadRequestError) as caught:  # URLs are fetched only where configured
        sdk.chat.completions.create(model=TINY, max_tokens=4, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}, {"type": "text", "text": "Hi"}]}])
    assert caught.value.code == "unsupported_image_url"

    response = http.post(f"{live_server}/v1/chat/completions", files={"image": ("a.png", make_image())},
                             data={"prompt": ""}, timeout=30)
    assert response.status_code == 400 and response.json()["error"]["code"] == "missing_field"
    response = http.post(f"{live_server}/v1/chat/completions", files={"image": ("a.png", b"not an image")},
                             data={"prompt": "Hi"}, timeout=30)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_image"
    assert response.json()["error"]["param"] == "image"


def test_an_image_over_the_byte_limit_is_413(http, settings, worker, api_key):
    image = make_image(size=(300, 300), color=(1, 2, 3), compress_level=0)
    small = dataclasses.replace(settings, max_image_bytes=len(image) - 1)
    with serve(create_app(small)) as url:
        response = http.post(f"{url}/v1/chat/completions", files={"image": ("a.png", image)},
                                 data={"prompt": "Hi"}, timeout=30)
        assert response.status_code == 413 and response.json()["error"]["code"] == "image_too_large"
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            sdk.chat.completions.create(model=TINY, messages=[_user("Hi", image)], max_tokens=4)
        assert caught.value.status_code == 413
