"""Insights of a sentiment job: counted as texts finish, negatives summarized by a child job."""

import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import pytest
from sqlalchemy import func, select, update

from shared.jobs.after_commit import use_doorbell
from shared.jobs.cancel import cancel_job, delete_job
from shared.jobs.feedback import negative_feedback
from shared.jobs.insights import Summarizer
from shared.jobs.outcomes import record_outcomes
from shared.jobs.reads import get_job, list_jobs
from shared.jobs.retention import mark_expired
from shared.jobs.submit import Webhook, count_active_jobs, create_job
from shared.jobs.work import Outcome
from shared.models import DEFAULT_TENANT_ID, Job, JobItem
from shared.states import ItemStatus, JobStatus, Task
from shared.webhooks import events as webhook_events
from tests.factories import claim, make_job
from tests.lock_waits import wait_for_lock_waits

CATEGORIES = ["billing", "shipping", "quality"]
SUMMARY_MODEL = "summary-model"


def feedback_job(db, texts, *, max_chars=20_000, webhook=None, categories=CATEGORIES):
    options = {"insights": True} | ({"categories": categories} if categories else {})
    with db.write() as session:
        return create_job(
            session,
            tenant_id=DEFAULT_TENANT_ID,
            task=Task.SENTIMENT,
            model="model-a",
            options=options,
            texts=texts,
            webhook=webhook,
            summarizer=Summarizer(model=SUMMARY_MODEL, max_chars=max_chars),
        )


def labelled(label, score, category=None):
    other = "POSITIVE" if label == "NEGATIVE" else "NEGATIVE"
    found = {"label": label, "score": score, "scores": {label: score, other: 1 - score}}
    return found | ({"category": category, "category_score": 0.4} if category else {})


class RecordingDoorbell:
    """Notes the tasks whose doorbell a commit rang."""

    def __init__(self):
        self.rung = []

    def ring(self, task, *, model_name=None, job_id=None):
        self.rung.append(task)
        return True


def record(db, claimed, outcomes):
    """Record outcomes; return the tasks whose workers the commit asked to wake."""
    doorbell = RecordingDoorbell()
    with db.write() as session:
        use_doorbell(session.info, doorbell)
        record_outcomes(session, claim_token=claimed.token, outcomes=outcomes)
    return sorted(doorbell.rung)


def job_of(db, job_id):
    with db.read() as session:
        return session.get(Job, uuid.UUID(str(job_id)))


def items_of(db, job_id):
    with db.read() as session:
        return session.scalars(
            select(JobItem).where(JobItem.job_id == uuid.UUID(str(job_id))).order_by(JobItem.idx)
        ).all()


def summarizing_job(db, **kwargs):
    """A job whose texts all finished, two categories with negatives, its summaries pending."""
    job = feedback_job(db, ["charged twice", "late parcel", "love it", "overbilled"], **kwargs)
    held = claim(db)
    results = [
        labelled("NEGATIVE", 0.7, "billing"),
        labelled("NEGATIVE", 0.9, "shipping"),
        labelled("POSITIVE", 0.9, "quality"),
        labelled("NEGATIVE", 0.95, "billing"),
    ]
    record(db, held, [Outcome(i.id, result=r) for i, r in zip(held.items, results, strict=True)])
    return job


