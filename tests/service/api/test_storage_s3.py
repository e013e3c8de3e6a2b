"""The API with its blobs on S3 (a real S3-protocol server on loopback): images and files go to the bucket and come
back, downloads may be presigned, and a store that is down or misconfigured is a clear 503, never half a job."""
from __future__ import annotations

import dataclasses
import hashlib
import io
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from service.app import create_app
from service.core.config import Settings
from service.core.models import Job
from tests.conftest import keyed, make_image
from tests.service.api.test_files import upload

IDLE_MODEL = "tiny-idle"  # no worker serves it: its jobs stay queued


@pytest.fixture(scope="module")
def bucket(s3_server: Any) -> str:
    return s3_server.bucket()


@pytest.fixture(scope="module")
def s3_app(settings: Settings, bucket: str) -> Any:
    return create_app(dataclasses.replace(settings, blob_url=f"s3://{bucket}/api", blob_presign_s=0))


@pytest.fixture
def s3_client(s3_app: Any, api_key: str) -> Any:
    return keyed(s3_app.test_client(), api_key)


def _submit(client: Any, image: bytes) -> Any:
    return client.post("/v1/jobs", data={"prompt": "What is it?", "model": IDLE_MODEL,
                                         "image": (io.BytesIO(image), "x.png")})


def test_a_job_image_goes_to_the_bucket_and_back(s3_client: Any, s3_server: Any, bucket: str) -> None:
    image = make_image(color=(1, 2, 3))
    response = _submit(s3_client, image)
    assert response.status_code == 202, response.get_data(as_text=True)
    digest = hashlib.sha256(image).hexdigest()
    stored = s3_server.client().get_object(Bucket=bucket, Key=f"api/blobs/{digest[:2]}/{digest[2:4]}/{digest}")
    assert stored["Body"].read() == image
    back = s3_client.get(f"/v1/jobs/{response.get_json()['id']}/image")
    assert back.status_code == 200 and back.get_data() == image


def test_a_file_streams_in_and_out_and_may_be_presigned(s3_client: Any, s3_app: Any, settings: Settings,
                                                         bucket: str, api_key: str) -> None:
    content = b"".join(b'{"custom_id": "%d"}\n' % i for i in range(20_000))
    file = upload(s3_client, "in.jsonl", content).get_json()
    streamed = s3_client.get(f"/v1/files/{file['id']}/content")
    assert streamed.status_code == 200 and streamed.get_data() == content

    presigning = keyed(create_app(dataclasses.replace(settings, blob_url=f"s3://{bucket}/api",
                                                      blob_presign_s=60)).test_client(), api_key)
    redirect = presigning.get(f"/v1/files/{file['id']}/content")
    assert redirect.status_code == 307
    direct = requests.get(redirect.headers["Location"], timeout=10)
    assert direct.status_code == 200 and direct.content == content
    assert 'filename="in.jsonl"' in direct.headers["Content-Disposition"]


def test_store_down_at_submit_is_503_and_nothing_is_kept(s3_client: Any, s3_app: Any, s3_server: Any) -> None:
    db = s3_app.extensions["vlq"].db
    with db.session() as session:
        before = session.scalar(select(func.count()).select_from(Job))
    s3_server.stop()
    try:
        response = _submit(s3_client, make_image(color=(9, 9, 9)))
        upload_response = upload(s3_client, "down.jsonl")
        ready = s3_client.get("/readyz")
    finally:
        s3_server.start()
    error = response.get_json()["error"]
    assert response.status_code == 503 and error["code"] == "storage_unavailable"
    assert response.headers["Retry-After"]
    assert upload_response.status_code == 503 and upload_response.get_json()["error"]["code"] == "storage_unavailable"
    assert ready.status_code == 503 and "storage" in ready.get_json()["missing"]
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == before
    assert _submit(s3_client, make_image(color=(9, 9, 9))).status_code == 202  # back once the store is


def test_a_missing_bucket_is_said_at_start_and_by_readyz(settings: Settings, s3_server: Any, api_key: str,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(dataclasses.replace(settings, blob_url="s3://vlq-bucket-never-made/x"))
    assert "vlq-bucket-never-made" in caplog.text
    ready = keyed(app.test_client(), api_key).get("/readyz")
    body = ready.get_json()
    assert ready.status_code == 503 and "storage" in body["missing"]
    assert "vlq-bucket-never-made" in body["checks"]["storage"]
