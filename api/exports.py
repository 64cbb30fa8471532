"""Stream all of a job's results as JSON Lines or CSV, a page of rows at a time."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

from shared.db import Database
from shared.jobs.reads import StoredOutcome, list_item_outcomes
from shared.states import Task

EXPORT_PAGE_ROWS = 5000
MEDIA_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}
OUTPUT_COLUMNS = {Task.SENTIMENT: ["label", "score"], Task.SUMMARIZE: ["summary_text"]}
# Sentiment jobs with categories: every line has these too (empty for a failed text).
CATEGORY_COLUMNS = ["category", "category_score"]


def result_record(row: StoredOutcome, task: Task, *, categories: bool = False) -> dict[str, Any]:
    """Return one result line: index, custom id, the task's outputs, and the error (or None)."""
    record: dict[str, Any] = {"index": row.index, "custom_id": row.custom_id}
    outputs = row.outputs or {}
    if task is Task.SENTIMENT:
        record |= {
            "label": outputs.get("label"),
            "score": outputs.get("score"),
            "scores": outputs.get("scores"),
        }
        if categories:
            record |= {column: outputs.get(column) for column in CATEGORY_COLUMNS}
    else:
        record["summary_text"] = outputs.get("summary_text")
    record["error"] = row.failure
    return record


def _pages(db: Database, job_id: uuid.UUID) -> Iterator[list[StoredOutcome]]:
    after = -1
    while True:
        # A short read per page: a slow client never holds a transaction open.
        with db.read() as session:
            rows = list_item_outcomes(
                session, job_id=job_id, after_index=after, limit=EXPORT_PAGE_ROWS
            )
        if not rows:
            return
        yield rows
        after = rows[-1].index


def stream_jsonl(
    db: Database, job_id: uuid.UUID, task: Task, *, categories: bool = False
) -> Iterator[bytes]:
    """Yield the job's results as JSON Lines, in input order (with `category` and
    `category_score` when the job has categories)."""
    for rows in _pages(db, job_id):
        lines = [
            json.dumps(result_record(row, task, categories=categories), ensure_ascii=False)
            for row in rows
        ]
        yield ("\n".join(lines) + "\n").encode()


def stream_csv(
    db: Database, job_id: uuid.UUID, task: Task, *, categories: bool = False
) -> Iterator[bytes]:
    """Yield the job's results as CSV with a header row, in input order (with `category`
    and `category_score` columns when the job has categories)."""
    outputs = [*OUTPUT_COLUMNS[task], *(CATEGORY_COLUMNS if categories else [])]
    columns = ["index", "custom_id", *outputs, "error"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for rows in _pages(db, job_id):
        for row in rows:
            record = result_record(row, task, categories=categories)
            writer.writerow(["" if record[c] is None else record[c] for c in columns])
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode()
