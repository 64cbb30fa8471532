"""A file's rows go in as one job, streamed (COPY on Postgres); bad rows become errors."""

import pytest
from sqlalchemy import func, select

from shared.errors import InvalidRequest, RequestTooLarge
from shared.jobs.files import FileRow, create_file_job
from shared.jobs.reads import list_item_outcomes
from shared.models import DEFAULT_TENANT_ID, Job, JobItem
from shared.states import JobStatus, Task


def create(db, rows, *, max_rows=100, check_duplicate_ids=True):
    with db.write() as session:
        return create_file_job(
            session,
            tenant_id=DEFAULT_TENANT_ID,
            task=Task.SENTIMENT,
            model="model-a",
            options={},
            input_meta={"filename": "f.csv"},
            rows=iter(rows),
            max_rows=max_rows,
            check_duplicate_ids=check_duplicate_ids,
        )


def outcomes(db, job_id):
    with db.read() as session:
        return list_item_outcomes(session, job_id=job_id, after_index=-1, limit=100)


def stored(db):
    with db.read() as session:
        return (
            session.scalar(select(func.count()).select_from(Job)),
            session.scalar(select(func.count()).select_from(JobItem)),
        )


def test_rows_are_stored_in_order_with_their_ids_and_errors(db):
    job = create(
        db,
        [
            FileRow(0, "a-1", "great phone", None),
            FileRow(1, "a-2", None, "index 1 (line 3 of the file): the text is empty"),
            FileRow(2, "a-3", "it broke", None),
        ],
    )
    assert (job.total_items, job.error_items, job.status) == (3, 1, JobStatus.QUEUED)
    assert [(o.index, o.custom_id, o.status, o.error) for o in outcomes(db, job.id)] == [
        (0, "a-1", "pending", None),
        (1, "a-2", "error", "index 1 (line 3 of the file): the text is empty"),
        (2, "a-3", "pending", None),
    ]
    assert stored(db) == (1, 3)


def test_a_repeated_custom_id_is_an_error_on_every_later_row(db):
    job = create(
        db,
        [
            FileRow(0, "x", "one", None),
            FileRow(1, "y", "two", None),
            FileRow(2, "x", "three", None),
            FileRow(3, "x", "four", None),
        ],
    )
    assert job.error_items == 2
    errors = {o.index: o.error for o in outcomes(db, job.id) if o.error}
    assert errors == {
        2: "index 2: custom_id x is already used by index 0",
        3: "index 3: custom_id x is already used by index 0",
    }


def test_rows_without_ids_of_their_own_are_no_duplicates(db):
    job = create(db, [FileRow(0, None, "one", None), FileRow(1, None, "two", None)])
    assert job.error_items == 0
    assert [(o.custom_id, o.status) for o in outcomes(db, job.id)] == [
        (None, "pending"),
        (None, "pending"),
    ]


def test_a_file_whose_every_row_failed_is_a_failed_job_at_once(db):
    job = create(db, [FileRow(0, None, None, "index 0 (line 2 of the file): the text is empty")])
    with db.read() as session:
        assert session.get(Job, job.id).status == JobStatus.FAILED
    # The object the upload answers with says so too, not the status it was created with.
    assert job.status == JobStatus.FAILED and job.finished_at is not None


@pytest.mark.parametrize(
    ("rows", "error"),
    [([], InvalidRequest), ([FileRow(n, str(n), "t", None) for n in range(4)], RequestTooLarge)],
    ids=["no rows", "too many rows"],
)
def test_a_file_that_is_refused_stores_nothing(db, rows, error):
    with pytest.raises(error):
        create(db, rows, max_rows=3)
    assert stored(db) == (0, 0)
