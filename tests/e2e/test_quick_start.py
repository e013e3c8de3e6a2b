"""The README's quick start as a newcomer meets it: `make run`'s own config.yaml (only where data lives is changed),
the models `make run` serves on a fresh machine (tiny-random, built offline, and rapidocr; qwen3-vl-2b is not
exported), a real worker and beat, and every example request of "Try it" and of the submit, preset, list and native
batch sections, sent with curl exactly as the README shows them. Each must reach a terminal state within seconds, and
a job for the model that is not exported must say so at once and end, not wait silently.
"""
from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import requests
import yaml
from PIL import Image, ImageDraw

from service.adapters.migrate import upgrade
from service.app import create_app
from service.core.config import load_settings
from tests.conftest import ROOT, WorkerProcess, serve
from tests.e2e.faults import PrivateRedis

README_URL = "http://127.0.0.1:8080"
# The README sections whose `sh` examples a newcomer runs first, in the README's order.
SECTIONS = ("## Try it", "### `POST /v1/jobs` — submit", "### Presets",
            "### `GET /v1/jobs?status=&limit=&cursor=` — list", "### Batches and files (OpenAI-compatible)")
PLACEHOLDER = re.compile(r"\b(job|batch)_01m7\w*\.\.\.")  # `job_01m7y...`: the id the previous answer gave
NOT_EXPORTED = "qwen3-vl-2b"  # in make run's registry, never exported on a fresh machine
TERMINAL = {"succeeded", "failed", "cancelled"}
BATCH_ENDINGS = {"completed", "failed", "cancelled", "expired"}


def readme_commands() -> list[str]:
    """Every `curl` command of the SECTIONS' `sh` blocks, continuation lines joined, output comments left out."""
    commands: list[str] = []
    heading, fence, block = "", None, []
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("```"):
            if fence is None:
                fence, block = line[3:].strip(), []
                continue
            if fence == "sh" and heading in SECTIONS:
                joined = re.sub(r"\\\n\s*", " ", "\n".join(block))
                commands += [row.strip() for row in joined.splitlines() if row.strip().startswith("curl ")]
            fence = None
        elif fence is not None:
            block.append(line)
        elif line.startswith("#"):
            heading = line
    return commands


