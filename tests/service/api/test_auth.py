"""Authentication: bearer keys (stored only as a hash), one 401 for every failure, the failed-authentication limit
per address, admin keys that manage their own tenant's keys only, and the auth-off flag."""
import base64
import dataclasses
import hashlib
import time
import uuid

import pytest
from sqlalchemy import select

from service.adapters.db import Database
from service.api.auth import UNAUTHENTICATED
from service.app import create_app
from service.core.models import ApiKey, Job
from tests.conftest import keyed, make_image, make_key

IDLE_MODEL = "tiny-priority"  # no session worker serves it, so submitted jobs stay queued


@pytest.fixture(scope="module")
def admin_key(settings):
    return make_key(settings, name="ops", tenant="ops", admin=True, rate_limit_rps=0)


@pytest.fixture
def admin(app, admin_key):
    return keyed(app.test_client(), admin_key)


def _job_body(**fields):
    return {"prompt": "Total?", "model": IDLE_MODEL, "image": base64.b64encode(make_image()).decode(), **fields}


def _error(response):
    return response.status_code, response.get_json()["error"]["code"]


def test_a_request_without_a_key_is_a_401_that_says_how_to_authenticate(app):
    anonymous = app.test_client()
    for method, path in [("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/v1/batches"), ("GET", "/v1/files"),
                         ("GET", "/v1/webhooks"), ("GET", "/v1/keys"), ("GET", "/v1/jobs/job_x"), ("GET", "/v2/nope")]:
        response = anonymous.open(path, method=method)
        assert _error(response) == (401, "unauthorized"), path
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "Authorization: Bearer" in response.get_json()["error"]["message"]


def _key_id(settings, secret):
    with Database(settings.database_url).session() as session:
        return session.scalars(select(ApiKey.id).where(ApiKey.key_hash == hashlib.sha256(secret.encode())
                                                       .hexdigest())).one()


def test_every_failed_authentication_gets_one_and_the_same_401(app, admin, settings):
    revoked = make_key(settings, name="leaked", tenant="ops")
    assert admin.delete(f"/v1/keys/{_key_id(settings, revoked)}").status_code == 200
    failures = {
        "no key": {},
        "unknown key": {"Authorization": "Bearer vlq_sk_" + "A" * 43},
        "revoked key": {"Authorization": f"Bearer {revoked}"},
        "unknown x-goog-api-key": {"x-goog-api-key": "vlq_sk_" + "B" * 43},
        "not a VLQ key": {"Authorization": "Bearer not-a-vlq-key"},
        "another scheme": {"Authorization": "Basic dXNlcjpwYXNz"},
        "no token": {"Authorization": "Bearer"},
        "oversized": {"Authorization": "Bearer vlq_sk_" + "x" * 500},
    }
    answers = {}
    for case, headers in failures.items():
        response = app.test_client().get("/v1/jobs", headers=headers)
        answers[case] = (response.status_code, response.get_json(), response.headers.get("WWW-Authenticate"))
    assert answers["no key"] == (401, {"error": {"code": "unauthorized", "message": UNAUTHENTICATED}},
                                 'Bearer realm="vlq"')
    assert {case: answer for case, answer in answers.items() if answer != answers["no key"]} == {}


def test_health_endpoints_need_no_key(settings):
    # Redis down: readiness is then fixed (a 503 saying so), whatever workers other tests left running. A keyed
    # route would answer 401 before its view ran; these views run and answer for themselves.
    anonymous = create_app(dataclasses.replace(settings, redis_url="redis://127.0.0.1:1/0")).test_client()
    assert anonymous.get("/healthz").get_json() == {"status": "ok"}
    ready = anonymous.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["missing"] == ["redis"]
    health = anonymous.get("/health")
    assert health.status_code == 503 and health.get_json() == {"status": "unhealthy", "missing": ["redis"]}
    assert _error(anonymous.get("/v1/jobs")) == (401, "unauthorized")  # while a keyed route still asks for one


def test_admin_creates_a_key_that_works_and_whose_secret_is_shown_once(app, admin, settings):
    response = admin.post("/v1/keys", json={"name": "erp", "rate_limit_rps": 5, "max_queued_jobs": 50})
    assert response.status_code == 201
    created = response.get_json()
    secret = created["key"]
    assert secret.startswith("vlq_sk_") and len(secret) >= 7 + 43  # 256 random bits, base64url
    assert created["prefix"] == secret[:11] and created["tenant"] == "ops" and created["admin"] is False
    assert (created["rate_limit_rps"], created["max_queued_jobs"]) == (5, 50)
    assert response.headers["Location"] == f"/v1/keys/{created['id']}"

    shown = admin.get(f"/v1/keys/{created['id']}").get_json()
    assert "key" not in shown and shown["last_used_at"] is None
    listed = admin.get("/v1/keys", query_string={"limit": 100}).get_json()["data"]
    assert created["id"] in [k["id"] for k in listed] and all("key" not in k for k in listed)

    # Only the SHA-256 of the secret is stored.
    with Database(settings.database_url).session() as session:
        row = session.get(ApiKey, created["id"])
        assert row.key_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert secret not in [str(value) for value in vars(row).values()]

    user = keyed(app.test_client(), secret)
    assert user.get("/v1/jobs").status_code == 200
    assert admin.get(f"/v1/keys/{created['id']}").get_json()["last_used_at"] is not None


