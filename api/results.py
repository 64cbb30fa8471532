"""A job's results as clients read them: a page in input order, each text's entry."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from api import cursors
from shared.jobs.reads import (
    StoredChunk,
    StoredOutcome,
    count_reduce_parts,
    item_texts,
    list_first_round_chunks,
    list_item_outcomes,
)
from shared.models import Job
from shared.result_schemas import (
    ChunkResult,
    ItemFailure,
    ResultItem,
    ResultPage,
    SentimentResult,
    SummaryResult,
)
from shared.states import TERMINAL_JOB_STATUSES, ItemStatus, JobStatus, Task


def read_page(
    session: Session,
    job: Job,
    *,
    after: int,
    limit: int,
    include_chunks: bool = False,
    include_text: bool = False,
) -> ResultPage:
    """Return the job's results after index `after`, at most `limit`, in input order.

    While the job runs (`partial`), the page holds the texts finished so far up to the first
    one not finished, and `next_cursor` is always set (after the last text returned, or
    where this page started): following it misses nothing and repeats nothing. Once the job
    has ended, `next_cursor` is None on the last page. `job` must have been read before.
    """
    running = JobStatus(job.status) not in TERMINAL_JOB_STATUSES
    rows = list_item_outcomes(
        session, job_id=job.id, after_index=after, limit=limit + 1, finished_only=running
    )
    page, more = rows[:limit], len(rows) > limit
    entries = result_entries(
        session, page, include_chunks=include_chunks, include_text=include_text
    )
    last = page[-1].index if page else after
    return ResultPage(
        job_id=job.id,
        task=Task(job.task),
        status=JobStatus(job.status),
        partial=running,
        items=entries,
        next_cursor=cursors.result_cursor(last) if more or running else None,
    )


def result_entries(
    session: Session,
    rows: list[StoredOutcome],
    *,
    include_chunks: bool = False,
    include_text: bool = False,
) -> list[ResultItem]:
    """Return the entries of these texts (texts neither finished nor failed have none)."""
    ids = [r.item_id for r in rows]
    chunks: dict[int, list[StoredChunk]] = {}
    reduce_parts: dict[int, int] = {}
    if include_chunks:
        for chunk in list_first_round_chunks(session, ids):
            chunks.setdefault(chunk.parent_id, []).append(chunk)
        reduce_parts = count_reduce_parts(session, ids)
    texts = item_texts(session, ids) if include_text else {}
    return [
        item
        for row in rows
        if (
            item := result_item(
                row,
                chunks.get(row.item_id) if include_chunks else None,
                reduce_parts.get(row.item_id, 0) if include_chunks else None,
                texts.get(row.item_id) or None,
            )
        )
        is not None
    ]


def result_item(
    row: StoredOutcome, chunks: list[StoredChunk] | None, reduce_parts: int | None, text: str | None
) -> ResultItem | None:
    """Return a text's result entry; `chunks`, `reduce_parts` and `text` when asked for."""
    parts = [_chunk_result(chunk) for chunk in chunks] if chunks is not None else None
    named: dict[str, Any] = {"index": row.index, "custom_id": row.custom_id, "text": text}
    if (outputs := row.outputs) is not None:
        if "summary_text" in outputs:
            return SummaryResult(
                **named, chunks=parts, reduce_parts=reduce_parts if parts else None, **outputs
            )
        return SentimentResult(**named, chunks=parts, **outputs)
    if row.failure is not None:
        return ItemFailure(**named, error=row.failure, chunks=parts or None)
    return None


def _chunk_result(chunk: StoredChunk) -> ChunkResult:
    outputs = chunk.result if chunk.status == ItemStatus.DONE and chunk.result else {}
    return ChunkResult(
        index=chunk.index,
        start=chunk.start,
        end=chunk.end,
        tokens=chunk.tokens,
        error=chunk.error if chunk.status == ItemStatus.ERROR else None,
        **outputs,
    )