def _receipt(name: str, index: int) -> bytes:
    """A small receipt-like picture with printed text, in the format its name says."""
    image = Image.new("RGB", (320, 160), "white")
    draw = ImageDraw.Draw(image)
    draw.text((20, 20), f"SHOP {index}", fill="black")
    draw.text((20, 60), f"TOTAL {10 + index}.99", fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG" if name.endswith(".png") else "JPEG")
    return buffer.getvalue()


def make_inputs(commands: list[str], folder: Path) -> None:
    """The files the commands name (`@receipt.jpg`, `$(base64 -w0 shoe.png)`): pictures, and zips of pictures."""
    names = {name for command in commands for name in re.findall(r"(?:@|base64 -w0 )([\w.-]+\.\w+)", command)}
    assert names, "the README examples should upload images"
    for index, name in enumerate(sorted(names)):
        if name.endswith(".zip"):
            with zipfile.ZipFile(folder / name, "w") as archive:
                for item in range(2):
                    archive.writestr(f"{Path(name).stem}/page-{item}.png", _receipt(".png", index + item))
        else:
            (folder / name).write_bytes(_receipt(name, index))


@pytest.fixture(scope="module")
def quick_start(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`make run` on a fresh machine: its config.yaml, a worker serving whatever it finds, beat, and the API."""
    root = tmp_path_factory.mktemp("quick-start")
    private_redis = PrivateRedis(root)
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config.update({
        "database_url": f"sqlite:///{root / 'vlq.db'}", "redis_url": private_redis.url,
        "blob_dir": str(root / "blobs"), "model_cache": str(model_cache),
        # The one change beyond where data lives, for the last test: an interactive job for a model nobody serves
        # fails after 5 s instead of 300. The README's examples never meet it.
        "queue_timeout_s": {"interactive": 5, "bulk": 3600},
    })
    config_file = root / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    settings = load_settings(environ={"VLQ_CONFIG": str(config_file)})
    upgrade(settings.database_url)
    worker = WorkerProcess(config_file, root / "worker.log")  # no VLQ_MODELS: every model it finds, as make run
    beat = WorkerProcess(config_file, root / "beat.log", "beat")
    try:
        worker.wait_live(settings.default_model, redis_url=private_redis.url)
        worker.wait_live("rapidocr", redis_url=private_redis.url)
        with serve(create_app(settings)) as url:
            yield {"url": url, "settings": settings, "folder": root, "worker": worker}
    finally:
        beat.stop()
        worker.stop()
        private_redis.close()


def _wait(url: str, path: str, endings: set[str], timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = requests.get(f"{url}{path}", timeout=10).json()
        if body["status"] in endings or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


def test_every_quick_start_example_answers_within_seconds(quick_start):
    url, folder = quick_start["url"], quick_start["folder"]
    commands = readme_commands()
    assert len(commands) >= 8, commands  # Try it (2), submit (2), presets (2), list (1), native batch (2)
    make_inputs(commands, folder)
    jobs: list[str] = []
    batches: list[str] = []
    started = time.monotonic()
    for command in commands:
        ids = {"job": jobs[-1] if jobs else None, "batch": batches[-1] if batches else None}
        runnable = PLACEHOLDER.sub(lambda match, ids=ids: ids[match.group(1)], command).replace(README_URL, url)
        done = subprocess.run(["bash", "-c", runnable], cwd=folder, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (command, done.stderr)
        if not done.stdout.strip():  # `> results.csv`
            written = re.search(r">\s*(\S+)$", command)
            assert written and (folder / written.group(1)).read_text().startswith("custom_id,"), command
            continue
        answer = json.loads(done.stdout)
        assert answer.get("error") is None, (command, answer)  # an error answer's `error` is an object
        # make run serves every model these examples use: nothing waits for a worker that is not there.
        assert answer.get("warnings", []) == [], (command, answer)
        if answer.get("object") == "job" and answer["id"] not in jobs:
            jobs.append(answer["id"])
        elif answer.get("object") == "batch" and answer["id"] not in batches:
            batches.append(answer["id"])
    assert len(jobs) >= 5 and len(batches) == 1, (jobs, batches)

    for job_id in jobs:
        job = _wait(url, f"/v1/jobs/{job_id}", TERMINAL)
        assert job["status"] == "succeeded", job
    batch = _wait(url, f"/v1/batches/{batches[0]}", BATCH_ENDINGS)
    assert batch["status"] == "completed", batch
    counts = batch["request_counts"]
    assert counts["completed"] == counts["total"] == 4  # r1.jpg, r2.jpg and the zip's two pictures
    print(f"{len(jobs)} jobs and a batch of {counts['total']} answered in {time.monotonic() - started:.1f}s")


def test_a_model_that_is_not_exported_says_so_at_once_and_never_waits_silently(quick_start):
    url, settings = quick_start["url"], quick_start["settings"]
    image = _receipt("r.png", 7)

    submitted = requests.post(f"{url}/v1/jobs", files={"image": ("r.png", image)},
                              data={"prompt": "What is the total?", "model": NOT_EXPORTED}, timeout=30)
    assert submitted.status_code == 202
    job = submitted.json()
    [warning] = job["warnings"]
    assert warning["code"] == "model_unavailable" and f"`vlq model export {NOT_EXPORTED}`" in warning["message"]
    assert submitted.headers["VLQ-Warning"].startswith("model_unavailable: ")
    ready = requests.get(f"{url}/readyz", timeout=10).json()
    assert NOT_EXPORTED in {item["model"] for item in ready["unserved"]} and ready["status"] == "ready"

    # The OpenAI SDK, with its default retries, fails at once with the fix instead of retrying for seconds.
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
    before = time.monotonic()
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model=NOT_EXPORTED, max_tokens=8, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(image).decode()}},
            {"type": "text", "text": "What is the total?"}]}])
    assert time.monotonic() - before < 3
    assert refused.value.status_code == 503 and refused.value.code == "model_unavailable"
    assert f"vlq model export {NOT_EXPORTED}" in str(refused.value)

    # No worker will come: the job fails after the interactive queue timeout, through the worker's beat pass.
    timeout = settings.queue_timeout("interactive")
    ended = _wait(url, f"/v1/jobs/{job['id']}", TERMINAL, timeout=timeout + 60)
    assert ended["status"] == "failed" and ended["error"]["code"] == "model_unavailable", ended
    assert f"`vlq model export {NOT_EXPORTED}`" in ended["error"]["message"] and ended["warnings"] == []
    assert ended["attempts"] == 0
