"""Two hosts that share no directory, only Redis, Postgres and S3: the second gets its model by pulling it, jobs
and a batch complete across both, a host SIGKILLed mid-batch loses and doubles nothing, and jobs a worker took
while S3 was down are retried, not failed."""
from __future__ import annotations

import base64
import io
import json
import signal
import time
from typing import Any

import pytest
from sqlalchemy import func, select

from service.adapters.db import Database
from service.app import create_app
from service.core.models import Job, JobEvent
from tests.conftest import TINY, keyed, make_image, make_key, postgres_schema
from tests.e2e.faults import PrivateRedis
from tests.e2e.hosts import Hosts

ENDED = {"succeeded", "failed", "cancelled"}
BATCH_ITEMS = 24
SINGLE_JOBS = 6


@pytest.fixture
def hosts(s3_server: Any, model_cache: Any, tmp_path: Any) -> Any:
    redis_server = PrivateRedis(tmp_path)
    try:
        with postgres_schema() as database_url:
            hosts = Hosts(tmp_path / "hosts", database_url=database_url, redis_url=redis_server.url,
                          blob_url=f"s3://{s3_server.bucket()}/vlq", s3_env=s3_server.env)
            try:
                yield hosts
            finally:
                hosts.stop()
    finally:
        redis_server.close()


def _line(index: int) -> dict[str, Any]:
    image = "data:image/png;base64," + base64.b64encode(make_image(color=(index * 9 % 256, 40, 90))).decode()
    return {"custom_id": f"item-{index}", "method": "POST", "url": "/v1/chat/completions", "body": {
        "model": TINY, "max_tokens": 48, "ignore_eos": True, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Read it."}, {"type": "image_url", "image_url": {"url": image}}]}]}}


def _log(process: Any) -> str:
    return process.log_path.read_text(errors="replace")


def test_two_hosts_share_no_disk_and_lose_nothing_when_one_dies(hosts: Hosts, s3_server: Any,
                                                                model_cache: Any) -> None:
    # Host A has the exported model and pushes it once; host B starts with an empty cache.
    hosts.give_model("host-a", model_cache)
    pushed = hosts.cli("host-a", "model", "push", TINY)
    assert pushed.returncode == 0, pushed.stderr
    hosts.start("control", "beat")  # beat (orphan recovery, batch passes) beside the API, on neither worker host
    settings = hosts.settings("control")
    app = create_app(settings)
    api = keyed(app.test_client(), make_key(settings, rate_limit_rps=0, max_queued_jobs=0))
    database = Database(settings.database_url)
    try:
        # Single jobs are accepted before any worker runs; then S3 goes down and host A starts: its attempts
        # find the store down and hand the jobs back, and once S3 is back they complete (retried, not failed).
        singles = [api.post("/v1/jobs", json={"image": base64.b64encode(make_image(color=(i, 1, 2))).decode(),
                                              "prompt": "Read it.", "max_tokens": 16}) for i in range(SINGLE_JOBS)]
        assert all(response.status_code == 202 for response in singles)
        ids = [response.get_json()["id"] for response in singles]
        s3_server.stop()
        try:
            host_a = hosts.start("host-a")
            host_a.wait_live(TINY, redis_url=hosts.config["redis_url"])
            assert api.get("/readyz").get_json()["missing"] == ["storage"]
            deadline = time.monotonic() + 60
            while "blob store unavailable on attempt 1" not in _log(host_a) and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            s3_server.start()
        assert "blob store unavailable on attempt 1" in _log(host_a)
        bucket = hosts.config["blob_url"].split("/")[2]
        assert f"blob store s3://{bucket}/vlq/ is not usable" in _log(host_a)  # said at start, naming the bucket
        host_b = hosts.start("host-b")
        host_b.wait_live(TINY, redis_url=hosts.config["redis_url"])
        assert "pulled from s3://" in _log(host_b) and "pulled from" not in _log(host_a)
        assert hosts.model_digests("host-b") == hosts.model_digests("host-a")

        body = "\n".join(json.dumps(_line(i)) for i in range(BATCH_ITEMS)).encode()
        file = api.post("/v1/files", data={"purpose": "batch", "file": (io.BytesIO(body), "in.jsonl")}).get_json()
        batch = api.post("/v1/batches", json={"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                                              "completion_window": "24h"}).get_json()

        # Mid-batch: once host A runs some of the batch's items, and some are still to come, it dies.
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            with database.session() as session:
                on_a = session.scalar(select(func.count()).select_from(Job).where(
                    Job.batch_id == batch["id"], Job.worker == host_a.name, Job.status == "running"))
                waiting = session.scalar(select(func.count()).select_from(Job).where(
                    Job.batch_id == batch["id"], Job.status == "queued"))
            if on_a and waiting:
                break
            time.sleep(0.1)
        assert on_a and waiting, "host A never ran part of the batch"
        host_a.process.send_signal(signal.SIGKILL)
        host_a.process.wait()

        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            batch = api.get(f"/v1/batches/{batch['id']}").get_json()
            if batch["status"] in ("completed", "failed", "cancelled", "expired"):
                break
            time.sleep(1)
        assert batch["status"] == "completed", batch

        with database.session() as session:
            jobs = session.scalars(select(Job).where((Job.batch_id == batch["id"]) | Job.id.in_(ids))).all()
            endings = dict(session.execute(
                select(JobEvent.job_id, func.count()).where(JobEvent.type.in_([f"job.{s}" for s in ENDED]))
                .group_by(JobEvent.job_id)).all())
        output = api.get(f"/v1/files/{batch['output_file_id']}/content").get_data().splitlines()
        custom_ids = [json.loads(line)["custom_id"] for line in output]
        counts = {
            "accepted": SINGLE_JOBS + BATCH_ITEMS,
            "completed": sum(job.status == "succeeded" for job in jobs),
            "lost": SINGLE_JOBS + BATCH_ITEMS - sum(job.status in ENDED for job in jobs),
            "duplicated": sum(count > 1 for count in endings.values()) + len(custom_ids) - len(set(custom_ids)),
            "retried_after_s3_down": sum(job.attempts > 1 for job in jobs if job.id in ids),
            "requeued_from_killed_host": sum(job.attempts > 1 for job in jobs if job.id not in ids),
        }
        print(f"two hosts: {counts}")
        assert counts["completed"] == counts["accepted"] and counts["lost"] == 0 and counts["duplicated"] == 0
        assert sorted(custom_ids) == sorted(f"item-{i}" for i in range(BATCH_ITEMS))
        assert counts["requeued_from_killed_host"] >= 1
        assert counts["retried_after_s3_down"] >= 1
        assert {job.worker for job in jobs} >= {host_b.name}
        with database.session() as session:  # host A's part: its jobs carry its name in their events' history
            ran_on_a = session.scalar(select(func.count()).select_from(JobEvent).where(
                JobEvent.job_id.in_([job.id for job in jobs]), JobEvent.worker == host_a.name))
        assert ran_on_a >= 1
        assert hosts.local_blob_dirs() == []  # no host wrote a blob to its own disk
    finally:
        database.dispose()
        app.extensions["vlq"].close()