def test_a_revoked_key_stops_working_at_once(app, admin, settings):
    secret = make_key(settings, name="leaked", tenant="ops")
    user = keyed(app.test_client(), secret)
    assert user.get("/v1/jobs").status_code == 200
    key_id = _key_id(settings, secret)
    revoked = admin.delete(f"/v1/keys/{key_id}")
    assert revoked.status_code == 200 and revoked.get_json()["revoked_at"] is not None
    response = user.get("/v1/jobs")
    assert _error(response) == (401, "unauthorized")
    assert response.get_json()["error"]["message"] == UNAUTHENTICATED  # the same as for a key that never existed
    assert admin.get(f"/v1/keys/{key_id}").get_json()["revoked_at"] is not None  # kept, for the record


def test_only_admin_keys_manage_keys(client, admin):
    for method, path in [("POST", "/v1/keys"), ("GET", "/v1/keys"), ("GET", "/v1/keys/key_x"),
                         ("DELETE", "/v1/keys/key_x")]:
        response = client.open(path, method=method, json={"name": "sneaky", "admin": True})
        assert _error(response) == (403, "forbidden"), path
    assert _error(admin.get("/v1/keys/key_nope")) == (404, "not_found")


@pytest.mark.parametrize(("body", "field"), [
    ({}, "name"),
    ({"name": "x", "tenant": "no spaces"}, "tenant"),
    ({"name": "x", "rate_limit_rps": -1}, "rate_limit_rps"),
    ({"name": "x", "max_queued_jobs": "lots"}, "max_queued_jobs"),
    ({"name": "x", "admin": "maybe"}, "admin"),
])
def test_bad_key_requests_name_the_field(admin, body, field):
    response = admin.post("/v1/keys", json=body)
    assert response.status_code == 400 and response.get_json()["error"]["details"]["field"] == field


def test_with_auth_disabled_every_request_is_the_default_tenant_without_admin_rights(settings, client):
    open_app = create_app(dataclasses.replace(settings, disable_auth=True))
    anonymous = open_app.test_client()
    response = anonymous.post("/v1/jobs", json=_job_body())
    assert response.status_code == 202
    job_id = response.get_json()["id"]
    assert anonymous.get(f"/v1/jobs/{job_id}").status_code == 200
    with Database(settings.database_url).session() as session:
        assert session.get(Job, job_id).tenant == "default"
    assert client.get(f"/v1/jobs/{job_id}").status_code == 404  # a keyed tenant never sees it
    # Keys minted through an open server would outlive it; use `vlq keys create` or an admin key instead.
    assert _error(anonymous.post("/v1/keys", json={"name": "x", "admin": True})) == (403, "forbidden")


def test_an_admin_key_manages_only_its_own_tenants_keys(app, admin, settings):
    for body in ({"name": "mine now", "tenant": "initech"}, {"name": "boss", "tenant": "initech", "admin": True}):
        response = admin.post("/v1/keys", json=body)
        assert _error(response) == (403, "forbidden")
        assert "own tenant (ops)" in response.get_json()["error"]["message"]
        assert "vlq keys create --tenant" in response.get_json()["error"]["message"]
    own = admin.post("/v1/keys", json={"name": "deputy", "tenant": "ops", "admin": True})
    assert own.status_code == 201 and own.get_json()["tenant"] == "ops"

    # Another tenant's key (the operator made it, with the CLI's function) is out of sight, as any of its rows.
    theirs = make_key(settings, name="theirs", tenant="initech", admin=True)
    their_id = _key_id(settings, theirs)
    assert _error(admin.get(f"/v1/keys/{their_id}")) == (404, "not_found")
    assert _error(admin.delete(f"/v1/keys/{their_id}")) == (404, "not_found")
    listed = admin.get("/v1/keys", query_string={"limit": 100}).get_json()["data"]
    assert listed and {key["tenant"] for key in listed} == {"ops"} and their_id not in [k["id"] for k in listed]
    # Nor can that tenant's admin reach this one's keys; its own key still works.
    other_admin = keyed(app.test_client(), theirs)
    assert _error(other_admin.delete(f"/v1/keys/{own.get_json()['id']}")) == (404, "not_found")
    assert other_admin.get("/v1/keys").status_code == 200
    assert admin.get(f"/v1/keys/{own.get_json()['id']}").get_json()["revoked_at"] is None


def test_failed_authentications_are_limited_per_address_before_any_key_is_looked_up(settings, api_key):
    limited = create_app(dataclasses.replace(settings, auth_failure_rate_per_s=10, auth_failure_burst=3))
    attacker, bystander = (f"2001:db8::{uuid.uuid4().hex[:4]}:{n}" for n in (1, 2))  # fresh addresses every run

    def get(address, secret=None, path="/v1/jobs"):
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        return limited.test_client().get(path, headers=headers, environ_base={"REMOTE_ADDR": address})

    for _ in range(3):  # the burst
        assert _error(get(attacker, "vlq_sk_" + "C" * 43)) == (401, "unauthorized")
    refused = get(attacker, "vlq_sk_" + "C" * 43)
    assert _error(refused) == (429, "rate_limited")
    assert int(refused.headers["Retry-After"]) >= 1
    assert "failed authentications from this address" in refused.get_json()["error"]["message"]
    assert _error(get(attacker)) == (429, "rate_limited")  # no key is a failed authentication too
    assert _error(get(attacker, api_key)) == (429, "rate_limited")  # refused before its key is looked up
    assert get(attacker, path="/healthz").status_code == 200  # views that need no key still answer

    # Another address is not affected, and a valid key's requests never count as failures.
    for _ in range(10):
        assert get(bystander, api_key).status_code == 200
    assert _error(get(bystander, "vlq_sk_" + "D" * 43)) == (401, "unauthorized")

    time.sleep(0.3)  # 10 a second: the allowance comes back
    assert get(attacker, api_key).status_code == 200
