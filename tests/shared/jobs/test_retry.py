"""Retrying a job: its failed texts (or their failed chunks) run again as new attempts."""

import itertools
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from shared.errors import NothingToRetry
from shared.jobs.cancel import cancel_job
from shared.jobs.deadlines import expire_past_deadlines
from shared.jobs.outcomes import record_outcomes
from shared.jobs.retry import retry_job
from shared.jobs.work import NewChunk, Outcome
from shared.models import DEFAULT_TENANT_ID, Job, JobItem, WebhookEvent, utcnow
from shared.states import JobStatus, Task
from tests.factories import claim, make_job

POSITIVE = {"label": "POSITIVE", "score": 0.9, "scores": {"POSITIVE": 0.9, "NEGATIVE": 0.1}}


def run(db, task=Task.SENTIMENT, *, fail=lambda item: False, split=None):
    """Claim and record every pending item; `fail(item)` says which end in an error."""
    while (held := claim(db, task=task)) is not None:
        outcomes = []
        for item in held.items:
            if split is not None and (chunks := split(item)) is not None:
                outcomes.append(Outcome(item_id=item.id, chunks=chunks))
            elif fail(item):
                outcomes.append(Outcome(item_id=item.id, error="the model failed"))
            elif task is Task.SUMMARIZE:
                outcomes.append(Outcome(item_id=item.id, result={"summary_text": "short"}))
            else:
                outcomes.append(Outcome(item_id=item.id, result=POSITIVE))
        with db.write() as session:
            record_outcomes(session, claim_token=held.token, outcomes=outcomes)


def retry(db, job, **kwargs):
    with db.write() as session:
        return retry_job(session, tenant_id=DEFAULT_TENANT_ID, job_id=job.id, **kwargs)


def job_of(db, job_id):
    with db.read() as session:
        return session.get(Job, job_id)


def items_of(db, job_id):
    with db.read() as session:
        return session.scalars(
            select(JobItem).where(JobItem.job_id == job_id).order_by(JobItem.id)
        ).all()


def test_a_retry_runs_the_failed_texts_again_and_turns_a_partial_job_succeeded(db):
    job = make_job(db, texts=["fine", "poison", "fine too", "poison again"])
    with db.write() as session:
        session.execute(
            update(Job).where(Job.id == job.id).values(webhook_url="http://127.0.0.1:9/hook")
        )
    run(db, fail=lambda item: "poison" in item.text)
    assert job_of(db, job.id).status == JobStatus.PARTIAL
    retried = retry(db, job)
    assert (retried.status, retried.error_items, retried.done_items) == ("running", 0, 2)
    assert retried.finished_at is None
    items = items_of(db, job.id)
    assert [i.status for i in items] == ["done", "pending", "done", "pending"]
    assert [i.error for i in items] == [None] * 4
    assert [i.attempts for i in items] == [1, 1, 1, 1]  # kept: the next claim adds one
    run(db)
    ended = job_of(db, job.id)
    assert (ended.status, ended.done_items, ended.error_items) == ("succeeded", 4, 0)
    assert [i.attempts for i in items_of(db, job.id)] == [1, 2, 1, 2]
    with db.read() as session:
        events = session.scalars(
            select(WebhookEvent.type)
            .where(WebhookEvent.job_id == job.id)
            .order_by(WebhookEvent.created_at)
        ).all()
    # Each end is announced: the partial one, then the one after the retry.
    assert events == ["job.completed", "job.completed"]


def test_a_retried_deadline_expired_job_takes_a_new_deadline(db):
    job = make_job(db, texts=["a", "b"])
    with db.write() as session:
        session.execute(
            update(Job).where(Job.id == job.id).values(deadline=utcnow() - timedelta(seconds=1))
        )
        expire_past_deadlines(session, clock=utcnow())
    assert job_of(db, job.id).status == JobStatus.FAILED
    with pytest.raises(NothingToRetry, match="deadline passed"):
        retry(db, job)
    later = utcnow() + timedelta(hours=1)
    assert retry(db, job, deadline=later).deadline == later
    run(db)
    assert job_of(db, job.id).status == JobStatus.SUCCEEDED
    assert {i.error for i in items_of(db, job.id)} == {None}


