"""Job control over HTTP through real processes: cancelling, idempotent submits, webhooks."""

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import httpx
import pytest
from standardwebhooks.webhooks import Webhook as Verifier

from tests.e2e.polling import all_results
from tests.e2e.processes import free_port
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.e2e


def test_a_running_job_is_cancelled_and_keeps_what_was_computed(http):
    texts = [
        f"Report number {n}. Sales rose in the north and fell in the south." for n in range(400)
    ]
    job = http.post("/v1/jobs", json={"task": "summarize", "input": {"texts": texts}}).json()
    deadline = time.monotonic() + 60
    while http.get(f"/v1/jobs/{job['id']}").json()["progress"]["done"] == 0:
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)

    cancelled = http.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    skipped_at_cancel = {
        r["index"]
        for r in all_results(http, job["id"])
        if r.get("error") == "cancelled before it ran"
    }
    assert skipped_at_cancel

    # The batch that was running finishes, however long a busy machine takes over it: then
    # every text is summarized or skipped, and nothing moves any more.
    deadline = time.monotonic() + 60
    while True:
        results = all_results(http, job["id"])
        summaries = [r for r in results if "summary_text" in r]
        skipped = [r for r in results if r.get("error") == "cancelled before it ran"]
        if len(summaries) + len(skipped) == 400:
            break
        assert time.monotonic() < deadline, "the running batch never finished"
        time.sleep(0.2)
    settled = http.get(f"/v1/jobs/{job['id']}").json()
    time.sleep(2)
    assert http.get(f"/v1/jobs/{job['id']}").json() == settled
    assert all_results(http, job["id"]) == results
    # Only the texts running at the cancel were finished: none of those it skipped ran.
    assert skipped_at_cancel <= {r["index"] for r in skipped}
    assert settled["status"] == "cancelled"
    done = settled["progress"]["done"]
    assert 0 < done < 400
    assert len(summaries) == done
    assert http.post(f"/v1/jobs/{job['id']}/cancel").status_code == 409


def test_a_document_cancelled_as_it_is_split_still_ends_with_its_text(http):
    """Cancels land before, during and after the worker splits the document into chunks:
    whichever, the text ends (summarized or cancelled) and no chunk is left to wait."""
    document = " ".join(
        f"Paragraph {n} says that sales rose again in the north." for n in range(400)
    )
    for attempt in range(12):
        job = http.post(
            "/v1/jobs?task=summarize",
            content=document.encode(),
            headers={"content-type": "text/plain"},
        ).json()
        time.sleep(attempt * 0.01)
        cancelled = http.post(f"/v1/jobs/{job['id']}/cancel")
        assert cancelled.status_code in (200, 409), cancelled.text
        deadline = time.monotonic() + 30
        while not (results := all_results(http, job["id"])):
            assert time.monotonic() < deadline, f"try {attempt}: the text never ended"
            time.sleep(0.1)
        assert len(results) == 1
        assert "summary_text" in results[0] or results[0].get("error", "").startswith("cancelled")


def test_twenty_identical_retries_at_once_make_one_job(service):
    body = {"task": "sentiment", "input": {"texts": ["retried at once"]}}
    barrier = threading.Barrier(20)

    def submit(_: int) -> httpx.Response:
        with httpx.Client(base_url=service.base_url, timeout=30, headers=service.headers) as client:
            barrier.wait()
            return client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "burst-1"})

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(submit, range(20)))
    assert sorted(r.status_code for r in responses) == [200] * 19 + [202]
    assert len({r.json()["id"] for r in responses}) == 1


