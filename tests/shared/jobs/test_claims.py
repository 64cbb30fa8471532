"""Claims and leases: who works on which item, for how long, and what a lost worker leaves."""

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text

from shared.catalogue import CatalogueModel
from shared.jobs import claims
from shared.jobs.claims import expire_leases, release_claim, renew_lease
from shared.jobs.outcomes import record_outcomes
from shared.jobs.queue import models_awaited, models_waiting_for_a_worker
from shared.jobs.work import Outcome
from shared.models import Job, JobItem
from shared.states import ItemStatus, JobStatus, Task
from tests.factories import claim, make_job


def job_status(db, job_id):
    with db.read() as session:
        return session.get(Job, job_id)


def test_a_claim_takes_items_of_several_jobs_and_starts_them(db):
    first = make_job(db, texts=["a", "b"])
    second = make_job(db, texts=["c"])
    claimed = claim(db)
    assert [(i.job_id, i.index, i.text) for i in claimed.items] == [
        (first.id, 0, "a"),
        (first.id, 1, "b"),
        (second.id, 0, "c"),
    ]
    for job_id in (first.id, second.id):
        job = job_status(db, job_id)
        assert job.status == JobStatus.RUNNING
        assert job.model_revision == "rev-1"
        assert job.started_at is not None
    assert claim(db) is None


def test_a_claim_stops_at_the_token_budget(db):
    make_job(db, texts=["x" * 400] * 10)  # about 100 tokens each
    claimed = claim(db, max_tokens=350)
    assert len(claimed.items) == 3


def test_a_worker_only_claims_jobs_of_its_task_and_model(db):
    make_job(db, texts=["a"], model="model-b")
    make_job(db, texts=["b"], task=Task.SUMMARIZE)
    assert claim(db) is None
    assert len(claim(db, model="model-b").items) == 1


def test_outcomes_finish_the_job_with_the_right_status(db):
    ok = make_job(db, texts=["a", "b"])
    mixed = make_job(db, texts=["c", "d"])
    claimed = claim(db)
    outcomes = [
        Outcome(item_id=i.id, result={"label": "POSITIVE"})
        if i.text != "d"
        else Outcome(item_id=i.id, error="boom")
        for i in claimed.items
    ]
    with db.write() as session:
        assert record_outcomes(session, claim_token=claimed.token, outcomes=outcomes) == 4
    assert job_status(db, ok.id).status == JobStatus.SUCCEEDED
    finished = job_status(db, mixed.id)
    assert finished.status == JobStatus.PARTIAL
    assert (finished.done_items, finished.error_items) == (1, 1)
    assert finished.finished_at is not None


def test_an_outcome_from_a_lost_claim_is_dropped(db):
    job = make_job(db, texts=["a"])
    stale = claim(db, lease_s=0.01)
    time.sleep(0.05)
    with db.write() as session:
        assert expire_leases(session, max_attempts=3).repended == 1
    fresh = claim(db)
    item = fresh.items[0].id
    with db.write() as session:
        assert (
            record_outcomes(
                session, claim_token=fresh.token, outcomes=[Outcome(item_id=item, result={"n": 2})]
            )
            == 1
        )
        assert (
            record_outcomes(
                session, claim_token=stale.token, outcomes=[Outcome(item_id=item, result={"n": 1})]
            )
            == 0
        )
    with db.read() as session:
        stored = session.get(JobItem, item)
        assert stored.result == {"n": 2}
        assert stored.attempts == 2
    assert job_status(db, job.id).done_items == 1


def test_an_item_whose_worker_keeps_dying_ends_in_an_error(db):
    job = make_job(db, texts=["poison"])
    for _ in range(2):
        claim(db, lease_s=0.01)
        time.sleep(0.03)
        with db.write() as session:
            expire_leases(session, max_attempts=2)
    finished = job_status(db, job.id)
    assert finished.status == JobStatus.FAILED
    with db.read() as session:
        assert "lost 2 times" in session.scalar(select(JobItem.error))


def test_a_released_claim_goes_back_without_costing_an_attempt(db):
    make_job(db, texts=["a", "b"])
    claimed = claim(db)
    with db.write() as session:
        assert release_claim(session, claim_token=claimed.token) == 2
    with db.read() as session:
        rows = session.execute(select(JobItem.status, JobItem.attempts)).all()
    assert set(rows) == {(ItemStatus.PENDING.value, 0)}


def test_a_renewed_lease_does_not_expire(db):
    make_job(db, texts=["a"])
    claimed = claim(db, lease_s=0.05)
    with db.write() as session:
        renew_lease(session, claim_token=claimed.token, lease_s=60)
    time.sleep(0.1)
    with db.write() as session:
        assert expire_leases(session, max_attempts=3).repended == 0


