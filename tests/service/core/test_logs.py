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


def test_auto_is_text_at_a_terminal_and_json_elsewhere(tmp_path):
    import os
    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as terminal, (tmp_path / "log").open("w") as file:
        assert logs.resolve("auto", terminal) == "text"
        assert logs.resolve("auto", file) == "json"
        assert logs.resolve("json", terminal) == "json" and logs.resolve("text", file) == "text"
    os.close(leader)


def test_routine_periodic_task_lines_are_debug_and_everything_else_keeps_its_level():
    routine = logs.RoutineFilter(["vlq.maintenance.redispatch"])

    def record(logger, level, message, args):
        return logging.LogRecord(logger, level, __file__, 1, message, args, None)

    succeeded = "Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s"
    periodic = record("celery.app.trace", logging.INFO, succeeded,
                      ({"name": "vlq.maintenance.redispatch", "id": "1", "runtime": 0.01, "return_value": None},))
    sent = record("celery.beat", logging.INFO, "Scheduler: Sending due task %s (%s)",
                  ("vlq.maintenance.redispatch", "vlq.maintenance.redispatch"))
    job = record("celery.app.trace", logging.INFO, succeeded,
                 ({"name": "vlq.run_job", "id": "2", "runtime": 1.0, "return_value": None},))
    failed = record("celery.app.trace", logging.ERROR, "Task %(name)s[%(id)s] raised: %(exc)s",
                    ({"name": "vlq.maintenance.redispatch", "id": "3", "exc": "boom"},))
    root = logging.getLogger()
    level = root.level
    try:
        root.setLevel(logging.INFO)
        assert not routine.filter(periodic) and not routine.filter(sent)  # INFO: not written at all
        assert routine.filter(job) and job.levelname == "INFO"
        assert routine.filter(failed) and failed.levelname == "ERROR"
        root.setLevel(logging.DEBUG)
        assert routine.filter(periodic) and periodic.levelname == "DEBUG"
    finally:
        root.setLevel(level)


def test_a_worker_at_info_writes_job_state_changes_and_no_routine_periodic_lines(client, worker, beat):
    response = client.post("/v1/jobs", json={"image": base64.b64encode(make_image(color=(2, 7, 1))).decode(),
                                             "prompt": "Hi.", "max_tokens": 2})
    job_id = response.get_json()["id"]
    assert wait_for_status(client, job_id, {"succeeded", "failed"})["status"] == "succeeded"
    time.sleep(6)  # past one sweep_interval_s of periodic tasks
    lines = _json_lines(worker.log_path.read_text(errors="replace"))
    changes = [line["message"] for line in lines if line.get("job_id") == job_id
               and line["logger"] == "service.core.lifecycle"]
    assert any("queued -> running" in message for message in changes)
    assert any("running -> succeeded" in message for message in changes)
    periodic = [line for line in lines if line["logger"] in ("celery.app.trace", "celery.worker.strategy")
                and "vlq.maintenance" in line["message"]]
    assert periodic == [], periodic[:3]
    beat_lines = _json_lines(beat.log_path.read_text(errors="replace"))
    assert beat_lines  # beat writes JSON lines (its log is a file), just none of these
    sent = [line for line in beat_lines if "Sending due task" in line["message"]]
    assert sent == [], sent[:3]