def test_counts_grow_as_texts_finish_then_a_child_job_summarizes_the_negatives(db):
    hook = Webhook(url="http://127.0.0.1:9/hook", events=["completed", "failed"])
    job = feedback_job(
        db, ["charged twice", "late parcel", "love it", "overbilled", "bad row"], webhook=hook
    )
    held = claim(db)
    first, late, love, overbilled, bad = held.items
    assert record(db, held, [Outcome(first.id, result=labelled("NEGATIVE", 0.7, "billing"))]) == []
    state = job_of(db, job.id).insights
    assert state["status"] == "counting"
    assert state["counts"] == {"billing": {"NEGATIVE": 1}, "shipping": {}, "quality": {}}

    woken = record(
        db,
        held,
        [
            Outcome(late.id, result=labelled("NEGATIVE", 0.9, "shipping")),
            Outcome(love.id, result=labelled("POSITIVE", 0.9, "quality")),
            Outcome(overbilled.id, result=labelled("NEGATIVE", 0.95, "billing")),
            Outcome(bad.id, error="the model failed"),
        ],
    )
    assert woken == [Task.SUMMARIZE]
    parent = job_of(db, job.id)
    assert parent.status == JobStatus.RUNNING and parent.finished_at is None
    state = parent.insights
    assert state["status"] == "summarizing"
    assert state["counts"] == {
        "billing": {"NEGATIVE": 2},
        "shipping": {"NEGATIVE": 1},
        "quality": {"POSITIVE": 1},
    }
    assert state["negative"]["billing"] == {"count": 2, "summary": None, "error": None}
    child = job_of(db, state["summary_job_id"])
    assert (child.task, child.model, child.parent_job_id) == ("summarize", SUMMARY_MODEL, job.id)
    assert child.webhook_url is None
    inputs = {i.custom_id: i.input_text for i in items_of(db, child.id)}
    assert inputs == {"billing": "overbilled\ncharged twice", "shipping": "late parcel"}

    with db.read() as session:
        listed = list_jobs(session, tenant_id=DEFAULT_TENANT_ID, limit=10)
        assert [j.id for j in listed] == [job.id]
        assert count_active_jobs(session, tenant_id=DEFAULT_TENANT_ID) == 1
        assert get_job(session, tenant_id=DEFAULT_TENANT_ID, job_id=child.id)
        assert webhook_events.list_events(session, job_id=job.id) == []

    summaries = claim(db, task=Task.SUMMARIZE, model=SUMMARY_MODEL)
    record(
        db,
        summaries,
        [Outcome(i.id, result={"summary_text": f"about {i.text[:4]}"}) for i in summaries.items],
    )
    parent, child = job_of(db, job.id), job_of(db, child.id)
    assert child.status == JobStatus.SUCCEEDED
    assert parent.status == JobStatus.PARTIAL and parent.finished_at is not None
    assert parent.insights["status"] == "done"
    assert parent.insights["negative"] == {
        "billing": {"count": 2, "summary": "about over", "error": None},
        "shipping": {"count": 1, "summary": "about late", "error": None},
        "quality": {"count": 0, "summary": None, "error": None},
    }
    with db.read() as session:
        kinds = [e.type for e in webhook_events.list_events(session, job_id=job.id)]
    assert kinds == ["job.completed"]


def test_a_job_without_negative_feedback_finishes_at_once(db):
    job = feedback_job(db, ["love it", "great"], categories=None)
    held = claim(db)
    woken = record(db, held, [Outcome(i.id, result=labelled("POSITIVE", 0.9)) for i in held.items])
    assert woken == []
    finished = job_of(db, job.id)
    assert finished.status == JobStatus.SUCCEEDED
    assert finished.insights["status"] == "done"
    assert finished.insights["counts"] == {"all": {"POSITIVE": 2}}
    assert finished.insights["negative"] == {"all": {"count": 0, "summary": None, "error": None}}
    assert finished.insights["summary_job_id"] is None
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 1


def test_negative_feedback_is_read_most_negative_first_up_to_the_limit(db):
    texts = ["meh", "awful", "bad", "fine", "worst ever"]
    job = feedback_job(db, texts, max_chars=12, categories=None)
    held = claim(db)
    scores = [0.6, 0.95, 0.8, 0.9, 0.99]
    labels = ["NEGATIVE", "NEGATIVE", "NEGATIVE", "POSITIVE", "NEGATIVE"]
    with db.write() as session:
        record_outcomes(
            session,
            claim_token=held.token,
            outcomes=[
                Outcome(i.id, result=labelled(label, score))
                for i, label, score in zip(held.items, labels, scores, strict=True)
            ],
        )
        # Read as the transaction that finished the job did.
        assert negative_feedback(session, job.id, max_chars=12) == {"all": "worst ever\na"}
        assert negative_feedback(session, job.id, max_chars=100) == {
            "all": "worst ever\nawful\nbad\nmeh"
        }
    [summary] = items_of(db, job_of(db, job.id).insights["summary_job_id"])
    assert summary.input_text == "worst ever\na"


