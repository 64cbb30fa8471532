"""Claims serve the highest priority first, and share a priority among its jobs in turn."""

from shared.jobs.claims import higher_priority_waiting
from shared.states import Task
from tests.factories import claim, make_job


def test_a_newer_job_of_higher_priority_is_claimed_first(db):
    make_job(db, texts=["bulk"] * 5, priority=2)
    urgent = make_job(db, texts=["now"], priority=8)
    first = claim(db)
    assert {i.job_id for i in first.items} == {urgent.id}
    assert first.priority == 8
    assert claim(db).priority == 2


def test_jobs_of_one_priority_share_each_claim_and_take_turns(db):
    big = make_job(db, texts=[f"a{n}" for n in range(50)])
    other = make_job(db, texts=[f"b{n}" for n in range(50)])
    shared_claim = claim(db, max_items=10)
    assert sorted(i.text for i in shared_claim.items) == sorted(
        [f"a{n}" for n in range(5)] + [f"b{n}" for n in range(5)]
    )
    alone = make_job(db, texts=["c0", "c1"])
    # The job never served goes first and takes what it needs; the rest is shared.
    turn = claim(db, max_items=6)
    assert [i.job_id for i in turn.items][:2] == [alone.id, alone.id]
    assert {i.job_id for i in turn.items} == {alone.id, big.id, other.id}


def test_higher_priority_waiting_sees_only_higher_pending_work(db):
    make_job(db, texts=["bulk"], priority=2)
    with db.read() as session:
        assert not higher_priority_waiting(
            session, task=Task.SENTIMENT, model="model-a", priority=2
        )
    make_job(db, texts=["now"], priority=8)
    make_job(db, texts=["other model"], priority=9, model="model-b")
    with db.read() as session:
        assert higher_priority_waiting(session, task=Task.SENTIMENT, model="model-a", priority=2)
        assert not higher_priority_waiting(
            session, task=Task.SENTIMENT, model="model-a", priority=8
        )
