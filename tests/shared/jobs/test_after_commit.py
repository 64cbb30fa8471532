"""Effects queued on a session run once after its commit, and never after a rollback."""

import uuid

import pytest

from shared.jobs.after_commit import run_after_commit, use_doorbell, wake_workers
from shared.states import Task


class RecordingDoorbell:
    def __init__(self):
        self.rung = []

    def ring(self, task, *, model_name=None, job_id=None):
        self.rung.append((task, model_name, job_id))
        return True


def test_an_effect_runs_once_after_the_commit_and_not_before(db):
    ran = []
    with db.write() as session:
        run_after_commit(session, lambda: ran.append("effect"))
        assert ran == []
    assert ran == ["effect"]
    with db.write() as session:
        pass
    assert ran == ["effect"]


def test_an_effect_is_dropped_when_the_transaction_rolls_back(db):
    ran = []
    with pytest.raises(RuntimeError), db.write() as session:
        run_after_commit(session, lambda: ran.append("effect"))
        raise RuntimeError("the transaction fails")
    with db.write() as session:
        pass
    assert ran == []


def test_effects_with_one_key_run_once(db):
    ran = []
    with db.write() as session:
        run_after_commit(session, lambda: ran.append(1), key="same")
        run_after_commit(session, lambda: ran.append(2), key="same")
        run_after_commit(session, lambda: ran.append(3))
    assert ran == [1, 3]


def test_a_failing_effect_does_not_undo_the_commit_nor_stop_the_others(db):
    ran = []

    def fail():
        raise ConnectionError("broker away")

    with db.write() as session:
        run_after_commit(session, fail)
        run_after_commit(session, lambda: ran.append("after"))
    assert ran == ["after"]


def test_workers_are_woken_through_the_process_doorbell_after_commit_only(db, monkeypatch):
    doorbell = RecordingDoorbell()
    monkeypatch.setattr(db, "session_info", {})
    use_doorbell(db.session_info, doorbell)
    job_id = uuid.uuid4()
    with pytest.raises(RuntimeError), db.write() as session:
        wake_workers(session, Task.SENTIMENT, job_id=job_id)
        raise RuntimeError("the transaction fails")
    assert doorbell.rung == []
    with db.write() as session:
        wake_workers(session, Task.SENTIMENT, model_name="sst2", job_id=job_id)
        wake_workers(session, Task.SENTIMENT, model_name="sst2")
        wake_workers(session, Task.SENTIMENT, model_name="twitter")
        assert doorbell.rung == []
    # One ring per model a transaction made work for.
    assert doorbell.rung == [
        (Task.SENTIMENT, "sst2", job_id),
        (Task.SENTIMENT, "twitter", None),
    ]


def test_progress_is_announced_once_per_job_per_transaction_and_only_if_it_commits(db):
    from shared.jobs.after_commit import JOB_PROGRESS_CHANNEL, announce_progress

    jobs = [uuid.uuid4(), uuid.uuid4()]
    if db.is_sqlite:  # no notifications: event streams back off instead; nothing is sent
        with db.write() as session:
            announce_progress(session, jobs)
        return
    import psycopg
    from sqlalchemy import event

    statements = []

    def count(conn, cursor, statement, *args):
        if "pg_notify" in statement:
            statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute(f"LISTEN {JOB_PROGRESS_CHANNEL}")
        with db.write() as session:
            # Three batches of one transaction, two of them for both jobs.
            announce_progress(session, jobs)
            announce_progress(session, [jobs[0]])
            announce_progress(session, jobs)
        assert len(statements) == 1, "one statement for the jobs, none for the repeats"
        with pytest.raises(RuntimeError), db.write() as session:
            announce_progress(session, [uuid.uuid4()])
            raise RuntimeError("rolled back: no announcement")
        with db.write() as session:
            announce_progress(session, [jobs[1]])  # a new transaction announces again
        heard = [n.payload for n in listener.notifies(timeout=1.0, stop_after=10)]
    assert sorted(heard[:2]) == sorted(map(str, jobs))
    assert heard[2:] == [str(jobs[1])]
    event.remove(db.engine, "before_cursor_execute", count)
