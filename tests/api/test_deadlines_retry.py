"""`deadline` on submissions, and `POST /v1/jobs/{id}/retry`, through the API."""

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from shared.jobs.work import Outcome
from shared.models import Job
from shared.states import Task
from tests.api.test_read import finish


def soon(seconds=3600):
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def test_a_jobs_deadline_is_kept_and_shown(client, db):
    deadline = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    written = (deadline + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S") + "+02:00"
    response = client.post(
        "/v1/jobs", json={"task": "sentiment", "input": {"text": "hi"}, "deadline": written}
    )
    assert response.status_code == 202, response.text
    shown = datetime.fromisoformat(response.json()["deadline"])
    assert shown == deadline
    assert (
        client.get(response.headers["location"]).json()["deadline"] == response.json()["deadline"]
    )
    with db.read() as session:
        assert session.scalar(select(Job.deadline)) == deadline


@pytest.mark.parametrize(
    ("deadline", "says"),
    [
        ("2030-01-01T10:00:00", "has no UTC offset"),
        ("2030-01-01", "is not an RFC 3339 time"),
        ("tomorrow", "is not an RFC 3339 time"),
        (1893456000, "is not an RFC 3339 time"),
        ("2020-01-01T10:00:00Z", "passed already"),
    ],
)
def test_a_deadline_not_in_the_accepted_form_is_refused_saying_it(
    client, stored_rows, deadline, says
):
    response = client.post(
        "/v1/jobs", json={"task": "sentiment", "input": {"text": "hi"}, "deadline": deadline}
    )
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert says in detail
    assert "2026-12-01T17:30:00Z" in detail  # the accepted form, by example
    assert stored_rows() == (0, 0)


def test_an_uploaded_file_takes_a_deadline_as_a_form_field(client, stored_rows):
    upload = {"file": ("feedback.csv", b"text\nI love it\nmeh\n")}
    refused = client.post(
        "/v1/batches", files=upload, data={"task": "sentiment", "deadline": "noon"}
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["field"] == "deadline"
    assert stored_rows() == (0, 0)
    deadline = soon()
    accepted = client.post(
        "/v1/batches", files=upload, data={"task": "sentiment", "deadline": deadline}
    )
    assert accepted.status_code == 202, accepted.text
    assert datetime.fromisoformat(accepted.json()["deadline"]) == datetime.fromisoformat(deadline)


def test_the_classic_endpoints_give_their_job_the_wait_as_deadline(client, api_settings):
    patient = api_settings.model_copy(update={"sync_timeout_s": 0.2})
    with TestClient(create_app(patient), base_url="http://127.0.0.1") as impatient:
        before = datetime.now(UTC)
        answer = impatient.post("/analyze", json={"text": "no worker runs here"})
    assert answer.status_code == 202, answer.text
    deadline = datetime.fromisoformat(answer.json()["deadline"])
    assert before < deadline <= before + timedelta(seconds=5)


def test_a_retry_of_a_partial_job_answers_it_running(client, db, api_settings):
    job = client.post(
        "/v1/jobs", json={"task": "sentiment", "input": {"texts": ["good", "bad one"]}}
    ).json()
    finish(
        db,
        api_settings.sentiment_model,
        Task.SENTIMENT,
        lambda item: (
            Outcome(item_id=item.id, error="the model failed")
            if "bad" in item.text
            else Outcome(item_id=item.id, result={"label": "POSITIVE", "score": 0.9})
        ),
    )
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "partial"
    deadline = soon()
    retried = client.post(f"/v1/jobs/{job['id']}/retry", json={"deadline": deadline})
    assert retried.status_code == 200, retried.text
    body = retried.json()
    assert body["status"] == "running"
    assert body["progress"] | {"chunks": None} == {
        "total": 2,
        "done": 1,
        "errored": 0,
        "cached": 0,
        "chunks": None,
    }
    assert datetime.fromisoformat(body["deadline"]) == datetime.fromisoformat(deadline)
    again = client.post(f"/v1/jobs/{job['id']}/retry")
    assert again.status_code == 409, again.text
    assert "is still running (1 of 2 texts finished)" in again.json()["detail"]
    assert again.json()["type"].endswith("/nothing-to-retry")


def test_a_retry_says_why_it_is_refused(client):
    job = client.post("/v1/jobs", json={"task": "sentiment", "input": {"text": "hi"}}).json()
    queued = client.post(f"/v1/jobs/{job['id']}/retry", content=b"")
    assert queued.status_code == 409, queued.text
    assert "has not finished yet" in queued.json()["detail"]
    assert "Only a partial or failed job can be retried" in queued.json()["detail"]
    client.post(f"/v1/jobs/{job['id']}/cancel")
    cancelled = client.post(f"/v1/jobs/{job['id']}/retry", json={})
    assert cancelled.status_code == 409
    assert "was cancelled" in cancelled.json()["detail"]
    bad = client.post(f"/v1/jobs/{job['id']}/retry", json={"deadline": "later"})
    assert bad.status_code == 422, bad.text
    assert "RFC 3339" in bad.json()["detail"]
    unknown = client.post(f"/v1/jobs/{job['id']}/retry", json={"deadlines": soon()})
    assert unknown.status_code == 422
    missing = client.post("/v1/jobs/00000000-0000-0000-0000-000000000000/retry")
    assert missing.status_code == 404
