"""Fuzz every operation of the OpenAPI schema with a valid key: no 5xx, answers as documented.

Each operation gets EXAMPLES_PER_OPERATION generated cases (plus schemathesis' explicit and
coverage cases), valid and invalid, sent in-process to an app with API keys required, on
Postgres and Redis (the production path) and on SQLite. A job id in a path is drawn from
jobs seeded in every state, so results, cancels and webhooks are reached, not only 404s.
The seed is fixed, so CI sees the same cases each run; look further on demand with
TEXTQ_TEST_FUZZ_EXAMPLES=500 TEXTQ_TEST_FUZZ_SEED=<n>.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlalchemy import update

from api.app import create_app
from api.routes import batches
from shared import api_keys
from shared.config import Settings
from shared.db import Database
from shared.jobs.cancel import cancel_job
from shared.jobs.lifecycle import finish_complete_jobs
from shared.jobs.outcomes import record_outcomes
from shared.jobs.retention import mark_expired, purge_items
from shared.jobs.submit import Webhook, create_job
from shared.jobs.work import Outcome
from shared.models import Job, utcnow
from shared.states import Task
from tests.factories import claim, make_job
from tests.file_server import FileServer, Served

EXAMPLES_PER_OPERATION = int(os.environ.get("TEXTQ_TEST_FUZZ_EXAMPLES", "50"))
SEED = int(os.environ.get("TEXTQ_TEST_FUZZ_SEED", "0"))
TENANT, OTHER_TENANT = "fuzz", "fuzz-other"
# What every host name a webhook URL names resolves to here: a public address, so the URL
# passes the guard and the job stores it. Nothing connects to it: no webhook sender runs in
# API tests, and a connection off loopback fails the test (see no_traffic_off_loopback).
PUBLIC_ADDRESS = "93.184.215.14"


class CurrentApp:
    """The ASGI app cases are sent to: the running test's own (the schema is made at import)."""

    def __init__(self) -> None:
        self.app: FastAPI | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert self.app is not None, "no app under test"
        await self.app(scope, receive, send)


TARGET = CurrentApp()
# Job ids a path's job_id is drawn from, besides the generated one; set by the `jobs` fixture.
SEEDED: dict[str, str] = {}

# The schema does not depend on the settings; each test's cases go to an app of its own.
schema = schemathesis.openapi.from_dict(
    create_app(Settings(auth="required")).openapi(),
    config=schemathesis.Config.from_dict(
        {
            "seed": SEED,
            # A body made invalid by strings past their maxLength may pass the body limit
            # (TEXTQ_MAX_REQUEST_BYTES) too: a 413 rejects it as well as a 422 would.
            "checks": {
                "negative_data_rejection": {
                    "expected-statuses": [
                        400,
                        401,
                        403,
                        404,
                        405,
                        406,
                        409,
                        413,
                        415,
                        422,
                        428,
                        429,
                    ]
                }
            },
        }
    ),
)
schema.app = TARGET


@schema.hook
def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> Any:
    """Send a seeded job's id more often than not, so routes get past their 404."""
    if not path_parameters or "job_id" not in path_parameters or not SEEDED:
        return st.just(path_parameters)
    ids = [path_parameters["job_id"], *SEEDED.values()]
    return st.sampled_from(ids).map(lambda job_id: {**path_parameters, "job_id": job_id})


@schema.hook
def map_query(context: Any, query: dict[str, Any] | None) -> dict[str, Any] | None:
    """Keep a valid `wait_s` valid but short: no worker runs, a wait would last it out."""
    wait_s = (query or {}).get("wait_s")
    if isinstance(wait_s, int | float) and not isinstance(wait_s, bool) and 0 < wait_s <= 60:
        return {**(query or {}), "wait_s": wait_s / 600}
    return query


def _follows_until_the_end(case: schemathesis.Case) -> bool:
    """Say whether the case's answer streams until its job ends: the events stream, and a
    followed export (a `format` other than json with `follow` true)."""
    query = case.query or {}
    follows = query.get("follow") in (True, "true") and query.get("format") in ("jsonl", "csv")
    return case.path.endswith("/events") or follows


@schemathesis.hook("before_call")
def end_streams_of_the_queued_job(context: Any, case: schemathesis.Case, kwargs: Any) -> None:
    """Send streams that last until the job ends to the cancelled job, not the queued one.

    No worker runs here, so the queued job never ends and its stream would never finish;
    its 404s and 4xx (bad ids, bad Last-Event-ID) are reached through the other jobs alike.
    """
    params = case.path_parameters or {}
    if SEEDED and params.get("job_id") == SEEDED["queued"] and _follows_until_the_end(case):
        case.path_parameters = {**params, "job_id": SEEDED["cancelled"]}