@pytest.mark.parametrize("backend", ["postgres"])
def test_a_lease_renewed_by_a_worker_whose_clock_is_behind_still_holds(db, monkeypatch):
    """Leases run on the database server's clock (SQLite has one machine, so one clock): a
    worker whose clock is an hour behind must not renew its lease into the past."""
    make_job(db, texts=["a"])
    claimed = claim(db, lease_s=60)
    behind = datetime.now(UTC) - timedelta(hours=1)
    monkeypatch.setattr(claims, "utcnow", lambda: behind)
    with db.write() as session:
        assert renew_lease(session, claim_token=claimed.token, lease_s=60) == 1
    monkeypatch.undo()
    with db.write() as session:
        assert expire_leases(session, max_attempts=3).repended == 0


@pytest.mark.parametrize("backend", ["postgres"])
def test_jobs_to_serve_probe_each_jobs_pending_items_whatever_the_statistics(db):
    """Planned as a semi-join on statistics taken while few items were pending (as here:
    the tables were never analyzed), the check scans every pending item for each job: a
    claim among 2,000 queued one-text jobs took 346 ms. It must stay one index probe a job."""
    for _ in range(300):
        make_job(db, texts=["a"])
    params = claims._waiting_params(Task.SENTIMENT, "model-a", None)
    with db.read() as session:
        query = claims._JOBS_TO_SERVE[False].params(**params)
        sql = query.compile(
            dialect=session.get_bind().dialect, compile_kwargs={"literal_binds": True}
        )
        plan = json.dumps(session.execute(text(f"EXPLAIN (FORMAT JSON) {sql}")).scalar())
        assert len(session.execute(query).all()) == claims.MAX_JOBS_PER_CLAIM
    assert "Semi" not in plan
    assert '"Subplan Name"' in plan
    assert '"Index Name": "ix_job_items_pending_job"' in plan


def test_waiting_models_are_those_with_pending_items_and_no_live_claim(db):
    served = [
        CatalogueModel(name="a", task=Task.SENTIMENT, source="model-a", default=True),
        CatalogueModel(name="a2", task=Task.SUMMARIZE, source="model-a", default=True),
    ]
    make_job(db, texts=["a", "b"])
    make_job(db, texts=["c"], task=Task.SUMMARIZE, model="model-b")
    with db.read() as session:
        assert models_waiting_for_a_worker(session, served) == [served[0]]
        assert models_awaited(session, Task.SUMMARIZE) == {"model-b": 1}
    claim(db, max_items=1)
    with db.read() as session:
        assert models_waiting_for_a_worker(session, served) == []


def lose_claim(db, **kwargs):
    """Claim with a lease that lapses at once, and let the sweeper put the items back."""
    lost = claim(db, lease_s=0.01, **kwargs)
    time.sleep(0.05)
    with db.write() as session:
        expire_leases(session, max_attempts=3)
    return lost


def test_items_of_a_lost_claim_go_out_in_small_groups_apart_from_fresh_items(db):
    texts = [f"t{n:02d}" for n in range(40)]
    make_job(db, texts=texts)
    assert len(lose_claim(db).items) == 40
    make_job(db, texts=["fresh"])
    claims = sorted([i.text for i in claim(db).items] for _ in range(4))
    assert claims == [["fresh"], texts[:16], texts[16:32], texts[32:]]


def test_on_their_last_try_items_of_a_lost_claim_are_claimed_alone(db):
    make_job(db, texts=["a", "b", "c"])
    lose_claim(db)
    assert len(lose_claim(db).items) == 3  # the second try, as a group, lost again
    assert [i.text for i in claim(db).items] == ["a"]
    assert [i.text for i in claim(db).items] == ["b"]


def test_a_claim_ahead_takes_no_lost_claims_items_and_no_texts_with_a_deadline(db):
    lost = make_job(db, texts=["a", "b"])
    lose_claim(db)
    rows_before = item_states(db, lost.id)
    assert claim(db, ahead=True) is None  # nothing written: no lease, no attempt
    assert item_states(db, lost.id) == rows_before
    assert claim(db).retried
    urgent = make_job(db, texts=["c"])
    with db.write() as session:
        session.get(Job, urgent.id).deadline = datetime.now(UTC) + timedelta(hours=1)
    assert claim(db, ahead=True) is None
    assert job_status(db, urgent.id).last_claimed_at is None
    assert claim(db).deadlines
    make_job(db, texts=["d"])
    assert [i.text for i in claim(db, ahead=True).items] == ["d"]


def item_states(db, job_id):
    with db.read() as session:
        return session.execute(
            select(JobItem.status, JobItem.attempts, JobItem.claim_token)
            .where(JobItem.job_id == job_id)
            .order_by(JobItem.id)
        ).all()


def test_concurrent_claims_never_share_an_item(db):
    texts = [f"text {n}" for n in range(300)]
    for start in range(0, 300, 50):
        make_job(db, texts=texts[start : start + 50])
    seen: list[int] = []
    lock = threading.Lock()

    def claimer():
        while (claimed := claim(db, max_items=7)) is not None:
            with lock:
                seen.extend(item.id for item in claimed.items)

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 300
    assert len(set(seen)) == 300
    with db.read() as session:
        assert session.scalar(select(func.count()).where(JobItem.status == "running")) == 300