def test_a_long_text_retries_only_its_failed_chunks(db):
    document = "One sentence. " * 40
    job = make_job(db, texts=[document], task=Task.SUMMARIZE)
    size = len(document) // 3
    bounds = [0, size, 2 * size, len(document)]
    chunks = [NewChunk(a, b, (b - a) // 4, document[a:b]) for a, b in itertools.pairwise(bounds)]
    run(
        db,
        Task.SUMMARIZE,
        fail=lambda item: item.parent_id is not None and item.index == 1,
        split=lambda item: chunks if item.parent_id is None and item.level == 0 else None,
    )
    failed = job_of(db, job.id)
    assert (failed.status, failed.done_parts, failed.total_parts) == ("failed", 3, 3)
    retry(db, job)
    text, *parts = items_of(db, job.id)
    assert (text.status, text.open_parts, text.error) == ("waiting", 1, None)
    assert [p.status for p in parts] == ["done", "pending", "done"]
    assert job_of(db, job.id).done_parts == 2
    run(db, Task.SUMMARIZE)
    ended = job_of(db, job.id)
    assert (ended.status, ended.done_parts, ended.total_parts) == ("succeeded", 3, 3)
    text = items_of(db, job.id)[0]
    assert (text.status, text.level, text.result) == ("done", 1, {"summary_text": "short"})


@pytest.mark.parametrize(
    ("state", "words"),
    [
        ("queued", "has not finished yet"),
        ("succeeded", "nothing to retry"),
        ("cancelled", "was cancelled"),
    ],
)
def test_only_a_partial_or_failed_job_is_retried(db, state, words):
    job = make_job(db, texts=["a"])
    if state == "succeeded":
        run(db)
    if state == "cancelled":
        with db.write() as session:
            cancel_job(session, tenant_id=DEFAULT_TENANT_ID, job_id=job.id)
    with pytest.raises(NothingToRetry, match=words) as refused:
        retry(db, job)
    assert refused.value.extra["job_status"] == state
    assert "Only a partial or failed job can be retried" in refused.value.detail
    assert job_of(db, job.id).status == state


def test_a_job_with_insights_is_not_retried(db):
    job = make_job(db, texts=["a"], options={"insights": True})
    with db.write() as session:
        session.execute(update(Job).where(Job.id == job.id).values(status="partial"))
    with pytest.raises(NothingToRetry, match="has insights"):
        retry(db, job)


def refuse_as_input(db, job, text):
    """Mark a job's item as a row refused at ingest would be: failed, never claimed."""
    with db.write() as session:
        session.execute(
            update(JobItem)
            .where(JobItem.job_id == job.id, JobItem.input_text == text)
            .values(status="error", error="row 3: the text is blank", finished_at=utcnow())
        )
        session.execute(update(Job).where(Job.id == job.id).values(error_items=Job.error_items + 1))


def test_rows_refused_as_input_are_not_run_again_only_the_texts_that_failed(db):
    job = make_job(db, texts=["fine", "blank row", "poison"])
    refuse_as_input(db, job, "blank row")
    run(db, fail=lambda item: "poison" in item.text)
    assert job_of(db, job.id).status == JobStatus.PARTIAL
    retry(db, job)
    by_text = {item.input_text: item for item in items_of(db, job.id)}
    assert by_text["blank row"].status == "error"
    assert by_text["poison"].status == "pending"
    run(db)
    again = job_of(db, job.id)
    assert (again.status, again.done_items, again.error_items) == (JobStatus.PARTIAL, 2, 1)


def test_a_job_whose_only_failures_are_refused_rows_has_nothing_to_retry(db):
    job = make_job(db, texts=["fine", "blank row"])
    refuse_as_input(db, job, "blank row")
    run(db)
    assert job_of(db, job.id).status == JobStatus.PARTIAL
    with pytest.raises(NothingToRetry, match="refused as input"):
        retry(db, job)
    assert job_of(db, job.id).status == JobStatus.PARTIAL


def test_a_retry_sends_the_results_to_the_output_url_again_when_the_job_ends_anew(db):
    from shared.jobs import output_delivery

    job = make_job(db, texts=["fine", "poison"])
    with db.write() as session:
        output_delivery.add_output_delivery(
            session, session.get(Job, job.id), url="http://127.0.0.1:9/out?sig=x", gzip=False
        )
    run(db, fail=lambda item: "poison" in item.text)
    with db.write() as session:
        output_delivery.record_attempt(session, job_id=job.id, outcome="delivered", error=None)
    retry(db, job)
    with db.write() as session:
        assert output_delivery.claim_due_deliveries(session, limit=5, lease_s=60) == []
    shown = job_of(db, job.id).output
    assert (shown["status"], shown["attempts"], shown["delivered_at"]) == ("pending", 0, None)
    run(db)
    with db.write() as session:
        assert output_delivery.claim_due_deliveries(session, limit=5, lease_s=60) == [job.id]