@pytest.fixture(params=["postgres", "sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    """Postgres and Redis, the production path; and SQLite, cheap to add."""
    return str(request.param)


@pytest.fixture
def fuzz_settings(api_settings: Settings) -> Settings:
    return api_settings.model_copy(
        update={
            "auth": "required",
            # The limiter stays on (its headers are part of every answer) but never says no.
            "rate_limit_per_s": 100_000.0,
            "rate_limit_burst": 1_000_000,
            # No worker runs: the classic endpoints answer 202 at once instead of waiting.
            "sync_timeout_s": 0.0,
            # Batches' input_url is fetched from a file server there (inputs_fetched_here).
            "webhook_allowed_networks": "127.0.0.1/32",
        }
    )


@pytest.fixture
def fuzz_db(fuzz_settings: Settings) -> Iterator[Database]:
    database = Database(fuzz_settings.resolved_database_url, application_name="textq-tests")
    yield database
    database.dispose()


@pytest.fixture
def api_key(fuzz_db: Database) -> str:
    with fuzz_db.write() as session:
        return api_keys.create_key(session, tenant_id=TENANT).key


def finish(db: Database, job: Job, *, task: Task, fail_last: bool = False) -> None:
    """Run a job's items as a worker would: each gets a result, the last an error if asked."""
    held = claim(db, task=task)
    output = (
        {"label": "POSITIVE", "score": 0.9, "scores": {"POSITIVE": 0.9, "NEGATIVE": 0.1}}
        if task is Task.SENTIMENT
        else {"summary_text": "Short."}
    )
    outcomes = [Outcome(item.id, result=output) for item in held.items]
    if fail_last:
        outcomes[-1] = Outcome(held.items[-1].id, error="The model could not read it.")
    with db.write() as session:
        record_outcomes(session, claim_token=held.token, outcomes=outcomes)
        finish_complete_jobs(session, [job.id])


@pytest.fixture
def jobs(fuzz_db: Database, api_key: str) -> Iterator[dict[str, str]]:
    """Seed the tenant's jobs in every state, and one of another tenant's."""
    db = fuzz_db
    with db.write() as session:
        api_keys.create_key(session, tenant_id=OTHER_TENANT)  # the tenant, with a key
        done = create_job(
            session,
            tenant_id=TENANT,
            task=Task.SENTIMENT,
            model="model-a",
            options={},
            texts=["good", "bad", "unreadable"],
            webhook=Webhook(url="https://hooks.example/x", events=["completed", "progress"]),
            priority=5,
        )
    # One job at a time: a claim takes whatever items are pending.
    finish(db, done, task=Task.SENTIMENT, fail_last=True)
    summary = make_job(db, texts=["A long text."], task=Task.SUMMARIZE, tenant_id=TENANT)
    finish(db, summary, task=Task.SUMMARIZE)
    theirs = make_job(db, texts=["private"], tenant_id=OTHER_TENANT)
    finish(db, theirs, task=Task.SENTIMENT)
    expired = make_job(db, texts=["old"], tenant_id=TENANT)
    finish(db, expired, task=Task.SENTIMENT)
    with db.write() as session:
        session.execute(
            update(Job)
            .where(Job.id == expired.id)
            .values(finished_at=utcnow() - timedelta(days=400))
        )
    with db.write() as session:
        while purge_items(session, expired.id):
            pass
        mark_expired(session, expired.id)
    cancelled = make_job(db, texts=["never mind"], tenant_id=TENANT)
    with db.write() as session:
        cancel_job(session, tenant_id=TENANT, job_id=cancelled.id)
    queued = make_job(db, texts=["still waiting"], tenant_id=TENANT)
    SEEDED.update(
        queued=str(queued.id),
        succeeded=str(done.id),
        summarized=str(summary.id),
        expired=str(expired.id),
        cancelled=str(cancelled.id),
        other_tenant=str(theirs.id),
    )
    yield dict(SEEDED)
    SEEDED.clear()


@pytest.fixture
def app(fuzz_settings: Settings, jobs: dict[str, str]) -> Iterator[FastAPI]:
    """The app under test; its lifespan starts with the first case and ends with the test."""
    TARGET.app = create_app(fuzz_settings)
    yield TARGET.app
    asgi.shutdown_lifespans()
    TARGET.app = None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return False
    return True


@pytest.fixture(autouse=True)
def inputs_fetched_here(monkeypatch: pytest.MonkeyPatch) -> Iterator[FileServer]:
    """Fetch every batch's `input_url` from a file server on loopback, path and query kept.

    A generated host resolves to the stub's public address, and nothing may connect off
    loopback; the fetch and the reading of what it gets are still the route's own.
    """
    files = FileServer(fallback=Served(b"id,text\n1,I love it\n2,meh\n")).start()
    real_fetch = batches.fetch_input

    assert files.server is not None
    host = f"127.0.0.1:{files.server.server_address[1]}"

    def fetch_here(url: str, settings: Settings) -> Any:
        parts = urlsplit(url)
        return real_fetch(urlunsplit(("http", host, parts.path, parts.query, "")), settings)

    monkeypatch.setattr(batches, "fetch_input", fetch_here)
    yield files
    files.stop()


@pytest.fixture(autouse=True)
def no_traffic_off_loopback(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Answer name lookups here (no DNS query leaves), and refuse connections off loopback."""
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect
    looked_up: list[str] = []
    refused: list[Any] = []

    def getaddrinfo(
        host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name is None or _is_ip(name):  # a literal: no lookup made
            return real_getaddrinfo(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)
        looked_up.append(name)
        address = "127.0.0.1" if name.lower().rstrip(".") == "localhost" else PUBLIC_ADDRESS
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))]

    def connect(self: socket.socket, address: Any) -> None:
        # A name here would be looked up below Python, past the stub: refused as well.
        if isinstance(address, tuple) and not (
            _is_ip(address[0]) and ipaddress.ip_address(address[0]).is_loopback
        ):
            refused.append(address)
            raise ConnectionRefusedError(f"test: no connections off loopback ({address})")
        real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    yield looked_up
    assert refused == [], "something tried to connect off loopback"


def problem_type(response: Any) -> str | None:
    if not response.headers.get("content-type", [""])[0].startswith("application/problem+json"):
        return None
    return str(response.json()["type"])


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_documented(
    case: schemathesis.Case, app: FastAPI, api_key: str
) -> None:
    key = {"Authorization": f"Bearer {api_key}"}
    response = case.call_and_validate(
        headers=key,
        # Valid by the schema yet refused is expected: a text's size limit is a setting
        # (TEXTQ_MAX_TEXT_CHARS), and blank texts are refused; both are documented 422s.
        excluded_checks=[positive_data_acceptance],
    )
    if (case.path_parameters or {}).get("job_id") == SEEDED["other_tenant"]:
        # Another tenant's job is answered exactly as a job that does not exist.
        unknown = case.operation.Case(
            path_parameters={**case.path_parameters, "job_id": str(uuid.uuid4())},
            query=case.query,
            headers=case.headers,
            body=case.body,
            media_type=case.media_type,
        ).call(headers=key)
        assert (response.status_code, problem_type(response)) == (
            unknown.status_code,
            problem_type(unknown),
        )


# --- What the fuzzers found, pinned ------------------------------------------------------


@pytest.mark.parametrize("path", ["/summarize", "/v1/summarize"])
def test_a_min_length_over_max_length_is_a_422_not_a_500(client: TestClient, path: str) -> None:
    response = client.post(path, json={"text": "0", "max_length": 2, "min_length": 3})
    assert response.status_code == 422
    assert "min_length must not be greater than max_length" in response.json()["detail"]


@pytest.mark.parametrize(
    ("path", "allowed"),
    # A fixed id: pytest-xdist processes must collect the same test names.
    [("/v1/jobs", "GET, POST"), ("/v1/jobs/4c1f9b52-3a0e-4d6f-9e1a-7b2c5d8e0f13", "DELETE, GET")],
)
def test_a_405_allows_every_method_of_the_path(client: TestClient, path: str, allowed: str) -> None:
    response = client.request("PATCH", path)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed


@pytest.mark.parametrize(
    ("encoding", "status"),
    [("utf-16", 415), ("utf-32", 415), ("idna", 415), ("undefined", 415), ("utf-8\x00", 422)],
)
def test_an_encoding_the_file_cannot_be_read_with_is_refused_not_a_500(
    client: TestClient, encoding: str, status: int
) -> None:
    response = client.post(
        "/v1/batches",
        files={"file": ("feedback.csv", b"text\nI love it\n")},
        data={"task": "sentiment", "encoding": encoding},
    )
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"


def test_a_webhook_host_name_is_answered_by_the_stub_not_dns(
    client: TestClient, backend: str, no_traffic_off_loopback: list[str]
) -> None:
    body = {"task": "sentiment", "input": {"text": "ok"}}
    named = client.post("/v1/jobs", json=body | {"webhook_url": "https://hooks.invalid/x"})
    assert named.status_code == 202
    local = client.post("/v1/jobs", json=body | {"webhook_url": "http://localhost/x"})
    # The stub's loopback answer decides: refused, but on the embedded default (SQLite, no keys).
    assert local.status_code == (202 if backend == "sqlite" else 422), local.text
    assert no_traffic_off_loopback == ["hooks.invalid", "localhost"]
