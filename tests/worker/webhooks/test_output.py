"""Output delivery to a real receiver on loopback: the results PUT, retried, announced, guarded."""

import gzip
import json
from collections import deque

import pytest

from shared.jobs.cancel import delete_job
from shared.jobs.outcomes import record_outcomes
from shared.jobs.output_delivery import add_output_delivery
from shared.jobs.submit import Webhook, create_job
from shared.jobs.work import Outcome
from shared.models import DEFAULT_TENANT_ID, Job, OutputDelivery
from shared.states import Task
from shared.webhooks import events as webhook_events
from tests.factories import claim
from worker.webhooks.delivery import Dispatcher, WebhookSender
from worker.webhooks.output import OutputSender

SIGNED = "/out/results.jsonl?X-Amz-Signature=abc%2Fdef&X-Amz-Expires=900"


@pytest.fixture
def out_settings(settings):
    return settings.model_copy(
        update={
            "webhook_allowed_networks": "127.0.0.0/8",
            "webhook_retry_schedule_s": "0,0,0",
            "webhook_timeout_s": 5.0,
        }
    )


def job_with_output(db, url, *, gzip_body=False, webhook=None, finish=True):
    """Add a two-text sentiment job with an output_url; finish it unless told not to."""
    with db.write() as session:
        job = create_job(
            session,
            tenant_id=DEFAULT_TENANT_ID,
            task=Task.SENTIMENT,
            model="model-a",
            options={},
            texts=["good", "bad"],
            custom_ids=["a", "b"],
            webhook=webhook,
        )
        add_output_delivery(session, job, url=url, gzip=gzip_body)
    if finish:
        held = claim(db)
        with db.write() as session:
            record_outcomes(
                session,
                claim_token=held.token,
                outcomes=[
                    Outcome(held.items[0].id, result={"label": "POSITIVE", "score": 0.9}),
                    Outcome(held.items[1].id, error="the model failed on this text"),
                ],
            )
    return job.id


def dispatch(db, settings, rounds=6, resolver=None):
    """Run the dispatcher with deliveries made in-process, until nothing is due."""
    webhook_sender = WebhookSender(settings=settings, db=db)
    output_sender = OutputSender(settings=settings, db=db)
    if resolver is not None:
        output_sender.resolver = resolver
    dispatcher = Dispatcher(
        settings, db, publish=webhook_sender.deliver, publish_output=output_sender.deliver
    )
    try:
        for _ in range(rounds):
            if dispatcher.dispatch_once() == 0:
                break
    finally:
        output_sender.close()


def output_of(db, job_id):
    with db.read() as session:
        return session.get(Job, job_id).output


def test_an_ended_job_s_results_are_put_as_jsonl_gzip_with_the_url_verbatim(
    db, out_settings, files
):
    job_id = job_with_output(db, files.url(SIGNED), gzip_body=True)
    dispatch(db, out_settings)
    [put] = files.puts
    assert put.path == SIGNED, "a presigned URL's query is sent as given"
    assert "authorization" not in put.headers
    assert put.headers["content-length"] == str(len(put.body))
    lines = [json.loads(line) for line in gzip.decompress(put.body).decode().splitlines()]
    assert [(r["index"], r["custom_id"], r["label"], r["error"]) for r in lines] == [
        (0, "a", "POSITIVE", None),
        (1, "b", None, "the model failed on this text"),
    ]
    shown = output_of(db, job_id)
    assert shown["status"] == "delivered" and shown["attempts"] == 1
    assert shown["url_host"] == f"127.0.0.1:{files.server.server_address[1]}"
    assert shown["delivered_at"] is not None
    assert "Signature" not in json.dumps(shown)


def test_a_failed_put_is_retried_then_delivered_and_the_webhook_is_told(
    db, out_settings, files, hooks
):
    files.planned_puts = deque([503])
    webhook = Webhook(url=hooks.url, events=["completed"])
    job_id = job_with_output(db, files.url("/out/r.jsonl"), webhook=webhook)
    dispatch(db, out_settings)
    assert len(files.puts) == 2
    assert files.puts[0].body == files.puts[1].body
    shown = output_of(db, job_id)
    assert (shown["status"], shown["attempts"]) == ("delivered", 2)
    types = [json.loads(r.body)["type"] for r in hooks.received]
    assert sorted(types) == ["job.completed", "output.delivered"]
    told = next(json.loads(r.body) for r in hooks.received if b"output.delivered" in r.body)
    assert told["data"]["output"]["status"] == "delivered"


def test_retries_used_up_end_failed_with_the_last_error_and_an_output_failed_event(
    db, out_settings, files, hooks
):
    files.planned_puts = deque([500, 500, 500])
    job_id = job_with_output(db, files.url("/out/r.jsonl"), webhook=Webhook(hooks.url, []))
    dispatch(db, out_settings)
    shown = output_of(db, job_id)
    assert (shown["status"], shown["attempts"], shown["last_error"]) == ("failed", 3, "HTTP 500")
    types = [json.loads(r.body)["type"] for r in hooks.received]
    assert [t for t in types if t.startswith("output.")] == ["output.failed"]


def test_nothing_is_sent_before_the_job_ends(db, out_settings, files):
    job_id = job_with_output(db, files.url("/out/r.jsonl"), finish=False)
    dispatch(db, out_settings)
    assert files.puts == []
    assert output_of(db, job_id)["status"] == "pending"


def test_the_address_is_checked_again_and_pinned_at_send(db, out_settings, files):
    # The host resolved to an allowed address at submit; now it resolves elsewhere.
    # (Keys required: the embedded default would open all of loopback.)
    allowed_one = out_settings.model_copy(
        update={"webhook_allowed_networks": "127.0.0.2/32", "auth": "required"}
    )
    port = files.server.server_address[1]
    job_id = job_with_output(db, f"http://files.test:{port}/out/r.jsonl")
    dispatch(db, allowed_one, rounds=1, resolver=lambda host, port: ["127.0.0.3"])
    assert files.puts == []
    shown = output_of(db, job_id)
    assert "127.0.0.3" in shown["last_error"] and "output_url" in shown["last_error"]
    # Resolved to the server's address, the PUT goes there, named by its host.
    with db.write() as session:
        session.get(OutputDelivery, job_id).next_attempt_at = None
    dispatch(db, out_settings, resolver=lambda host, port: ["127.0.0.1"])
    [put] = files.puts
    assert put.headers["host"] == f"files.test:{port}"
    assert output_of(db, job_id)["status"] == "delivered"


def test_the_job_shows_its_delivery_and_never_the_url(db, out_settings, files):
    job_id = job_with_output(db, files.url(SIGNED), finish=False)
    with db.read() as session:
        from shared.jobs.presenting import present_job

        shown = present_job(session.get(Job, job_id), "http://x").model_dump(mode="json")
    assert shown["output"]["status"] == "pending"
    assert "X-Amz-Signature" not in json.dumps(shown)
    with db.read() as session:
        assert webhook_events.list_events(session, job_id=job_id) == []


def test_deleting_a_job_deletes_its_delivery_and_nothing_is_sent(db, out_settings, files):
    job_id = job_with_output(db, files.url("/out/r.jsonl"))
    with db.write() as session:
        delete_job(session, tenant_id=DEFAULT_TENANT_ID, job_id=job_id)
    with db.read() as session:
        assert session.get(OutputDelivery, job_id) is None
    dispatch(db, out_settings)
    assert files.puts == []
