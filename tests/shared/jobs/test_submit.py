"""Adding a job: the row written in one INSERT and the object that stands for it."""

from sqlalchemy import inspect

from shared.jobs.submit import add_job, create_job
from shared.models import Job, JobItem
from shared.states import JobStatus, Task


def add(session, **fields):
    """Add a job with `add_job`: one sentiment text of model-a unless `fields` say else."""
    defaults = {"task": Task.SENTIMENT, "model": "model-a", "options": {}, "total_items": 1}
    return add_job(session, tenant_id="default", **({"input_kind": "texts"} | defaults | fields))


def test_a_new_job_object_is_the_row_written_with_nothing_left_to_load(db):
    with db.write() as session:
        job = create_job(
            session,
            tenant_id="default",
            task=Task.SENTIMENT,
            model="model-a",
            options={"categories": ["price"]},
            texts=["first text", "second"],
            priority=7,
        )
        state = inspect(job)
        # Persistent, every column set: reading any attribute sends no SELECT.
        assert state.persistent and not state.unloaded
        assert job in session
    with db.read() as session:
        row = session.get(Job, job.id)
        for column in inspect(Job).columns:
            assert getattr(row, column.key) == getattr(job, column.key), column.key
        assert row.status == JobStatus.QUEUED
        assert row.priority == 7 and row.total_items == 2 and row.label_counts == {}
        assert row.input_meta == {"preview": "first text"}
        assert session.query(JobItem).filter_by(job_id=job.id).count() == 2


def test_a_change_to_a_new_job_object_is_written_with_its_transaction(db):
    with db.write() as session:
        job = add(session, task=Task.SUMMARIZE, total_items=0, input_kind="file")
        # As an upload does once its rows are in.
        job.total_items, job.error_items = 5, 1
    with db.read() as session:
        row = session.get(Job, job.id)
        assert (row.total_items, row.error_items, row.label_counts) == (5, 1, None)


def test_a_new_job_row_is_the_one_the_orm_would_write_with_the_models_defaults(db):
    # A column added to the model with a default must be set in add_job too, not left NULL.
    with db.write() as session:
        job = add(session)
        plain = Job(
            tenant_id="default",
            task=Task.SENTIMENT.value,
            status=JobStatus.QUEUED.value,
            model="model-a",
            total_items=1,
            label_counts={},
        )
        session.add(plain)
    with db.read() as session:
        ours, theirs = session.get(Job, job.id), session.get(Job, plain.id)
        for column in inspect(Job).columns:
            if column.key not in ("id", "created_at"):
                assert getattr(ours, column.key) == getattr(theirs, column.key), column.key
