"""How a failed job reaches a synchronous caller in each family's shape.

An engine that runs out of memory cannot be made to here (the tiny model needs a few MB), so the seam is the
job row the worker writes when it does (`error_code: out_of_memory`, see workers.engines.pipeline_process);
from there on everything is the real path: the ended job is read and rendered by each family's error handler.
"""
import pytest

from service.adapters.db import Database
from service.api.compat import chat_completions, generate_content, simple_chat, sync_chat
from service.core.errors import ApiError
from tests.conftest import finished_job


@pytest.mark.parametrize(
    ("job_code", "status", "simple_code", "google_status"),
    [
        ("out_of_memory", 503, 5002, "UNAVAILABLE"),
        ("inference_timeout", 504, 5001, "DEADLINE_EXCEEDED"),
        ("inference_error", 500, 5000, "INTERNAL"),
        ("model_unavailable", 503, 4004, "UNAVAILABLE"),
    ],
)
def test_a_failed_job_is_rendered_with_each_familys_code(app, settings, job_code, status, simple_code, google_status):
    job_id = finished_job(Database(settings.database_url), "failed", error_code=job_code, error_message="it broke")
    with app.test_request_context():
        with pytest.raises(ApiError) as caught:
            sync_chat.succeeded(job_id)
        assert (caught.value.status, caught.value.code) == (status, job_code)
        # A model no worker served will not appear by retrying: no Retry-After, and the OpenAI SDKs' stop signal.
        unavailable = job_code == "model_unavailable"
        assert caught.value.headers.get("x-should-retry") == ("false" if unavailable else None)
        assert ("Retry-After" in caught.value.headers) == (status == 503 and not unavailable)

        body, code = chat_completions.error_body(caught.value)
        assert code == status and body["error"]["code"] == job_code and body["error"]["type"] == "server_error"
        response, code, _ = simple_chat.render_error(caught.value)
        assert code == status and response.get_json() == {"code": simple_code, "message": "it broke", "data": None}
        response, code, _ = generate_content.render_error(caught.value)
        assert code == status and response.get_json()["error"]["status"] == google_status


def test_a_succeeded_job_is_returned(app, settings):
    job_id = finished_job(Database(settings.database_url), "succeeded")
    with app.test_request_context():
        assert sync_chat.succeeded(job_id).result_text == "forty-two"
