"""No secret reaches a log: API keys, webhook secrets and the database password, at DEBUG."""

import os
import secrets
import signal
import subprocess
import sys
import time

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests import services
from tests.e2e.polling import wait_for_job
from tests.e2e.processes import free_port, start, wait_until_ready
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.e2e


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run `textq <args>` as an operator does, with its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "textq", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )


def wait_for_delivery(http: httpx.Client, job_id: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events = http.get(f"/v1/jobs/{job_id}/webhooks").json()
        if events and all(event["status"] == "delivered" for event in events):
            return
        time.sleep(0.2)
    raise AssertionError(f"webhook events of {job_id} not delivered: {events}")


def test_no_secret_appears_in_any_log_at_debug(tmp_path, model_dirs, request):
    database = services.create_postgres_database()
    request.addfinalizer(lambda: services.drop_postgres_database(database))
    request.getfixturevalue("redis_url")
    # Postgres here trusts local connections and ignores the password; it is still sent.
    db_password = f"s3cret-{secrets.token_hex(8)}"
    url = make_url(database).set(password=db_password).render_as_string(hide_password=False)
    port = free_port()
    env = {
        "TEXTQ_DATABASE_URL": url,
        "TEXTQ_BROKER_URL": services.REDIS_URL,
        "TEXTQ_DATA_DIR": str(tmp_path / "data"),
        "TEXTQ_QUEUE_PREFIX": f"textq-secrets-{secrets.token_hex(4)}",
        "TEXTQ_SENTIMENT_MODEL": str(model_dirs.sentiment),
        "TEXTQ_SUMMARIZATION_MODEL": str(model_dirs.summarization),
        "TEXTQ_EMBEDDING_MODEL": str(model_dirs.embedding),
        "TEXTQ_DTYPE": "float32",
        "TEXTQ_AUTH": "required",
        "TEXTQ_LOG_LEVEL": "DEBUG",
        # Text lines, so the checks below can match uvicorn's access lines as they are.
        "TEXTQ_LOG_FORMAT": "text",
        "TEXTQ_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        "TEXTQ_WEBHOOK_RETRY_SCHEDULE_S": "0,1,1,1,1",
    }
    outputs: dict[str, str] = {}
    upgraded = cli(env, "db", "upgrade")
    outputs["db upgrade"] = upgraded.stdout + upgraded.stderr
    made = cli(env, "keys", "create", "--tenant", "acme", "--name", "billing")
    key = made.stdout.strip().splitlines()[-1]
    # The key is printed once, on purpose, alone on the last line of stdout; nowhere else.
    outputs["keys create"] = made.stdout.strip().rsplit("\n", 1)[0] + made.stderr
    revoked = cli(env, "keys", "create", "--tenant", "acme").stdout.strip().splitlines()[-1]
    listed = cli(env, "keys", "list")
    revoke = cli(env, "keys", "revoke", revoked.split("_")[1])
    outputs["keys list, revoke"] = listed.stdout + listed.stderr + revoke.stdout + revoke.stderr

    up = start("up", ["up", "--port", str(port)], env, tmp_path / "logs")
    receiver = Receiver().start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, [up])
        with httpx.Client(base_url=base, timeout=60) as http:
            as_bearer = {"Authorization": f"Bearer {key}"}
            first_secret = http.get("/v1/webhooks/secret", headers=as_bearer).json()["secret"]
            rotated = http.post("/v1/webhooks/secret/rotate", headers={"X-API-Key": key})
            second_secret = rotated.json()["secret"]
            assert first_secret != second_secret
            forged = key[:-6] + "AAAAAA"
            for wrong in (forged, revoked):
                assert http.get("/v1/jobs", headers={"X-API-Key": wrong}).status_code == 401
            body = {"task": "sentiment", "input": {"texts": ["great"]}, "webhook_url": receiver.url}
            job = http.post("/v1/jobs", json=body, headers=as_bearer).json()
            http.headers.update(as_bearer)
            assert wait_for_job(http, job["id"])["status"] == "succeeded", up.output()
            wait_for_delivery(http, job["id"])
            # Signed with both secrets while the rotated-out one is honoured.
            [delivery] = receiver.received
            assert len(delivery.headers["webhook-signature"].split()) == 2
            assert http.get("/nowhere", params={"q": "x"}).status_code == 404
    finally:
        receiver.stop()
        up.stop(signal.SIGINT)
    outputs["up (API, worker, webhooks)"] = up.output()

    logs = outputs["up (API, worker, webhooks)"]
    # The capture is real: DEBUG lines and the access log are in it.
    assert " DEBUG " in logs
    assert '"POST /v1/webhooks/secret/rotate HTTP/1.1" 200' in logs
    assert '"GET /v1/jobs HTTP/1.1" 401' in logs
    leaks = {
        "API key": key,
        "API key's secret part": key.split("_", 2)[2],
        "revoked key": revoked,
        "forged key": forged,
        "webhook secret": first_secret,
        "rotated webhook secret": second_secret,
        "webhook secret's key": first_secret.removeprefix("whsec_"),
        "database password": db_password,
    }
    found = [
        f"{what} in the output of {where}"
        for where, text in outputs.items()
        for what, value in leaks.items()
        if value in text
    ]
    assert found == [], found
