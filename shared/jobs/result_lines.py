"""A job's results as JSON Lines, page by page: what an export shows and an output_url gets."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

from shared.db import Database
from shared.jobs.reads import StoredOutcome, list_item_outcomes
from shared.states import Task

PAGE_ROWS = 5000
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


def jsonl_pages(
    db: Database, job_id: uuid.UUID, task: Task, *, categories: bool = False
) -> Iterator[bytes]:
    """Yield the job's results as JSON Lines (UTF-8), one page of rows per chunk, in input order.

    Each page is its own short read: a slow receiver never holds a transaction open.
    """
    after = -1
    while True:
        with db.read() as session:
            rows = list_item_outcomes(session, job_id=job_id, after_index=after, limit=PAGE_ROWS)
        if not rows:
            return
        lines = [
            json.dumps(result_record(row, task, categories=categories), ensure_ascii=False)
            for row in rows
        ]
        yield ("\n".join(lines) + "\n").encode()
        after = rows[-1].index
