"""Deadlines and retries with a real worker, on SQLite and on Postgres + Redis.

The worker's model is switchable (tests/faults/injectors.py): it holds its batch while a
file exists, and fails on the poison marker while another does, so a deadline passes
while a claim is running, and a text fails the first time and succeeds when retried.
"""

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from shared.db import Database
from shared.models import JobItem
from tests.conftest import BACKENDS, ModelDirs
from tests.e2e.conftest import backend_env
from tests.e2e.polling import all_results, wait_for_job
from tests.e2e.processes import Service, free_port, start, start_command, wait_until_ready
from tests.faults.workload import POISON

pytestmark = pytest.mark.e2e

CLAIM_ITEMS = 4  # one batch of 4 texts a claim: the rest of a job waits for the next


@pytest.fixture(scope="module", params=BACKENDS)
def switchable(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    model_dirs: ModelDirs,
) -> Iterator[tuple[Service, Path]]:
    """`textq api` and a `textq worker` whose model the test switches by files."""
    tmp = tmp_path_factory.mktemp(f"deadlines-{request.param}")
    switches = tmp / "switches"
    switches.mkdir()
    port = free_port()
    env = backend_env(request.param, tmp, request) | {
        "TEXTQ_SENTIMENT_MODEL": str(model_dirs.sentiment),
        "TEXTQ_SUMMARIZATION_MODEL": str(model_dirs.summarization),
        "TEXTQ_EMBEDDING_MODEL": str(model_dirs.embedding),
        "TEXTQ_WORKER_TASKS": "sentiment",
        "TEXTQ_DTYPE": "float32",
        "TEXTQ_SWEEP_INTERVAL_S": "0.5",
        "TEXTQ_MAX_BATCH_SIZE": str(CLAIM_ITEMS),
        "TEXTQ_CLAIM_BATCHES": "1",
        "TEXTQ_RESULT_CACHE": "false",
        "TEXTQ_WORKER_METRICS_PORT": str(free_port()),
    }
    svc = Service(base_url=f"http://127.0.0.1:{port}", env=env, logs=tmp / "logs")
    svc.processes.append(start("api", ["api", "--port", str(port)], env, svc.logs))
    worker = ["-m", "tests.faults.injectors", "switchable", str(switches)]
    svc.processes.append(
        start_command("worker", [*worker, "worker", "--device", "cpu"], env, svc.logs)
    )
    wait_until_ready(svc.base_url, svc.processes)
    with httpx.Client(base_url=svc.base_url, timeout=30) as client:
        warm = client.post("/v1/jobs", json={"task": "sentiment", "input": {"text": "warm"}})
        assert wait_for_job(client, warm.json()["id"])["status"] == "succeeded", svc.logs_text()
    yield svc, switches
    codes = {p.name: p.stop() for p in reversed(svc.processes)}
    assert codes["worker"] == 0, svc.logs_text()


@pytest.fixture
def http(switchable) -> Iterator[httpx.Client]:
    service, _ = switchable
    with httpx.Client(base_url=service.base_url, timeout=30) as client:
        yield client


def database(service: Service) -> Database:
    url = service.env.get("TEXTQ_DATABASE_URL") or (
        f"sqlite:///{service.env['TEXTQ_DATA_DIR']}/textq.db"
    )
    return Database(url, application_name="textq-tests")


def wait_until(check, timeout_s=60.0, what="the condition"):
    """Return the first truthy value `check()` gives, polling; fail after `timeout_s`."""
    ends = time.monotonic() + timeout_s
    while time.monotonic() < ends:
        if value := check():
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout_s} s")


