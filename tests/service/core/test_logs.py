"""JSON logs: every line a worker logs while handling a job carries its job_id, Celery's own task lines included."""
import base64
import io
import json
import logging
import time

from service.core import logs
from tests.conftest import make_image, wait_for_status


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_workers_lines_for_a_job_carry_its_id(client, worker):
    response = client.post("/v1/jobs", json={"image": base64.b64encode(make_image()).decode(), "prompt": "Hi.",
                                             "max_tokens": 3})
    job_id = response.get_json()["id"]
    assert wait_for_status(client, job_id, {"succeeded", "failed"})["status"] == "succeeded"
    deadline = time.monotonic() + 20  # Celery logs "succeeded" just after the job's row is written
    while time.monotonic() < deadline:
        lines = [line for line in _json_lines(worker.log_path.read_text(errors="replace"))
                 if line.get("job_id") == job_id or job_id in line["message"]]
        if any(line["logger"] == "celery.app.trace" for line in lines):
            break
        time.sleep(0.1)
    loggers = {line["logger"] for line in lines}
    assert {"celery.worker.strategy", "service.core.lifecycle", "celery.app.trace"} <= loggers, loggers
    assert all(line.get("job_id") == job_id for line in lines), [line for line in lines if line.get("job_id") != job_id]
    assert all({"ts", "level", "logger", "message"} <= set(line) for line in lines)


def test_an_api_request_about_a_job_logs_with_its_id(client, worker):
    outside = logs._context.get()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.ContextFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        job_id = client.post("/v1/jobs", json={"image": base64.b64encode(make_image()).decode(), "prompt": "Wait.",
                                               "model": "qwen3-vl-2b", "max_tokens": 1}).get_json()["id"]
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    lines = [line for line in _json_lines(stream.getvalue()) if job_id in line["message"]]
    assert lines and all(line["job_id"] == job_id for line in lines)
    assert logs._context.get() == outside  # nothing leaks past the request


def test_text_format_for_development_shows_the_ids():
    record = logging.makeLogRecord({"name": "x", "msg": "hello", "levelname": "INFO"})
    with logs.context(job_id="job_1"):
        logs.ContextFilter().filter(record)
    assert logs.TextFormatter().format(record).endswith("hello [job_id=job_1]")
