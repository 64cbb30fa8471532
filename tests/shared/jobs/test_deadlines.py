"""Deadlines: earlier ones are claimed first within a priority, and passed ones end the
items not started."""

import itertools
from datetime import timedelta

from sqlalchemy import select, update

from shared.jobs.deadlines import NOT_STARTED, expire_past_deadlines
from shared.jobs.outcomes import record_outcomes
from shared.jobs.work import NewChunk, Outcome
from shared.models import Job, JobItem, utcnow
from shared.states import ItemStatus, JobStatus, Task
from tests.factories import claim, make_job


def set_deadline(db, job, seconds_from_now):
    with db.write() as session:
        session.execute(
            update(Job)
            .where(Job.id == job.id)
            .values(deadline=utcnow() + timedelta(seconds=seconds_from_now))
        )


def expire(db):
    with db.write() as session:
        return expire_past_deadlines(session, clock=utcnow())


def job_of(db, job_id):
    with db.read() as session:
        return session.get(Job, job_id)


def items_of(db, job_id):
    with db.read() as session:
        return session.scalars(
            select(JobItem).where(JobItem.job_id == job_id).order_by(JobItem.id)
        ).all()


def test_within_a_priority_the_earliest_deadline_is_claimed_first_and_none_last(db):
    none = make_job(db, texts=["no deadline"] * 3)
    late = make_job(db, texts=["late"] * 3)
    early = make_job(db, texts=["early"] * 3)
    urgent = make_job(db, texts=["higher priority"], priority=7)
    set_deadline(db, late, 3600)
    set_deadline(db, early, 60)
    order = []
    while (held := claim(db, max_items=3)) is not None:
        order.append({item.job_id for item in held.items})
    # Priority still comes first; then the earliest deadline fills the claim.
    assert order == [{urgent.id}, {early.id}, {late.id}, {none.id}]


def test_small_jobs_with_deadlines_share_a_claim_in_deadline_order(db):
    jobs = [make_job(db, texts=[f"text {n}"]) for n in range(4)]
    for seconds, job in zip((40, 10, 30, 20), jobs, strict=True):
        set_deadline(db, job, seconds)
    held = claim(db, max_items=100)
    assert [item.job_id for item in held.items] == [jobs[i].id for i in (1, 3, 2, 0)]


def test_a_job_past_its_deadline_is_not_claimed_and_its_unstarted_items_end(db):
    job = make_job(db, texts=["a", "b", "c", "d"])
    running = claim(db, max_items=2)
    assert len(running.items) == 2
    set_deadline(db, job, -1)
    assert claim(db) is None
    assert expire(db) == 2
    items = items_of(db, job.id)
    assert [i.status for i in items] == ["running", "running", "error", "error"]
    assert {i.error for i in items[2:]} == {NOT_STARTED}
    assert job_of(db, job.id).status == JobStatus.RUNNING
    # What was running when the deadline passed finishes as usual: the job ends partial.
    with db.write() as session:
        record_outcomes(
            session,
            claim_token=running.token,
            outcomes=[Outcome(item_id=i.id, result={"label": "POSITIVE"}) for i in running.items],
        )
    ended = job_of(db, job.id)
    assert (ended.status, ended.done_items, ended.error_items) == (JobStatus.PARTIAL, 2, 2)
    assert expire(db) == 0


def test_a_job_whose_deadline_passed_before_anything_ran_fails(db):
    job = make_job(db, texts=["a", "b"])
    other = make_job(db, texts=["c"])
    set_deadline(db, job, -1)
    set_deadline(db, other, 3600)
    assert expire(db) == 2
    assert job_of(db, job.id).status == JobStatus.FAILED
    assert job_of(db, other.id).status == JobStatus.QUEUED


def test_a_chunk_not_started_before_the_deadline_fails_its_text_naming_it(db):
    document = "One sentence. " * 40
    job = make_job(db, texts=[document], task=Task.SUMMARIZE)
    first = claim(db, task=Task.SUMMARIZE)
    size = len(document) // 2
    chunks = [
        NewChunk(a, b, (b - a) // 4, document[a:b])
        for a, b in itertools.pairwise([0, size, len(document)])
    ]
    with db.write() as session:
        record_outcomes(
            session,
            claim_token=first.token,
            outcomes=[Outcome(item_id=first.items[0].id, chunks=chunks)],
        )
    set_deadline(db, job, -1)
    assert expire(db) == 2
    text = items_of(db, job.id)[0]
    assert text.status == ItemStatus.ERROR
    assert text.error.startswith("chunk index 0 (of 2 chunks")
    assert text.error.endswith(NOT_STARTED)
    assert job_of(db, job.id).status == JobStatus.FAILED
