"""Records, claims and hand-backs lock job rows in one id order, after the items they hold.

The first tests stage two transactions so that, locking rows in any other order, each would
hold a job row the other waits for (Postgres then aborts one with a deadlock error). The
last ones cancel a job while its items are handed back: the cancel must wait for the hand-
back, or it ends the job with items pending that no worker will claim.
"""

import threading
import uuid
from typing import Any

import pytest
from sqlalchemy import select, update

from shared.jobs import claims, outcomes
from shared.jobs.cancel import cancel_job
from shared.jobs.outcomes import record_outcomes
from shared.jobs.work import NewChunk, Outcome
from shared.models import DEFAULT_TENANT_ID, Job, JobItem
from tests.factories import claim, make_job
from tests.lock_waits import wait_for_lock_waits

pytestmark = pytest.mark.parametrize("backend", ["postgres"])

LABEL = {"label": "POSITIVE", "score": 0.9, "scores": {"POSITIVE": 0.9, "NEGATIVE": 0.1}}


def items(db, job):
    with db.read() as session:
        return session.scalars(
            select(JobItem.id).where(JobItem.job_id == job.id).order_by(JobItem.id)
        ).all()


def hold(db, ids):
    """Mark items running under a new claim token, as a claim would; return the token."""
    token = uuid.uuid4()
    with db.write() as session:
        session.execute(
            update(JobItem).where(JobItem.id.in_(ids)).values(status="running", claim_token=token)
        )
    return token


def job_made_before(db, other, texts):
    """Make a job whose id sorts before `other`'s (ids are random); cancel the misses."""
    while True:
        job = make_job(db, texts=texts)
        if job.id < other.id:
            return job
        with db.write() as session:
            cancel_job(session, tenant_id=DEFAULT_TENANT_ID, job_id=job.id)


def run(errors: dict[str, str], name: str, step: Any) -> threading.Thread:
    def target() -> None:
        try:
            step()
        except Exception as error:
            errors[name] = type(getattr(error, "orig", error)).__name__

    thread = threading.Thread(target=target, name=name)
    thread.start()
    return thread


def test_a_record_with_a_split_and_one_counting_chunks_share_jobs_without_deadlock(db, monkeypatch):
    """R2 counts a chunk of A (locking A), then waits before its texts' job B; R1, with a
    split, locks its jobs meanwhile. R1 taking B before A (id order) while R2 holds A and
    then wants B is fine only if R1 takes no job step by step."""
    a = make_job(db, texts=["p" * 100])
    b = job_made_before(db, a, ["b1", "b2"])
    c = make_job(db, texts=["c" * 100])
    (text_of_a,) = items(db, a)
    parts = [NewChunk(0, 50, 12, "p" * 50), NewChunk(50, 100, 12, "p" * 50)]
    token = hold(db, [text_of_a])
    with db.write() as session:
        record_outcomes(session, claim_token=token, outcomes=[Outcome(text_of_a, chunks=parts)])
    _, chunk_1, chunk_2 = items(db, a)
    b1, b2 = items(db, b)
    (text_of_c,) = items(db, c)
    first, second = hold(db, [chunk_1, b1, text_of_c]), hold(db, [chunk_2, b2])

    paused, go = threading.Event(), threading.Event()
    count_texts = outcomes._count_texts

    def pausing(session, finished):  # type: ignore[no-untyped-def]
        if threading.current_thread().name == "R2":
            paused.set()
            go.wait(30)
        return count_texts(session, finished)

    monkeypatch.setattr(outcomes, "_count_texts", pausing)

    def record(token, outs):  # type: ignore[no-untyped-def]
        with db.write() as session:
            record_outcomes(session, claim_token=token, outcomes=outs)

    errors: dict[str, str] = {}
    second_record = run(
        errors,
        "R2",
        lambda: record(second, [Outcome(chunk_2, result=LABEL), Outcome(b2, result=LABEL)]),
    )
    assert paused.wait(30)
    split = [NewChunk(0, 50, 12, "c" * 50), NewChunk(50, 100, 12, "c" * 50)]
    first_record = run(
        errors,
        "R1",
        lambda: record(
            first,
            [
                Outcome(text_of_c, chunks=split),
                Outcome(chunk_1, result=LABEL),
                Outcome(b1, result=LABEL),
            ],
        ),
    )
    wait_for_lock_waits(db)
    go.set()
    first_record.join(60)
    second_record.join(60)
    assert errors == {}
    with db.read() as session:
        counts = {job.id: (job.status, job.done_items) for job in session.scalars(select(Job))}
    assert counts[a.id] == ("succeeded", 1) and counts[b.id] == ("succeeded", 2)


