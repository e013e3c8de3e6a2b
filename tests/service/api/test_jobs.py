"""The jobs API against a real database and Redis; no worker consumes these jobs' queue."""
import base64
import io
import json

import pytest
import redis

from service.adapters.db import Database
from service.core import lifecycle
from service.core.models import Job
from tests.conftest import REDIS_URL, keyed, make_image

# A registry model no worker serves in this session, so jobs stay queued while the API is examined.
IDLE_MODEL = "tiny-idle"


def _multipart(image: bytes = None, **fields):
    data = {"prompt": "What is the total?", "model": IDLE_MODEL, **fields}
    if image is not None:
        data["image"] = (io.BytesIO(image), "receipt.png")
    return data


def _json(image: bytes, **fields):
    return {"prompt": "What is the total?", "model": IDLE_MODEL, "image": base64.b64encode(image).decode(), **fields}


def test_multipart_submit_is_accepted_stored_and_enqueued(client, settings):
    queue = f"vlq.{IDLE_MODEL}.interactive"
    before = redis.Redis.from_url(REDIS_URL).llen(queue)
    response = client.post("/v1/jobs", data=_multipart(make_image(), max_tokens="32", metadata='{"invoice": 7}'))
    assert response.status_code == 202
    job = response.get_json()
    assert job["status"] == "queued" and job["model"] == IDLE_MODEL
    assert job["max_tokens"] == 32 and job["metadata"] == {"invoice": 7}
    assert job["image"]["format"] == "PNG" and job["image"]["width"] == 96
    assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert client.get(f"/v1/jobs/{job['id']}").get_json() == job
    assert redis.Redis.from_url(REDIS_URL).llen(queue) == before + 1


def test_json_submit_accepts_a_data_url(client):
    image = make_image("JPEG")
    body = _json(image, priority="bulk", temperature=0.7)
    body["image"] = "data:image/jpeg;base64," + body["image"]
    job = client.post("/v1/jobs", json=body).get_json()
    assert (job["priority"], job["temperature"], job["image"]["format"]) == ("bulk", 0.7, "JPEG")


def test_idempotency_key_returns_the_same_job(client, settings):
    body = _json(make_image(color=(1, 2, 3)))
    first = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "idem-same"})
    second = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "idem-same"})
    assert first.status_code == second.status_code == 202
    assert second.headers["Idempotent-Replayed"] == "true"
    assert first.get_json()["id"] == second.get_json()["id"]
    with Database(settings.database_url).session() as session:
        assert session.query(Job).filter_by(idempotency_key="idem-same").count() == 1


def test_idempotency_key_reused_for_another_request_is_a_conflict(client):
    client.post("/v1/jobs", json=_json(make_image()), headers={"Idempotency-Key": "idem-diff"})
    response = client.post("/v1/jobs", json=_json(make_image(), prompt="Another question"),
                           headers={"Idempotency-Key": "idem-diff"})
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "idempotency_key_reused"


BAD_REQUESTS = {
    "missing image": (lambda: _multipart(None), 400, "missing_field"),
    "missing prompt": (lambda: _multipart(make_image(), prompt=""), 400, "missing_field"),
    "truncated image": (lambda: _multipart(make_image()[:100]), 400, "invalid_image"),
    "undecodable bytes": (lambda: _multipart(b"\x89PNG but not really"), 400, "invalid_image"),
    "gif": (lambda: _multipart(make_image("GIF")), 400, "unsupported_image_format"),
    "unknown model": (lambda: _multipart(make_image(), model="gpt-9"), 400, "unknown_model"),
    "max_tokens 0": (lambda: _multipart(make_image(), max_tokens="0"), 400, "invalid_field"),
    "max_tokens huge": (lambda: _multipart(make_image(), max_tokens="100000"), 400, "invalid_field"),
    "max_tokens text": (lambda: _multipart(make_image(), max_tokens="many"), 400, "invalid_field"),
    "temperature": (lambda: _multipart(make_image(), temperature="3"), 400, "invalid_field"),
    "priority": (lambda: _multipart(make_image(), priority="urgent"), 400, "invalid_field"),
    "metadata not json": (lambda: _multipart(make_image(), metadata="{oops"), 400, "invalid_field"),
    "metadata not object": (lambda: _multipart(make_image(), metadata="[1]"), 400, "invalid_field"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_bad_multipart_input_gets_a_clear_error_and_stores_nothing(client, settings, case):
    build, status, code = BAD_REQUESTS[case]
    with Database(settings.database_url).session() as session:
        before = session.query(Job).count()
    response = client.post("/v1/jobs", data=build())
    assert response.status_code == status
    error = response.get_json()["error"]
    assert error["code"] == code and error["message"]
    with Database(settings.database_url).session() as session:
        assert session.query(Job).count() == before


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        (json.dumps({"prompt": "x", "image": "@@not-base64@@"}), "invalid_base64"),
        (json.dumps({"prompt": "x", "image": "data:image/png,abc"}), "invalid_base64"),
        (json.dumps({"prompt": 5, "image": base64.b64encode(make_image()).decode()}), "invalid_field"),
        (json.dumps({"prompt": "x", "image": base64.b64encode(make_image()).decode(), "metadata": "str"}),
         "invalid_field"),
    ],
)
def test_malformed_json_or_base64_is_a_400(client, body, code):
    response = client.post("/v1/jobs", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == code


def test_image_over_the_byte_limit_is_a_413(app, settings, api_key):
    from service.app import create_app

    small = create_app(settings.__class__(**{**settings.__dict__, "max_image_bytes": 500}))
    response = keyed(small.test_client(), api_key).post("/v1/jobs", data=_multipart(make_image(size=(300, 300))))
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] in {"image_too_large", "request_too_large"}