def test_cancelling_the_job_cancels_its_summaries(db):
    job = summarizing_job(db)
    child_id = uuid.UUID(job_of(db, job.id).insights["summary_job_id"])
    with db.write() as session:
        cancel_job(session, tenant_id=DEFAULT_TENANT_ID, job_id=job.id)
    parent, child = job_of(db, job.id), job_of(db, child_id)
    assert (parent.status, child.status) == (JobStatus.CANCELLED, JobStatus.CANCELLED)
    assert {i.status for i in items_of(db, child_id)} == {ItemStatus.CANCELLED}
    assert parent.insights["status"] == "done"
    assert parent.insights["negative"]["billing"] == {
        "count": 2,
        "summary": None,
        "error": "cancelled before it ran",
    }
    assert claim(db, task=Task.SUMMARIZE, model=SUMMARY_MODEL) is None


def test_a_job_cancelled_while_counting_keeps_what_it_counted(db):
    job = feedback_job(db, ["charged twice", "late"])
    held = claim(db)
    record(db, held, [Outcome(held.items[0].id, result=labelled("NEGATIVE", 0.9, "billing"))])
    with db.write() as session:
        cancel_job(session, tenant_id=DEFAULT_TENANT_ID, job_id=job.id)
    state = job_of(db, job.id).insights
    assert state["status"] == "done" and state["summary_job_id"] is None
    assert state["negative"]["billing"]["error"] == "cancelled before it was summarized"


def test_cancelling_the_summary_job_finishes_its_parent(db):
    job = summarizing_job(db)
    child_id = uuid.UUID(job_of(db, job.id).insights["summary_job_id"])
    with db.write() as session:
        cancel_job(session, tenant_id=DEFAULT_TENANT_ID, job_id=child_id)
    parent = job_of(db, job.id)
    assert parent.status == JobStatus.SUCCEEDED
    assert parent.insights["status"] == "done"
    assert parent.insights["negative"]["shipping"]["error"] == "cancelled before it ran"


@pytest.mark.parametrize("which", ["parent", "child"])
def test_deleting_either_job_leaves_nothing_waiting(db, which):
    job = summarizing_job(db)
    child_id = uuid.UUID(job_of(db, job.id).insights["summary_job_id"])
    deleted = job.id if which == "parent" else child_id
    with db.write() as session:
        delete_job(session, tenant_id=DEFAULT_TENANT_ID, job_id=deleted)
    assert job_of(db, child_id) is None
    assert items_of(db, child_id) == []
    if which == "child":
        assert job_of(db, job.id).status == JobStatus.SUCCEEDED


def test_an_expired_job_keeps_its_counts_but_not_its_summaries(db):
    job = summarizing_job(db)
    summaries = claim(db, task=Task.SUMMARIZE, model=SUMMARY_MODEL)
    record(db, summaries, [Outcome(i.id, result={"summary_text": "s"}) for i in summaries.items])
    with db.write() as session:
        mark_expired(session, job.id)
    state = job_of(db, job.id).insights
    assert state["counts"]["billing"] == {"NEGATIVE": 2}
    assert state["negative"]["billing"] == {"count": 2, "summary": None, "error": None}


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_a_cancel_leaves_a_summary_job_made_meanwhile_to_its_own_finish(db):
    """A cancel waiting for the job's row while its summary job is made and starts
    finishing must not then wait for that child: the finish waits for the parent."""
    job = feedback_job(db, ["charged twice"])
    with ExitStack() as held:
        # A lock that still lets another transaction make a child job referring to it.
        parent_lock = held.enter_context(db.write())
        parent_lock.execute(select(Job.id).where(Job.id == job.id).with_for_update(key_share=True))
        with ThreadPoolExecutor(1) as pool:
            cancelled = pool.submit(cancel_in_own_transaction, db, job.id)
            wait_for_lock_waits(db)
            child = make_job(db, texts=["charged twice"], task=Task.SUMMARIZE)
            with db.write() as session:
                session.execute(update(Job).where(Job.id == child.id).values(parent_job_id=job.id))
            finishing_child = held.enter_context(db.write())
            finishing_child.execute(select(Job.id).where(Job.id == child.id).with_for_update())
            parent_lock.commit()
            assert cancelled.result(timeout=30).status == JobStatus.CANCELLED
        # The finish then goes on to the parent, free at once, and finds it ended.
        finishing_child.execute(select(Job.id).where(Job.id == job.id).with_for_update())
    assert job_of(db, job.id).status == JobStatus.CANCELLED
    assert job_of(db, child.id).status == JobStatus.QUEUED


def cancel_in_own_transaction(db, job_id):
    with db.write() as session:
        return cancel_job(session, tenant_id=DEFAULT_TENANT_ID, job_id=job_id)
