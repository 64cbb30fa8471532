"""TEXTQ_MAX_ACTIVE_JOBS_PER_TENANT: a tenant at its limit of unfinished jobs gets 429."""

import threading

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.submit import Submitter
from shared import api_keys
from shared.errors import TooManyActiveJobs
from shared.jobs.submit import count_active_jobs
from shared.models import DEFAULT_TENANT_ID
from shared.states import Task
from shared.unanswered_rings import UnansweredRings
from tests.api.test_submit import problem
from tests.broker import published

LIMIT = 3
TEXTS = {"task": "sentiment", "input": {"texts": ["I love it", "meh"]}}


@pytest.fixture
def limited(api_settings):
    settings = api_settings.model_copy(update={"max_active_jobs_per_tenant": LIMIT})
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as test_client:
        yield test_client


def fill_up(client, headers=None):
    """Submit LIMIT jobs (no worker runs them, so they stay queued); return their ids."""
    ids = []
    for _ in range(LIMIT):
        response = client.post("/v1/jobs", json=TEXTS, headers=headers)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    return ids


def assert_refused(response):
    refused = problem(response, 429, "too-many-active-jobs")
    assert (refused["limit"], refused["active"]) == (LIMIT, LIMIT)
    assert f"has {LIMIT} jobs queued or running; the limit is {LIMIT}" in refused["detail"]
    assert "TEXTQ_MAX_ACTIVE_JOBS_PER_TENANT" in refused["detail"]
    assert int(response.headers["retry-after"]) > 0


def submissions():
    """Every way to make a job, as (path, request keyword arguments)."""
    return [
        ("/v1/jobs", {"json": TEXTS}),
        ("/v1/jobs", {"json": {"task": "summarize", "input": {"document": "A long report."}}}),
        (
            "/v1/jobs?task=summarize",
            {"content": b"A report.", "headers": {"content-type": "text/plain"}},
        ),
        (
            "/v1/batches",
            {"files": {"file": ("f.csv", b"text\nfine\n")}, "data": {"task": "sentiment"}},
        ),
        ("/analyze", {"json": {"text": "great"}}),
        ("/summarize", {"json": {"text": "A short story."}}),
    ]


def test_at_the_limit_every_way_to_submit_is_429_and_stores_nothing(
    limited, stored_rows, api_settings
):
    fill_up(limited)
    assert stored_rows() == (LIMIT, 2 * LIMIT)
    rung = published(api_settings, Task.SENTIMENT)
    assert rung, "the accepted jobs rang"
    # As a worker taking the ring would: a refused submit that rang would now publish.
    UnansweredRings(api_settings).clear([message["queue"] for message in rung])
    for path, request in submissions():
        assert_refused(limited.post(path, **request))
    assert stored_rows() == (LIMIT, 2 * LIMIT)
    assert published(api_settings, Task.SENTIMENT) == rung
    assert published(api_settings, Task.SUMMARIZE) == []


def test_a_finished_job_frees_its_place(limited):
    first, *_ = fill_up(limited)
    assert_refused(limited.post("/v1/jobs", json=TEXTS))
    assert limited.post(f"/v1/jobs/{first}/cancel").status_code == 200
    assert limited.post("/v1/jobs", json=TEXTS).status_code == 202
    assert_refused(limited.post("/v1/jobs", json=TEXTS))


def test_a_retry_with_its_idempotency_key_still_finds_its_job(limited):
    key = {"Idempotency-Key": "order-1"}
    first = limited.post("/v1/jobs", json=TEXTS, headers=key)
    for _ in range(LIMIT - 1):
        limited.post("/v1/jobs", json=TEXTS)
    again = limited.post("/v1/jobs", json=TEXTS, headers=key)
    assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])


def test_each_tenant_has_its_own_limit(api_settings, db):
    settings = api_settings.model_copy(
        update={"max_active_jobs_per_tenant": LIMIT, "auth": "required"}
    )
    with db.write() as session:
        acme = api_keys.create_key(session, tenant_id="acme").key
        globex = api_keys.create_key(session, tenant_id="globex").key
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        fill_up(client, headers={"X-API-Key": acme})
        assert_refused(client.post("/v1/jobs", json=TEXTS, headers={"X-API-Key": acme}))
        other = client.post("/v1/jobs", json=TEXTS, headers={"X-API-Key": globex})
        assert other.status_code == 202


def test_zero_means_no_limit(api_settings):
    settings = api_settings.model_copy(update={"max_active_jobs_per_tenant": 0})
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        for _ in range(LIMIT + 2):
            assert client.post("/v1/jobs", json=TEXTS).status_code == 202


def test_submissions_racing_for_the_last_places_never_pass_the_limit(
    limited, api_settings, stored_rows
):
    """Many submissions at once, each in its own transaction and connection: LIMIT win."""
    settings = api_settings.model_copy(update={"max_active_jobs_per_tenant": LIMIT})
    state = limited.app.state
    submitter = Submitter(db=state.db, settings=settings, tenant_id=DEFAULT_TENANT_ID)
    racers = 12
    start = threading.Barrier(racers)
    outcomes: list[str] = []

    def submit() -> None:
        start.wait()
        try:
            submitter.submit(Task.SENTIMENT, ["a text"], {})
            outcomes.append("accepted")
        except TooManyActiveJobs:
            outcomes.append("refused")

    threads = [threading.Thread(target=submit) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(outcomes) == ["accepted"] * LIMIT + ["refused"] * (racers - LIMIT)
    assert stored_rows() == (LIMIT, LIMIT)
    with state.db.read() as session:
        assert count_active_jobs(session, tenant_id=DEFAULT_TENANT_ID) == LIMIT
