"""Webhook delivery to a real receiver on loopback: signed, retried, stopped, guarded."""

import json
from collections import deque

import pytest
from standardwebhooks.webhooks import Webhook as Verifier

from shared.jobs.outcomes import record_outcomes
from shared.jobs.submit import Webhook, create_job
from shared.jobs.work import Outcome
from shared.models import DEFAULT_TENANT_ID
from shared.states import Task
from shared.webhooks import events as webhook_events
from tests.factories import claim
from tests.webhook_receiver import Receiver
from worker.webhooks.delivery import Dispatcher, WebhookSender


@pytest.fixture
def receiver():
    running = Receiver().start()
    yield running
    running.stop()


@pytest.fixture
def hook_settings(settings):
    return settings.model_copy(
        update={
            "webhook_allowed_networks": "127.0.0.0/8",
            "webhook_retry_schedule_s": "0,0,0,0",
            "webhook_timeout_s": 5.0,
        }
    )


def finished_job(db, url, events=("completed", "failed")):
    with db.write() as session:
        job = create_job(
            session,
            tenant_id=DEFAULT_TENANT_ID,
            task=Task.SENTIMENT,
            model="model-a",
            options={},
            texts=["a"],
            webhook=Webhook(url=url, events=list(events)),
        )
    held = claim(db)
    with db.write() as session:
        record_outcomes(
            session,
            claim_token=held.token,
            outcomes=[Outcome(held.items[0].id, result={"label": "POSITIVE"})],
        )
    return job


def deliver_all(db, settings, resolver=None, rounds=6):
    """Run the dispatcher with deliveries made in-process, until nothing is due."""
    sender = WebhookSender(settings=settings, db=db)
    if resolver is not None:
        sender.resolver = resolver
    dispatcher = Dispatcher(settings, db, publish=sender.deliver)
    for _ in range(rounds):
        if dispatcher.dispatch_once() == 0:
            break


def events(db, job):
    with db.read() as session:
        return webhook_events.list_events(session, job_id=job.id)


def test_a_finished_job_is_announced_signed_to_its_webhook(db, hook_settings, receiver):
    job = finished_job(db, receiver.url)
    deliver_all(db, hook_settings)
    [request] = receiver.received
    with db.read() as session:
        secret = webhook_events.secrets_in_use(session, DEFAULT_TENANT_ID)[0]
    payload = Verifier(secret).verify(request.body, request.headers)
    assert payload["type"] == "job.completed"
    assert payload["data"]["id"] == str(job.id)
    assert payload["data"]["status"] == "succeeded"
    assert payload["data"]["links"]["results"].endswith(f"/v1/jobs/{job.id}/results")
    [event] = events(db, job)
    assert (event.id, event.status) == (request.headers["webhook-id"], "delivered")
    assert [a.status_code for a in event.attempts] == [200]


def test_failures_are_retried_with_the_same_id_until_delivered(db, hook_settings, receiver):
    receiver.planned = deque([(500, {}), (503, {})])
    job = finished_job(db, receiver.url)
    deliver_all(db, hook_settings)
    ids = {r.headers["webhook-id"] for r in receiver.received}
    assert len(receiver.received) == 3 and len(ids) == 1
    [event] = events(db, job)
    assert event.status == "delivered"
    assert [a.status_code for a in event.attempts] == [500, 503, 200]
    assert event.attempts[0].error == "HTTP 500"


def test_an_event_fails_when_the_schedule_runs_out(db, hook_settings, receiver):
    receiver.planned = deque([(500, {})] * 10)
    job = finished_job(db, receiver.url)
    deliver_all(db, hook_settings, rounds=10)
    [event] = events(db, job)
    assert (event.status, len(event.attempts)) == ("failed", 4)


def test_a_redirect_is_a_failure_and_is_not_followed(db, hook_settings, receiver):
    receiver.planned = deque([(307, {"location": "http://127.0.0.1:9/elsewhere"})])
    job = finished_job(db, receiver.url)
    deliver_all(db, hook_settings, rounds=1)
    [event] = events(db, job)
    assert [a.status_code for a in event.attempts] == [307]
    assert event.status == "pending"
    assert len(receiver.received) == 1


def test_410_gone_stops_this_and_later_events_to_that_url(db, hook_settings, receiver):
    receiver.planned = deque([(410, {})])
    first = finished_job(db, receiver.url)
    deliver_all(db, hook_settings)
    second = finished_job(db, receiver.url)
    deliver_all(db, hook_settings)
    assert len(receiver.received) == 1
    assert events(db, first)[0].status == "disabled"
    assert events(db, second)[0].status == "disabled"


def test_retry_after_is_honoured_on_429(db, hook_settings, receiver):
    receiver.planned = deque([(429, {"retry-after": "3600"})])
    job = finished_job(db, receiver.url)
    deliver_all(db, hook_settings)
    [event] = events(db, job)
    assert event.status == "pending"
    wait_s = (event.next_attempt_at - event.attempts[0].attempted_at).total_seconds()
    assert 3500 < wait_s < 3700


def test_an_address_that_turned_inward_since_submit_is_not_sent_to(db, hook_settings, receiver):
    job = finished_job(db, "http://hooks.example:9/x")

    def now_private(host, port):
        return ["10.0.0.7"]  # never connected to: the guard refuses before any socket

    deliver_all(db, hook_settings, resolver=now_private, rounds=1)
    [event] = events(db, job)
    assert event.attempts[0].status_code is None
    assert "10.0.0.7, a private address" in event.attempts[0].error
    assert receiver.received == []


def test_progress_events_come_only_when_asked_for(db, hook_settings, receiver):
    with db.write() as session:
        create_job(
            session,
            tenant_id=DEFAULT_TENANT_ID,
            task=Task.SENTIMENT,
            model="model-a",
            options={},
            texts=[f"t{n}" for n in range(20)],
            webhook=Webhook(url=receiver.url, events=["progress", "completed"]),
        )
    held = claim(db)
    for item in held.items:
        with db.write() as session:
            record_outcomes(
                session, claim_token=held.token, outcomes=[Outcome(item.id, result={"label": "X"})]
            )
    deliver_all(db, hook_settings)
    types = [json.loads(r.body)["type"] for r in receiver.received]
    assert types.count("job.progress") == 9 and types[-1] == "job.completed"


def test_after_a_rotation_deliveries_verify_with_the_old_and_the_new_secret(
    db, hook_settings, receiver
):
    with db.write() as session:
        old = webhook_events.secrets_in_use(session, DEFAULT_TENANT_ID)[0]
        new = webhook_events.rotate_secret(session, DEFAULT_TENANT_ID, overlap_s=60).secret
    finished_job(db, receiver.url)
    deliver_all(db, hook_settings)
    [request] = receiver.received
    for secret in (old, new):
        assert Verifier(secret).verify(request.body, request.headers)["type"] == "job.completed"