def test_a_claim_starts_its_jobs_in_id_order_beside_a_record(db):
    """A third session holds job B, so the record (locking B then A, in id order) waits on B
    while the claim's job start comes for A and B: locking A first, it would hold what the
    record waits for next while waiting on B behind it."""
    a = make_job(db, texts=["a1", "a2"])
    b = job_made_before(db, a, ["b1", "b2"])
    a1, _ = items(db, a)
    b1, _ = items(db, b)
    token = hold(db, [a1, b1])
    errors: dict[str, str] = {}
    claimed: dict[str, list[int]] = {}

    def record() -> None:
        with db.write() as session:
            record_outcomes(
                session,
                claim_token=token,
                outcomes=[Outcome(a1, result=LABEL), Outcome(b1, result=LABEL)],
            )

    def take() -> None:
        got = claim(db)
        claimed["items"] = sorted(item.id for item in got.items) if got else []

    holder = db.engine.connect()
    transaction = holder.begin()
    holder.execute(select(Job.id).where(Job.id == b.id).with_for_update())
    recording = run(errors, "record", record)
    wait_for_lock_waits(db)
    claiming = run(errors, "claim", take)
    wait_for_lock_waits(db, 2)
    transaction.rollback()
    holder.close()
    recording.join(60)
    claiming.join(60)
    assert errors == {}
    assert len(claimed["items"]) == 2


def cancel_during(monkeypatch, db, job_id) -> list[threading.Thread]:
    """Cancel the job from another session just after the hand-back has looked for items
    of ended jobs; return the cancel's thread, once it has ended or waits on a lock."""
    started: list[threading.Thread] = []
    look = claims.cancel_items_of_ended_jobs

    def looked_then_cancel(session, which):  # type: ignore[no-untyped-def]
        look(session, which)

        def cancel() -> None:
            with db.write() as other:
                cancel_job(other, tenant_id=DEFAULT_TENANT_ID, job_id=job_id)

        thread = threading.Thread(target=cancel)
        thread.start()
        wait_for_lock_waits(db, unless=lambda: not thread.is_alive())
        started.append(thread)

    monkeypatch.setattr(claims, "cancel_items_of_ended_jobs", looked_then_cancel)
    return started


def item_statuses(db, job_id):
    with db.read() as session:
        return sorted(session.scalars(select(JobItem.status).where(JobItem.job_id == job_id)).all())


def test_a_cancel_while_a_claim_is_handed_back_ends_every_item(db, monkeypatch):
    job = make_job(db, texts=["a", "b"])
    held = claim(db)
    cancelling = cancel_during(monkeypatch, db, job.id)
    with db.write() as session:
        claims.release_claim(session, claim_token=held.token)
    cancelling[0].join(30)
    assert item_statuses(db, job.id) == ["cancelled", "cancelled"]


def test_a_cancel_while_expired_leases_are_swept_ends_every_item(db, monkeypatch):
    job = make_job(db, texts=["a", "b"])
    claim(db, lease_s=-1)
    cancelling = cancel_during(monkeypatch, db, job.id)
    with db.write() as session:
        claims.expire_leases(session, max_attempts=3)
    cancelling[0].join(30)
    assert item_statuses(db, job.id) == ["cancelled", "cancelled"]