def test_a_deadline_passing_mid_job_ends_the_texts_not_started(switchable, http):
    service, switches = switchable
    (switches / "hold").touch()
    try:
        tag = uuid.uuid4().hex
        texts = [f"text {n} {tag}" for n in range(3 * CLAIM_ITEMS)]
        deadline = datetime.now(UTC) + timedelta(seconds=8)
        job = http.post(
            "/v1/jobs",
            json={
                "task": "sentiment",
                "input": {"texts": texts},
                "deadline": deadline.isoformat(),
            },
        ).json()
        assert datetime.fromisoformat(job["deadline"]) == deadline
        db = database(service)
        try:

            def running() -> int:
                with db.read() as session:
                    return session.scalar(
                        select(func.count()).where(
                            JobItem.job_id == uuid.UUID(job["id"]), JobItem.status == "running"
                        )
                    )

            # The worker holds its first claim while the deadline passes.
            assert wait_until(running, what="the first claim") == CLAIM_ITEMS
        finally:
            db.dispose()
        assert datetime.now(UTC) < deadline, "the worker took longer to claim than the test allows"

        def expired():
            read = http.get(f"/v1/jobs/{job['id']}").json()
            return read if read["progress"]["errored"] == 2 * CLAIM_ITEMS else None

        held = wait_until(expired, timeout_s=60, what="the deadline's expiry")
        assert held["status"] == "running"  # its running claim is still to finish
    finally:
        (switches / "hold").unlink()
    ended = wait_for_job(http, job["id"])
    assert ended["status"] == "partial"
    assert ended["progress"]["done"] == CLAIM_ITEMS
    rows = all_results(http, job["id"])
    assert [row.get("label") is not None for row in rows] == (
        [True] * CLAIM_ITEMS + [False] * 2 * CLAIM_ITEMS
    )
    assert {row.get("error") for row in rows[CLAIM_ITEMS:]} == {"not started before the deadline"}


def test_a_retry_turns_a_partial_job_into_a_succeeded_one(switchable, http):
    _, switches = switchable
    (switches / "poison").touch()
    tag = uuid.uuid4().hex
    texts = [f"fine {tag}", f"{POISON} {tag}", f"also fine {tag}"]
    job = http.post("/v1/jobs", json={"task": "sentiment", "input": {"texts": texts}}).json()
    first = wait_for_job(http, job["id"])
    (switches / "poison").unlink()
    assert (first["status"], first["progress"]["errored"]) == ("partial", 1)
    assert POISON in all_results(http, job["id"])[1]["error"]
    retried = http.post(f"/v1/jobs/{job['id']}/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "running"
    assert retried.json()["finished_at"] is None
    ended = wait_for_job(http, job["id"])
    assert (ended["status"], ended["progress"]["done"], ended["progress"]["errored"]) == (
        "succeeded",
        3,
        0,
    )
    assert all(row.get("label") for row in all_results(http, job["id"]))
    again = http.post(f"/v1/jobs/{job['id']}/retry")
    assert again.status_code == 409
    assert "succeeded: none of its texts failed" in again.json()["detail"]


def test_textq_retry_runs_the_failed_texts_and_waits(switchable, http):
    service, switches = switchable
    (switches / "poison").touch()
    job = http.post(
        "/v1/jobs",
        json={"task": "sentiment", "input": {"texts": [f"{POISON} {uuid.uuid4().hex}"]}},
    ).json()
    assert wait_for_job(http, job["id"])["status"] == "failed"
    (switches / "poison").unlink()

    def textq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "textq", *args],
            env={**os.environ, "TEXTQ_URL": service.base_url},
            capture_output=True,
            text=True,
            timeout=120,
        )

    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    done = textq("retry", job["id"], "--deadline", later, "--wait", "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert (shown["status"], shown["progress"]["done"]) == ("succeeded", 1)
    assert datetime.fromisoformat(shown["deadline"]) == datetime.fromisoformat(later)
    refused = textq("retry", job["id"])
    assert refused.returncode == 1
    assert "none of its texts failed" in refused.stderr
    bad = textq("retry", job["id"], "--deadline", "tomorrow")
    assert bad.returncode == 1
    assert "RFC 3339" in bad.stderr
