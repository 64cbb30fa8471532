"""Submit a job for an uploaded file: its rows streamed in, refused rows stored as errors."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Text, cast, func, insert, select, update
from sqlalchemy.orm import Session

from shared.errors import InvalidRequest, RequestTooLarge
from shared.jobs import insights
from shared.jobs.lifecycle import finish_complete_jobs
from shared.jobs.rows import INSERT_SLICE_ROWS, slices
from shared.jobs.submit import Webhook, add_job
from shared.models import Job, JobItem, utcnow
from shared.states import ItemStatus, Task


@dataclass(frozen=True, slots=True)
class FileRow:
    """A row of an uploaded file: its text, or the error that keeps it from running."""

    index: int  # 0-based data row number, the `index` of its result; blank lines are not rows
    custom_id: str | None  # the id column's value; None without one (the index names the row)
    text: str | None  # None when the row has an error
    error: str | None  # "index I (line L of the file): ...", L where the row starts


# COPY's column order for file rows (Postgres).
_FILE_ROW_COLUMNS = (
    "job_id",
    "idx",
    "task",
    "status",
    "input_text",
    "char_count",
    "custom_id",
    "error",
    "attempts",
    "level",
    "finished_at",
)


def create_file_job(
    session: Session,
    *,
    tenant_id: str,
    task: Task,
    model: str,
    options: dict[str, Any],
    input_meta: dict[str, Any],
    model_name: str | None = None,
    rows: Iterable[FileRow],
    max_rows: int,
    check_duplicate_ids: bool,
    webhook: Webhook | None = None,
    priority: int = 2,
    summarizer: insights.Summarizer | None = None,
    expires_after_s: int | None = None,
) -> Job:
    """Add a queued job for an uploaded file, streaming its rows in (COPY on Postgres).

    Rows with an error are stored as finished with that error, so they appear in the
    results in place. Raise (and so store nothing) if the file has no rows or too many.
    """
    job = add_job(
        session,
        tenant_id=tenant_id,
        task=task,
        model=model,
        model_name=model_name,
        options=options,
        total_items=0,
        input_kind="file",
        input_meta=input_meta,
        webhook=webhook,
        priority=priority,
        summarizer=summarizer,
        expires_after_s=expires_after_s,
    )
    counts = Counter[str]()
    values = _item_values(rows, job_id=job.id, task=task, max_rows=max_rows, counts=counts)
    _insert_items(session, values)
    if counts["rows"] == 0:
        raise InvalidRequest("The file has no rows to process.")
    if check_duplicate_ids:
        counts["errors"] += _fail_duplicate_ids(session, job.id)
    job.total_items = counts["rows"]
    job.error_items = counts["errors"]
    session.flush()
    finish_complete_jobs(session, [job.id])
    return job


def _item_values(
    rows: Iterable[FileRow],
    *,
    job_id: uuid.UUID,
    task: Task,
    max_rows: int,
    counts: Counter[str],
) -> Iterator[tuple[Any, ...]]:
    """Yield each row's item in `_FILE_ROW_COLUMNS` order, counting rows and errors.

    Raise RequestTooLarge at the first row past `max_rows`.
    """
    now = utcnow()
    for row in rows:
        counts["rows"] += 1
        if counts["rows"] > max_rows:
            raise RequestTooLarge(
                f"The file has more than {max_rows} rows (TEXTQ_MAX_UPLOAD_ROWS)."
            )
        failed = row.text is None
        counts["errors"] += failed
        yield (
            job_id,
            row.index,
            task.value,
            (ItemStatus.ERROR if failed else ItemStatus.PENDING).value,
            row.text or "",
            len(row.text or ""),
            row.custom_id,
            row.error if failed else None,
            0,
            0,
            now if failed else None,
        )


def _insert_items(session: Session, values: Iterable[tuple[Any, ...]]) -> None:
    """Stream the items in: COPY on Postgres, INSERTs of a slice of rows elsewhere."""
    if session.get_bind().dialect.name == "postgresql":
        _copy_rows(session, values)
        return
    records = (dict(zip(_FILE_ROW_COLUMNS, row, strict=True)) for row in values)
    for rows_slice in slices(records, INSERT_SLICE_ROWS):
        session.execute(insert(JobItem), rows_slice)


def _copy_rows(session: Session, rows: Iterable[tuple[Any, ...]]) -> None:
    """Stream rows into job_items with COPY, on the session's own connection (transaction)."""
    connection = session.connection().connection.driver_connection
    statement = f"COPY job_items ({', '.join(_FILE_ROW_COLUMNS)}) FROM STDIN"
    with connection.cursor() as cursor, cursor.copy(statement) as copy:  # type: ignore[union-attr]
        for row in rows:
            copy.write_row(row)


def _fail_duplicate_ids(session: Session, job_id: uuid.UUID) -> int:
    """Turn every row whose custom_id an earlier row already used into an error row.

    Done in the database after the rows are in: remembering a million ids in the API
    process would cost more memory than the whole upload is allowed to.
    """
    first = (
        select(
            JobItem.id,
            JobItem.idx,
            JobItem.custom_id,
            func.min(JobItem.idx).over(partition_by=JobItem.custom_id).label("first_idx"),
        )
        # Rows that already failed may carry no readable id; rows without ids repeat none.
        .where(
            JobItem.job_id == job_id,
            JobItem.parent_id.is_(None),
            JobItem.status == ItemStatus.PENDING.value,
            JobItem.custom_id.is_not(None),
        )
        .subquery()
    )
    # Rows are named by the `index` of their results, as the upload's own row errors are.
    message = (
        "index "
        + cast(first.c.idx, Text)
        + ": custom_id "
        + first.c.custom_id
        + " is already used by index "
        + cast(first.c.first_idx, Text)
    )
    result = session.execute(
        update(JobItem)
        .where(JobItem.id == first.c.id, first.c.idx > first.c.first_idx)
        .values(
            status=ItemStatus.ERROR.value,
            error=message,
            input_text="",
            char_count=0,
            finished_at=utcnow(),
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
