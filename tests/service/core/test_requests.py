"""The job request shapes: settings' bounds, presets filled before the fields are read, and the job's own checks."""
import os
from typing import Any

import pytest

from service.core import jobs
from service.core.config import load_settings
from service.core.errors import ApiError
from service.core.images import EXAMPLE_DATA_URL
from service.core.requests import generation_model, job_model, job_submit_model, task_model
from service.core.validation import error_codes, parse
from service.core.webhook_signing import generate_secret
from tests.conftest import make_image


@pytest.fixture(scope="module")
def settings() -> Any:
    return load_settings({"max_tokens_limit": 100, "default_max_tokens": 50, "webhook_secret": "",
                          "presets": {"short": {"prompt": "Say it short.", "max_tokens": 8}}},
                         environ={"VLQ_CONFIG": os.devnull})


def refused(model: Any, values: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse(model, values)
    return caught.value


def test_models_are_built_once_per_settings_with_its_bounds(settings):
    assert job_model(settings) is job_model(settings)
    other = load_settings({"max_tokens_limit": 200}, environ={"VLQ_CONFIG": os.devnull})
    assert generation_model(other) is not generation_model(settings)
    assert refused(generation_model(settings), {"max_tokens": 101}).message == "'max_tokens' must be between 1 and 100."
    assert parse(generation_model(other), {"max_tokens": 101}).max_tokens == 101
    assert parse(generation_model(settings), {}).model_dump() == {
        "model": settings.default_model, "max_tokens": 50, "temperature": 0.0, "top_p": None, "ignore_eos": False,
        "seed": None}
    assert parse(generation_model(settings), {"seed": "42"}).seed == 42
    assert refused(generation_model(settings), {"seed": -1}).details == {"field": "seed"}
    assert refused(generation_model(settings), {"seed": 2**32}).details == {"field": "seed"}


def test_a_preset_fills_what_the_request_leaves_out_and_set_fields_win(settings):
    task = parse(task_model(settings), {"preset": "short"})
    assert (task.prompt, task.max_tokens) == ("Say it short.", 8)
    task = parse(task_model(settings), {"preset": "short", "prompt": "Mine", "max_tokens": None})
    assert (task.prompt, task.max_tokens) == ("Mine", 8)  # null reads as absent: the preset's value stays
    unknown = refused(task_model(settings), {"preset": "nope"})
    assert (unknown.code, unknown.message) == ("unknown_preset", "No preset named 'nope'.")
    assert unknown.details == {"preset": "nope", "available": sorted(settings.presets)}
    assert refused(task_model(settings), {"preset": ["a"]}).code == "unknown_preset"  # never a 500


def test_unknown_models_and_bad_response_formats_have_their_own_codes(settings):
    model = refused(task_model(settings), {"prompt": "p", "model": "gpt-9"})
    assert (model.code, model.details["model"]) == ("unknown_model", "gpt-9")
    response_format = refused(task_model(settings), {"prompt": "p", "response_format": {"type": "xml"}})
    assert response_format.code == "invalid_response_format"
    assert response_format.details == {"field": "response_format"}
    # A form carries it as JSON text.
    task = parse(task_model(settings), {"prompt": "p", "response_format": '{"type": "json_object"}'})
    assert task.response_format == {"type": "object"}


def test_a_job_body_reads_a_form_of_text_and_its_image(settings):
    body = parse(job_submit_model(settings), {"image": EXAMPLE_DATA_URL, "prompt": "p", "max_tokens": "7",
                                              "temperature": "0.5", "no_cache": "true", "metadata": '{"a": 1}',
                                              "priority": "bulk"})
    assert (body.max_tokens, body.temperature, body.no_cache, body.metadata, body.priority) == (
        7, 0.5, True, {"a": 1}, "bulk")
    request = jobs.job_request(settings, body, body.image)
    assert (request.image.format, request.task.options.max_tokens, request.priority) == ("PNG", 7, "bulk")
    missing = refused(job_submit_model(settings), {"prompt": "p"})
    assert (missing.code, missing.message) == (
        "missing_field", "'image' is required: a data URL or base64-encoded image bytes.")
    assert refused(job_submit_model(settings), {"image": "%%%"}).code == "invalid_base64"
    assert error_codes(job_submit_model(settings))[:2] == ("missing_field", "invalid_base64")


def test_the_jobs_own_checks_run_on_the_read_fields(settings):
    image = make_image()
    with pytest.raises(ApiError, match="'prompt' is required"):
        jobs.job_request(settings, parse(job_model(settings), {}), image)
    with pytest.raises(ApiError) as caught:
        jobs.job_request(settings, parse(job_model(settings), {"prompt": "p", "webhook_secret": generate_secret()}),
                         image)
    assert caught.value.details == {"field": "webhook_url"}
    secretless = parse(job_model(settings), {"prompt": "p", "webhook_url": "http://8.8.8.8/hook"})
    with pytest.raises(ApiError, match="this server has no default webhook_secret"):
        jobs.job_request(settings, secretless, image)