def test_other_content_types_are_a_415(client):
    response = client.post("/v1/jobs", data="prompt=x", content_type="text/plain")
    assert response.status_code == 415
    assert response.get_json()["error"]["code"] == "unsupported_media_type"


def test_list_filters_by_status_and_pages_with_a_cursor(client, settings):
    ids = [client.post("/v1/jobs", json=_json(make_image(), prompt=f"page {i}")).get_json()["id"] for i in range(5)]
    client.post(f"/v1/jobs/{ids[0]}/cancel")
    seen, cursor = [], None
    while True:
        query = {"limit": 2, "status": "queued", **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/jobs", query_string=query).get_json()
        assert len(page["data"]) <= 2
        assert all(job["status"] == "queued" for job in page["data"])
        seen += [job["id"] for job in page["data"]]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert seen == sorted(seen, reverse=True)  # newest first, no repeats
    assert set(ids[1:]) <= set(seen) and ids[0] not in seen
    cancelled = client.get("/v1/jobs", query_string={"status": "cancelled", "limit": 100}).get_json()
    assert ids[0] in [job["id"] for job in cancelled["data"]]


def test_list_rejects_bad_parameters(client):
    assert client.get("/v1/jobs?limit=0").get_json()["error"]["code"] == "invalid_field"
    assert client.get("/v1/jobs?status=done").get_json()["error"]["code"] == "invalid_field"


def test_cancel_a_queued_job_ends_it_and_records_one_event(client, settings):
    job_id = client.post("/v1/jobs", json=_json(make_image())).get_json()["id"]
    response = client.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 202
    job = response.get_json()
    assert job["status"] == "cancelled" and job["finished_at"] and job["error"]["code"] == "cancelled"
    again = client.post(f"/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "job_already_finished"
    with Database(settings.database_url).session() as session:
        assert [e.type for e in lifecycle.events(session, job_id)] == ["job.queued", "job.cancelled"]


def test_unknown_job_and_route_use_the_error_body(client):
    assert client.get("/v1/jobs/job_nope").get_json()["error"]["code"] == "not_found"
    assert client.post("/v1/jobs/job_nope/cancel").status_code == 404
    assert client.get("/v2/anything").get_json()["error"]["code"] == "not_found"
    assert client.put("/v1/jobs").get_json()["error"]["code"] == "method_not_allowed"


def test_a_jobs_image_is_served_with_its_type_and_cache_headers(client):
    image = make_image("WEBP", color=(9, 99, 199))
    job = client.post("/v1/jobs", data=_multipart(image)).get_json()
    response = client.get(f"/v1/jobs/{job['id']}/image")
    assert response.status_code == 200 and response.data == image
    assert response.mimetype == "image/webp"
    assert response.headers["ETag"] == f'"{job["image"]["sha256"]}"'
    assert {"private", "immutable", "max-age=31536000"} <= {
        part.strip() for part in response.headers["Cache-Control"].split(",")}
    again = client.get(f"/v1/jobs/{job['id']}/image", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""


def test_an_image_that_is_not_there_is_a_404(client, settings):
    assert client.get("/v1/jobs/job_nope/image").get_json()["error"]["code"] == "not_found"
    job = client.post("/v1/jobs", data=_multipart(make_image(color=(8, 88, 188)))).get_json()
    with Database(settings.database_url).session() as session:
        session.get(Job, job["id"]).image_sha256 = None  # as for a batch item refused at ingest
    response = client.get(f"/v1/jobs/{job['id']}/image")
    assert response.status_code == 404 and "refused at ingest" in response.get_json()["error"]["message"]


def test_a_seed_is_a_job_field_shown_back_and_bounded(client):
    job = client.post("/v1/jobs", json=_json(make_image(), temperature=1.0, seed=7)).get_json()
    assert (job["seed"], job["temperature"]) == (7, 1.0)
    refused = client.post("/v1/jobs", json=_json(make_image(), seed=-1))
    assert refused.status_code == 400 and refused.get_json()["error"]["details"] == {"field": "seed"}
    client.post(f"/v1/jobs/{job['id']}/cancel")
