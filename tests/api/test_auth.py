"""API keys and tenant isolation: every job route needs a key; other tenants' jobs are 404."""

import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from api.app import create_app
from shared import api_keys
from shared.models import ApiKey, utcnow

TEXTS = {"task": "sentiment", "input": {"texts": ["ok"]}}


@pytest.fixture
def secured(api_settings):
    settings = api_settings.model_copy(update={"auth": "required"})
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as test_client:
        yield test_client


def new_key(db, tenant):
    with db.write() as session:
        return api_keys.create_key(session, tenant_id=tenant).key


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def test_without_a_key_job_routes_are_401_and_health_is_open(secured, stored_rows):
    response = secured.post("/v1/jobs", json=TEXTS)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["type"] == "/problems/unauthorized"
    assert secured.post("/analyze", json={"text": "hi"}).status_code == 401
    assert secured.get("/v1/jobs").status_code == 401
    assert secured.get("/healthz").status_code == 200
    assert stored_rows() == (0, 0)


def test_a_key_works_as_bearer_or_x_api_key(secured, db):
    key = new_key(db, "acme")
    made = secured.post("/v1/jobs", json=TEXTS, headers=bearer(key))
    assert made.status_code == 202
    read = secured.get(f"/v1/jobs/{made.json()['id']}", headers={"X-API-Key": key})
    assert read.status_code == 200


def test_unknown_revoked_and_expired_keys_are_refused(secured, db):
    key = new_key(db, "acme")
    forged = key[:-4] + "AAAA"
    assert secured.get("/v1/jobs", headers=bearer(forged)).status_code == 401
    assert secured.get("/v1/jobs", headers=bearer("tq_nope_nope")).status_code == 401
    prefix = key.split("_")[1]
    with db.write() as session:
        session.execute(
            update(ApiKey)
            .where(ApiKey.prefix == prefix)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert secured.get("/v1/jobs", headers=bearer(key)).status_code == 401
    other = new_key(db, "acme")
    with db.write() as session:
        assert api_keys.revoke_key(session, other.split("_")[1])
    assert secured.get("/v1/jobs", headers=bearer(other)).status_code == 401


def test_another_tenants_job_is_not_found_on_every_route(secured, db):
    mine, theirs = bearer(new_key(db, "acme")), bearer(new_key(db, "globex"))
    job = secured.post("/v1/jobs", json=TEXTS, headers=theirs).json()
    routes = [
        ("GET", f"/v1/jobs/{job['id']}"),
        ("GET", f"/v1/jobs/{job['id']}/results"),
        ("GET", f"/v1/jobs/{job['id']}/results?format=jsonl"),
        ("POST", f"/v1/jobs/{job['id']}/cancel"),
        ("GET", f"/v1/jobs/{job['id']}/webhooks"),
        ("POST", f"/v1/jobs/{job['id']}/webhooks/redeliver"),
        ("DELETE", f"/v1/jobs/{job['id']}"),
    ]
    for method, path in routes:
        response = secured.request(method, path, headers=mine)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["type"] == "/problems/job-not-found"
    assert secured.get("/v1/jobs", headers=mine).json()["items"] == []
    assert [j["id"] for j in secured.get("/v1/jobs", headers=theirs).json()["items"]] == [job["id"]]
    assert secured.get(f"/v1/jobs/{job['id']}", headers=theirs).status_code == 200


def test_idempotency_keys_and_webhook_secrets_are_per_tenant(secured, db):
    mine, theirs = bearer(new_key(db, "acme")), bearer(new_key(db, "globex"))
    same_key = {"Idempotency-Key": "order-1"}
    first = secured.post("/v1/jobs", json=TEXTS, headers=mine | same_key).json()
    second = secured.post("/v1/jobs", json=TEXTS, headers=theirs | same_key)
    assert second.status_code == 202 and second.json()["id"] != first["id"]
    secrets = {
        secured.get("/v1/webhooks/secret", headers=h).json()["secret"] for h in (mine, theirs)
    }
    assert len(secrets) == 2


def test_each_key_has_its_own_rate_limit_with_retry_after(api_settings, db):
    settings = api_settings.model_copy(
        update={"auth": "required", "rate_limit_per_s": 0.5, "rate_limit_burst": 3}
    )
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        mine, theirs = bearer(new_key(db, "acme")), bearer(new_key(db, "globex"))
        answers = [client.get("/v1/jobs", headers=mine) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert [a.headers["ratelimit-remaining"] for a in answers[:3]] == ["2", "1", "0"]
        refused = answers[3]
        assert refused.json()["type"] == "/problems/too-many-requests"
        assert 1 <= int(refused.headers["retry-after"]) <= 2
        assert refused.headers["ratelimit-limit"] == "3"
        assert client.get("/v1/jobs", headers=theirs).status_code == 200


def test_a_used_key_that_is_revoked_is_refused_once_the_cache_lapses(api_settings, db):
    settings = api_settings.model_copy(update={"auth": "required", "api_key_cache_s": 0.5})
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        key = new_key(db, "acme")
        assert client.get("/v1/jobs", headers=bearer(key)).status_code == 200
        with db.write() as session:
            assert api_keys.revoke_key(session, key.split("_")[1])
        time.sleep(0.6)
        assert client.get("/v1/jobs", headers=bearer(key)).status_code == 401


def test_a_remembered_key_still_ends_at_its_expiry(api_settings, db):
    settings = api_settings.model_copy(update={"auth": "required", "api_key_cache_s": 3600})
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        with db.write() as session:
            made = api_keys.create_key(session, tenant_id="acme", expires_in_days=1.5 / 86400)
        assert client.get("/v1/jobs", headers=bearer(made.key)).status_code == 200
        time.sleep(1.6)
        assert client.get("/v1/jobs", headers=bearer(made.key)).status_code == 401
