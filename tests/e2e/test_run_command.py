"""`vlq run` (what `make run` calls): the API, a worker, beat and Flower as supervised children, stopped together."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis
import requests
from click.testing import CliRunner

from service.adapters import presence
from service.cli import cli
from tests.conftest import REDIS_URL, ROOT


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _children(pid: int) -> set[int]:
    return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def _answers(url: str) -> requests.Response | None:
    try:
        return requests.get(url, timeout=5)
    except requests.RequestException:
        return None


def _wait_for(check: Callable[[], object], what: str, process: subprocess.Popen[bytes], log: Path,
              timeout: float = 120) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"vlq run exited with {process.returncode}:\n{log.read_text()[-4000:]}"
        found = check()
        if found:
            return found
        time.sleep(0.3)
    raise TimeoutError(f"{what} never came up:\n{log.read_text()[-4000:]}")


def test_vlq_run_supervises_the_api_a_worker_and_flower(config_file, tmp_path):
    api_port, flower_port = _free_port(), _free_port()
    env = {**os.environ, "VLQ_CONFIG": str(config_file), "VLQ_PORT": str(api_port),
           "VLQ_FLOWER_PORT": str(flower_port), "PYTHONUNBUFFERED": "1", "VLQ_FLOWER_BASIC_AUTH": "ops:s3cret",
           # A model with no export here: the worker comes up serving nothing, so it takes no other test's jobs.
           "VLQ_MODELS": "qwen3-vl-2b"}
    log = tmp_path / "run.log"
    with log.open("wb") as output:
        process = subprocess.Popen([sys.executable, "-m", "service.cli", "run"], cwd=ROOT, env=env,
                                   stdout=output, stderr=subprocess.STDOUT)
    try:
        api = f"http://127.0.0.1:{api_port}"
        flower = f"http://127.0.0.1:{flower_port}"
        _wait_for(lambda: (r := _answers(f"{api}/healthz")) and r.ok, "the API", process, log)
        _wait_for(lambda: (r := _answers(f"{flower}/healthcheck")) and r.text == "OK", "Flower", process, log)
        assert f'href="{flower}"' in requests.get(api, timeout=5).text  # the UI links to this Flower
        assert requests.get(flower, timeout=5).status_code == 401  # auth is on: Flower wants its login
        assert "Flower" in requests.get(flower, timeout=5, auth=("ops", "s3cret")).text
        children = _children(process.pid)
        assert len(children) == 4  # api, worker, beat, flower
        broker = redis.Redis.from_url(REDIS_URL)
        _wait_for(lambda: any(info.get("pid") in children for info in presence.live_workers(broker).values()),
                  "the worker", process, log)
    finally:
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=60)
    assert returncode == 0, log.read_text()[-4000:]
    for pid in children:  # every child was stopped and reaped with it
        assert not Path(f"/proc/{pid}").exists()
    assert _answers(f"{flower}/healthcheck") is None


def test_flower_refuses_to_start_without_a_login_while_auth_is_on(config_file):
    result = CliRunner(env={"VLQ_CONFIG": str(config_file), "VLQ_FLOWER_BASIC_AUTH": ""}).invoke(cli, ["flower"])
    assert result.exit_code == 1 and "flower_basic_auth" in result.output and "VLQ_FLOWER_BASIC_AUTH" in result.output
