"""Stream all of a job's results as JSON Lines or CSV, a page of rows at a time.

A finished job's rows are read and sent at once. A followed export (`follow=true`) of a job
still running sends rows in input order as they become available: each page is the texts
finished after the last row sent up to the first one not finished yet, so a fast text after
a slow one waits for it. Between pages it sleeps until the job is announced changed (NOTIFY
on Postgres, backoff on SQLite, see api/waiting.py), and it ends once the job has ended and
its last row is sent.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import AsyncIterator

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from api.waiting import JobWaiter
from shared.db import Database
from shared.jobs.reads import StoredOutcome, list_item_outcomes
from shared.jobs.result_lines import CATEGORY_COLUMNS, result_record
from shared.models import Job
from shared.states import TERMINAL_JOB_STATUSES, JobStatus, Task

EXPORT_PAGE_ROWS = 5000
# A followed export re-reads at least this often while nothing is announced.
FOLLOW_RECHECK_S = 2.0
MEDIA_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}
OUTPUT_COLUMNS = {Task.SENTIMENT: ["label", "score"], Task.SUMMARIZE: ["summary_text"]}


def read_rows(
    db: Database, job_id: uuid.UUID, after: int, limit: int
) -> tuple[list[StoredOutcome], bool]:
    """Return up to `limit` rows after index `after` that will not change, and whether the
    job had ended when they were read (then every row is final and none is left out).

    The job's status is read first: if it had ended, no row read after can still change.
    """
    with db.read() as session:
        status = session.scalar(select(Job.status).where(Job.id == job_id))
        ended = status is None or JobStatus(status) in TERMINAL_JOB_STATUSES
        rows = list_item_outcomes(
            session, job_id=job_id, after_index=after, limit=limit, finished_only=not ended
        )
    return rows, ended


async def pages(
    db: Database, job_id: uuid.UUID, *, waiter: JobWaiter | None = None
) -> AsyncIterator[list[StoredOutcome]]:
    """Yield the job's rows in input order, a page at a time; with a `waiter`, follow a
    running job until it ends (see the module's docstring)."""
    after = -1
    if waiter is None:
        while rows := (await run_in_threadpool(read_rows, db, job_id, after, EXPORT_PAGE_ROWS))[0]:
            yield rows
            after = rows[-1].index
        return
    with waiter.watch(job_id) as watch:
        while True:
            # A short read per page: a slow client never holds a transaction open.
            rows, ended = await run_in_threadpool(read_rows, db, job_id, after, EXPORT_PAGE_ROWS)
            if rows:
                yield rows
                after = rows[-1].index
            elif ended:
                return
            if len(rows) < EXPORT_PAGE_ROWS and not ended:
                await watch.changed(FOLLOW_RECHECK_S)


async def stream_jsonl(
    rows: AsyncIterator[list[StoredOutcome]], task: Task, *, categories: bool = False
) -> AsyncIterator[bytes]:
    """Yield the rows as JSON Lines (with `category` and `category_score` when the job has
    categories)."""
    async for page in rows:
        lines = [
            json.dumps(result_record(row, task, categories=categories), ensure_ascii=False)
            for row in page
        ]
        yield ("\n".join(lines) + "\n").encode()


async def stream_csv(
    rows: AsyncIterator[list[StoredOutcome]], task: Task, *, categories: bool = False
) -> AsyncIterator[bytes]:
    """Yield the rows as CSV with a header row (with `category` and `category_score`
    columns when the job has categories)."""
    outputs = [*OUTPUT_COLUMNS[task], *(CATEGORY_COLUMNS if categories else [])]
    columns = ["index", "custom_id", *outputs, "error"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    # The header goes out at once: a followed export may wait a while for its first row.
    yield buffer.getvalue().encode()
    buffer.seek(0)
    buffer.truncate()
    async for page in rows:
        for row in page:
            record = result_record(row, task, categories=categories)
            writer.writerow(["" if record[c] is None else record[c] for c in columns])
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