def wait_for_events(http, job_id, predicate, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events = http.get(f"/v1/jobs/{job_id}/webhooks").json()
        if events and predicate(events):
            return events
        time.sleep(0.2)
    raise AssertionError(f"webhook events of {job_id} not as expected: {events}")


def test_a_job_webhook_is_delivered_signed_and_can_be_redelivered(http):
    receiver = Receiver().start()
    try:
        body = {"task": "sentiment", "input": {"texts": ["great"]}, "webhook_url": receiver.url}
        job = http.post("/v1/jobs", json=body).json()
        events = wait_for_events(http, job["id"], lambda e: e[0]["status"] == "delivered")
        secret = http.get("/v1/webhooks/secret").json()["secret"]
        [request] = receiver.received
        payload = Verifier(secret).verify(request.body, request.headers)
        assert (payload["type"], payload["data"]["status"]) == ("job.completed", "succeeded")
        assert request.headers["webhook-id"] == events[0]["id"]

        assert http.post(f"/v1/jobs/{job['id']}/webhooks/redeliver").json() == {"redelivered": 1}
        wait_for_events(http, job["id"], lambda e: len(e[0]["attempts"]) == 2)
        assert [r.headers["webhook-id"] for r in receiver.received] == [events[0]["id"]] * 2
    finally:
        receiver.stop()


def test_a_receiver_that_is_down_at_first_gets_the_event_when_it_comes_up(http):
    port = free_port()
    url = f"http://127.0.0.1:{port}/hooks/textq"
    body = {"task": "sentiment", "input": {"texts": ["fine"]}, "webhook_url": url}
    job = http.post("/v1/jobs", json=body).json()
    wait_for_events(http, job["id"], lambda e: len(e[0]["attempts"]) >= 2)
    receiver = Receiver(port=port).start()
    try:
        events = wait_for_events(http, job["id"], lambda e: e[0]["status"] == "delivered")
        attempts = events[0]["attempts"]
        assert attempts[0]["status_code"] is None and "Connect" in attempts[0]["error"]
        assert attempts[-1]["status_code"] == 200
        assert len(receiver.received) == 1
    finally:
        receiver.stop()


# Of the bulk job's own task, or of the other: one worker serves both on one device.
@pytest.mark.parametrize("urgent_task", ["sentiment", "summarize"])
def test_urgent_work_overtakes_a_running_bulk_job(http, urgent_task):
    bulk_texts = [f"Row {n}: the parcel came late but the support was kind." for n in range(10000)]
    bulk = http.post(
        "/v1/jobs", json={"task": "sentiment", "input": {"texts": bulk_texts}, "priority": 1}
    ).json()
    deadline = time.monotonic() + 60
    while http.get(f"/v1/jobs/{bulk['id']}").json()["progress"]["done"] == 0:
        assert time.monotonic() < deadline, "the bulk job never started"
        time.sleep(0.02)
    urgent = http.post(
        "/v1/jobs", json={"task": urgent_task, "input": {"text": "help!"}, "priority": 9}
    ).json()
    finished = http.get(f"/v1/jobs/{urgent['id']}", params={"wait_s": 30}).json()
    assert finished["status"] == "succeeded"
    # Well within a drain's slice (20 s), which the other task's work once waited out.
    waited = datetime.fromisoformat(finished["finished_at"]) - datetime.fromisoformat(
        finished["created_at"]
    )
    assert waited.total_seconds() < 10, finished
    # Cancelling a finished bulk job is a 409; either way it must not have finished first.
    http.post(f"/v1/jobs/{bulk['id']}/cancel")
    bulk_now = http.get(f"/v1/jobs/{bulk['id']}").json()
    assert bulk_now["finished_at"] > finished["finished_at"], (bulk_now, finished)


def test_a_job_past_retention_expires_and_a_deleted_one_is_gone(http, service):
    from sqlalchemy import update

    from shared.db import Database
    from shared.models import Job, utcnow

    job = http.post("/v1/jobs", json={"task": "sentiment", "input": {"text": "old news"}}).json()
    assert http.get(f"/v1/jobs/{job['id']}", params={"wait_s": 30}).json()["status"] == "succeeded"
    url = service.env.get("TEXTQ_DATABASE_URL") or (
        f"sqlite:///{service.env['TEXTQ_DATA_DIR']}/textq.db"
    )
    db = Database(url, application_name="textq-tests")
    with db.write() as session:
        session.execute(
            update(Job)
            .where(Job.id == uuid.UUID(job["id"]))
            .values(finished_at=utcnow().replace(year=2020))
        )
    db.dispose()
    deadline = time.monotonic() + 30
    while http.get(f"/v1/jobs/{job['id']}").json()["status"] != "expired":
        assert time.monotonic() < deadline, "the sweeper never purged the job"
        time.sleep(0.2)
    assert http.get(f"/v1/jobs/{job['id']}/results").status_code == 410
    assert http.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert http.get(f"/v1/jobs/{job['id']}").status_code == 404
