"""Cancelling a job: nothing not started starts, a running batch's results are kept."""

import pytest
from sqlalchemy import select

from shared.errors import JobAlreadyFinished
from shared.jobs.cancel import cancel_job
from shared.jobs.claims import expire_leases, release_claim
from shared.jobs.outcomes import record_outcomes
from shared.jobs.reads import list_item_outcomes
from shared.jobs.work import NewChunk, Outcome
from shared.models import DEFAULT_TENANT_ID, Job, JobItem
from shared.states import ItemStatus, JobStatus
from tests.factories import claim, make_job


def cancel(db, job_id):
    with db.write() as session:
        return cancel_job(session, tenant_id=DEFAULT_TENANT_ID, job_id=job_id)


def statuses(db, job_id):
    with db.read() as session:
        return session.scalars(
            select(JobItem.status).where(JobItem.job_id == job_id).order_by(JobItem.id)
        ).all()


def test_a_queued_job_is_cancelled_with_all_its_items(db):
    job = make_job(db, texts=["a", "b"])
    assert cancel(db, job.id).status == JobStatus.CANCELLED
    assert statuses(db, job.id) == ["cancelled", "cancelled"]
    assert claim(db) is None


def test_a_finished_job_cannot_be_cancelled(db):
    job = make_job(db, texts=["a"])
    held = claim(db)
    with db.write() as session:
        record_outcomes(
            session, claim_token=held.token, outcomes=[Outcome(held.items[0].id, result={})]
        )
    with pytest.raises(JobAlreadyFinished, match="already finished as succeeded"):
        cancel(db, job.id)


def test_running_items_keep_their_results_and_the_rest_is_not_handed_back(db):
    job = make_job(db, texts=["a", "b", "c"])
    held = claim(db)
    cancel(db, job.id)
    with db.write() as session:
        stored = record_outcomes(
            session,
            claim_token=held.token,
            outcomes=[Outcome(held.items[0].id, result={"label": "POSITIVE"})],
        )
        release_claim(session, claim_token=held.token)
    assert stored == 1
    assert statuses(db, job.id) == ["done", "cancelled", "cancelled"]
    with db.read() as session:
        finished = session.get(Job, job.id)
    assert (finished.status, finished.done_items) == (JobStatus.CANCELLED, 1)


def test_a_waiting_long_text_and_its_chunks_are_cancelled(db):
    job = make_job(db, texts=["x" * 100])
    held = claim(db)
    parts = [NewChunk(0, 50, 12, "x" * 50), NewChunk(50, 100, 12, "x" * 50)]
    with db.write() as session:
        record_outcomes(
            session, claim_token=held.token, outcomes=[Outcome(held.items[0].id, chunks=parts)]
        )
    cancel(db, job.id)
    assert statuses(db, job.id) == ["cancelled"] * 3


def test_a_text_split_after_its_job_was_cancelled_ends_cancelled_with_its_chunks(db):
    """The cancel skipped the text its worker was splitting; the worker's record ends it."""
    job = make_job(db, texts=["x" * 100, "y"])
    held = claim(db)
    cancel(db, job.id)
    parts = [NewChunk(0, 50, 12, "x" * 50), NewChunk(50, 100, 12, "x" * 50)]
    with db.write() as session:
        stored = record_outcomes(
            session,
            claim_token=held.token,
            outcomes=[
                Outcome(held.items[0].id, chunks=parts),
                Outcome(held.items[1].id, result={"label": "POSITIVE"}),
            ],
        )
        release_claim(session, claim_token=held.token)
    assert stored == 2
    assert statuses(db, job.id) == ["cancelled", "done", "cancelled", "cancelled"]
    assert claim(db) is None
    with db.read() as session:
        ended = session.get(Job, job.id)
        outcomes = list_item_outcomes(session, job_id=job.id, after_index=-1, limit=9)
    assert (ended.status, ended.total_parts, ended.done_items) == (JobStatus.CANCELLED, 2, 1)
    assert outcomes[0].failure == (
        "cancelled after it was split into 2 chunks, before any of them finished"
    )


def test_a_cancelled_text_tells_what_its_running_chunks_finished_after_the_cancel(db):
    from shared.states import Task

    job = make_job(db, texts=["a" * 100], task=Task.SUMMARIZE)
    text_claim = claim(db, task=Task.SUMMARIZE)
    parts = [NewChunk(0, 50, 12, "x" * 50), NewChunk(50, 100, 12, "y" * 50)]
    with db.write() as session:
        record_outcomes(
            session,
            claim_token=text_claim.token,
            outcomes=[Outcome(text_claim.items[0].id, chunks=parts)],
        )
    chunks = claim(db, task=Task.SUMMARIZE)
    cancel(db, job.id)

    def failure():
        with db.read() as session:
            return list_item_outcomes(session, job_id=job.id, after_index=-1, limit=9)[0].failure

    assert failure() == "cancelled after it was split into 2 chunks, before any of them finished"
    for chunk, told in zip(
        chunks.items,
        [
            "cancelled while its chunks ran: 1 of 2 had finished",
            "cancelled after its 2 chunks ran, before their summaries were combined",
        ],
        strict=True,
    ):
        with db.write() as session:
            record_outcomes(
                session,
                claim_token=chunks.token,
                outcomes=[Outcome(chunk.id, result={"summary_text": "s."})],
            )
        assert failure() == told
    assert statuses(db, job.id) == ["cancelled", "done", "done"]


def test_an_expired_lease_of_a_cancelled_job_ends_cancelled_not_pending(db):
    job = make_job(db, texts=["a"])
    claim(db, lease_s=-1)
    cancel(db, job.id)
    with db.write() as session:
        expired = expire_leases(session, max_attempts=3)
    assert (expired.repended, expired.given_up) == (0, 0)
    assert statuses(db, job.id) == [ItemStatus.CANCELLED]


def test_a_cancelled_text_says_how_far_its_chunks_got(db):
    from shared.states import Task

    job = make_job(db, texts=["a" * 100, "b" * 100, "d" * 100, "c"], task=Task.SUMMARIZE)
    texts = claim(db, task=Task.SUMMARIZE, max_items=3)
    with db.write() as session:
        record_outcomes(
            session,
            claim_token=texts.token,
            outcomes=[
                Outcome(text.id, chunks=[NewChunk(0, 50, 12, "x" * 50), NewChunk(50, 100, 12, "y")])
                for text in texts.items
            ],
        )
    rest = claim(db, task=Task.SUMMARIZE)
    chunks = [c for c in rest.items if c.is_chunk]
    all_ran = [c for c in chunks if c.parent_id == texts.items[0].id]
    one_ran = [c for c in chunks if c.parent_id == texts.items[1].id][:1]
    with db.write() as session:
        record_outcomes(
            session,
            claim_token=rest.token,
            outcomes=[Outcome(c.id, result={"summary_text": "s."}) for c in all_ran + one_ran],
        )
    cancel(db, job.id)
    with db.write() as session:  # the worker hands back what it had not run
        release_claim(session, claim_token=rest.token)
    with db.read() as session:
        outcomes = list_item_outcomes(session, job_id=job.id, after_index=-1, limit=9)
    assert [o.failure for o in outcomes] == [
        "cancelled after its 2 chunks ran, before their summaries were combined",
        "cancelled while its chunks ran: 1 of 2 had finished",
        "cancelled after it was split into 2 chunks, before any of them finished",
        "cancelled before it ran",
    ]
