"""POST /v1/responses refuses what it cannot answer in OpenAI's error shape, with `param` naming the field, before
any job exists (the answers themselves: tests/e2e/test_openai_batch_features.py)."""
import openai
import pytest

from tests.conftest import TINY, data_url, make_image

IMAGE = {"type": "input_image", "image_url": data_url(make_image())}
TEXT = {"type": "input_text", "text": "What is it?"}


@pytest.fixture
def sdk(live_server, api_key):
    return openai.OpenAI(base_url=f"{live_server}/v1", api_key=api_key, max_retries=0)


def _user(*parts):
    return [{"role": "user", "content": list(parts)}]


@pytest.mark.parametrize(("request_", "status", "code", "param"), [
    ({"input": ""}, 400, "missing_field", "input"),
    ({"input": "no image here"}, 400, "invalid_field", "input"),
    ({"input": _user(TEXT, {"type": "input_audio", "data": "..."})}, 400, "invalid_field", "input[0].content[1]"),
    ({"input": [{"role": "tool", "content": "x"}]}, 400, "invalid_field", "input[0]"),
    ({"input": _user(TEXT, {"type": "input_image", "file_id": "file_nope"})}, 400, "invalid_field", "input[0]"),
    ({"input": _user(TEXT, IMAGE), "max_output_tokens": 0}, 400, "invalid_field", "max_output_tokens"),
    ({"input": _user(TEXT, IMAGE), "temperature": 3}, 400, "invalid_field", "temperature"),
    ({"input": _user(TEXT, IMAGE), "text": {"format": {"type": "json_schema", "schema": {"type": "object"}}}}, 400,
     "invalid_response_format", "text.format"),
    ({"input": _user(TEXT, IMAGE), "model": "gpt-5"}, 404, "model_not_found", None),  # as OpenAI names none
])
def test_bad_requests_are_refused_in_openais_shape_naming_the_param(sdk, request_, status, code, param):
    with pytest.raises(openai.APIStatusError) as raised:
        sdk.responses.create(**{"model": TINY, **request_})
    error = raised.value
    assert (error.status_code, error.code, error.param) == (status, code, param), error.body
    assert error.type == "invalid_request_error" and error.message
