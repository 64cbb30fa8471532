"""With SQL statements logged, as an operator turns on to debug, no secret reaches the log.

tests/e2e/test_secrets_in_logs.py checks the real processes' output at TEXTQ_LOG_LEVEL=DEBUG;
this turns on what that leaves off: SQLAlchemy's statement log (`echo=True`, INFO; its
DEBUG level also prints result rows, secrets included), and a failed statement.
"""

import logging
import traceback
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import IntegrityError

from api.app import create_app
from shared import api_keys
from shared.models import WebhookSecret


@pytest.fixture
def sql_log(caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
    return caplog


def test_keys_and_webhook_secrets_stay_out_of_the_sql_log(api_settings, db, sql_log):
    settings = api_settings.model_copy(update={"auth": "required"})
    # A tenant of its own: the Postgres tables of keys and secrets outlive each test.
    with db.write() as session:
        key = api_keys.create_key(session, tenant_id=f"acme-{uuid.uuid4().hex[:8]}").key
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        bearer = {"Authorization": f"Bearer {key}"}
        first = client.get("/v1/webhooks/secret", headers=bearer).json()["secret"]
        second = client.post("/v1/webhooks/secret/rotate", headers={"X-API-Key": key}).json()
        job = {"task": "sentiment", "input": {"texts": ["fine"]}}
        assert client.post("/v1/jobs", json=job, headers=bearer).status_code == 202
        forged = key[:-6] + "AAAAAA"
        assert client.get("/v1/jobs", headers={"X-API-Key": forged}).status_code == 401
    logged = sql_log.text
    assert "INSERT INTO webhook_secrets" in logged, "the SQL log was not captured"
    assert "UPDATE webhook_secrets" in logged
    assert "[SQL parameters hidden due to hide_parameters=True]" in logged
    for secret in (key, key.split("_", 2)[2], forged, first, second["secret"]):
        assert secret not in logged


def test_a_failed_statement_does_not_carry_its_parameters(db):
    secret = "whsec_c2VjcmV0LW5vdC1pbi1hbnktbG9n"
    tenant = f"tenant-{uuid.uuid4().hex[:8]}"  # Postgres' secrets outlive each test
    with db.write() as session:
        session.add(WebhookSecret(tenant_id=tenant, secret="whsec_Zmlyc3Qtc2VjcmV0"))
    with pytest.raises(IntegrityError) as raised, db.write() as session:
        session.add(WebhookSecret(tenant_id=tenant, secret=secret))
    # What `log.exception` would write for it.
    written = "".join(traceback.format_exception(raised.value))
    assert "pk_webhook_secrets" in written or "UNIQUE" in written
    assert secret not in written
