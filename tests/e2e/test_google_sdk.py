"""Google's own SDK (google-genai) against the live service and a real worker: VLQ as a Gemini endpoint.

The client is configured as the README shows (base_url and an API key, the SDK's default API version): it sends
images as URL-safe base64, asks for JSON with response_schema, streams over SSE, counts tokens, lists models.
"""
import json

import pydantic
import pytest
from google import genai
from google.genai import errors, types

from tests.conftest import TINY, make_image


class Receipt(pydantic.BaseModel):
    vendor: str | None
    total: float
    items: list[str]


@pytest.fixture
def gemini(live_server, api_key, worker):
    return genai.Client(api_key=api_key, http_options=types.HttpOptions(base_url=live_server))


def _image(size: tuple[int, int] = (96, 64)) -> types.Part:
    # A JPEG's base64 starts "/9j/": the SDK sends it URL-safe, "_9j_", as Google's own API accepts.
    return types.Part.from_bytes(data=make_image("JPEG", size=size), mime_type="image/jpeg")


def test_generate_content_with_an_image(gemini, client):
    config = types.GenerateContentConfig(max_output_tokens=6, temperature=0.3, system_instruction="Be brief.")
    response = gemini.models.generate_content(model=TINY, contents=[_image(), "What is the total?"], config=config)
    assert isinstance(response.text, str)
    assert response.candidates[0].finish_reason in (types.FinishReason.STOP, types.FinishReason.MAX_TOKENS)
    usage = response.usage_metadata
    assert usage.prompt_token_count > 0 and 1 <= usage.candidates_token_count <= 6
    job = client.get(f"/v1/jobs/{response.response_id}").get_json()
    assert (job["status"], job["temperature"], job["max_tokens"]) == ("succeeded", 0.3, 6)
    assert [turn["role"] for turn in job["messages"]] == ["system", "user"]


def test_response_schema_constrains_the_output(gemini, client):
    config = types.GenerateContentConfig(response_mime_type="application/json", response_schema=Receipt,
                                         max_output_tokens=4000)
    response = gemini.models.generate_content(model=TINY, contents=[_image(), "Read the receipt."], config=config)
    assert isinstance(response.parsed, Receipt)  # the SDK's own parse of the text into the model
    assert list(json.loads(response.text)) == ["vendor", "total", "items"]  # propertyOrdering kept
    job = client.get(f"/v1/jobs/{response.response_id}").get_json()
    assert job["result"]["json"] == json.loads(response.text)  # the job ran schema-constrained


def test_generate_content_stream_adds_up_to_the_answer(gemini, client):
    config = types.GenerateContentConfig(max_output_tokens=12)
    chunks = list(gemini.models.generate_content_stream(model=TINY, contents=[_image(), "Describe it."],
                                                        config=config))
    assert len(chunks) >= 2
    assert chunks[-1].candidates[0].finish_reason in (types.FinishReason.STOP, types.FinishReason.MAX_TOKENS)
    assert chunks[-1].usage_metadata.candidates_token_count >= 1
    text = "".join(chunk.text or "" for chunk in chunks)
    job = client.get(f"/v1/jobs/{chunks[0].response_id}").get_json()
    assert text == job["result"]["text"]


def test_count_tokens_counts_what_the_model_reads(gemini):
    def counted(*contents) -> int:
        return gemini.models.count_tokens(model=TINY, contents=list(contents)).total_tokens

    short, long = counted("Total?"), counted("What is the total amount on this receipt, tax included?")
    assert 0 < short < long
    # One token per 32x32 square: 96x64 is 3x2; 512x512 is scaled to the tiny model's 128x128 budget, 4x4.
    assert (counted(_image(), "Total?") - short, counted(_image((512, 512)), "Total?") - short) == (6, 16)
    # The answer's prompt count adds only the chat template's tokens, the same for either prompt.
    config = types.GenerateContentConfig(max_output_tokens=1)
    overhead = {gemini.models.generate_content(model=TINY, contents=[_image(), text], config=config)
                .usage_metadata.prompt_token_count - counted(_image(), text)
                for text in ("Total?", "What is the total amount on this receipt, tax included?")}
    assert len(overhead) == 1 and 0 < overhead.pop() < 20


def test_models_list_and_get(gemini, settings):
    models = list(gemini.models.list())
    assert {model.name for model in models} == {f"models/{name}" for name in settings.registry}
    tiny = gemini.models.get(model=TINY)
    assert tiny.name == f"models/{TINY}" and "served now" in tiny.description
    assert "generateContent" in tiny.supported_actions


def test_errors_arrive_as_the_sdks_own_exceptions(gemini):
    with pytest.raises(errors.ClientError) as caught:
        gemini.models.generate_content(model="no-such-model", contents=[_image(), "Hi"])
    assert (caught.value.code, caught.value.status) == (404, "NOT_FOUND")
    broken = types.Part.from_bytes(data=make_image("PNG")[:40], mime_type="image/png")
    with pytest.raises(errors.ClientError) as caught:
        gemini.models.generate_content(model=TINY, contents=[broken, "Hi"])
    assert (caught.value.code, caught.value.status) == (400, "INVALID_ARGUMENT")
    with pytest.raises(errors.ClientError) as caught:
        gemini.models.get(model="no-such-model")
    assert (caught.value.code, caught.value.status) == (404, "NOT_FOUND")
