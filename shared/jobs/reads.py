"""Read jobs and their items for the API and the worker; nothing here writes."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, tuple_
from sqlalchemy.orm import Session

from shared.errors import JobNotFound
from shared.jobs import insights
from shared.jobs.rows import status_values
from shared.models import Job, JobItem
from shared.states import (
    TERMINAL_ITEM_STATUSES,
    TERMINAL_JOB_STATUSES,
    ItemStatus,
    JobStatus,
    Task,
)

# The hot reads' statements are built once: building a select and computing its cache key
# cost more CPU than running it (0.35 against 0.15 ms for the active-jobs count, measured);
# a statement built once keeps its key.
_TENANT_JOB = select(Job).where(
    Job.id == bindparam("job_id"), Job.tenant_id == bindparam("tenant_id"), Job.shadow.is_(False)
)


def get_job(session: Session, *, tenant_id: str, job_id: uuid.UUID) -> Job:
    """Return the tenant's job or raise JobNotFound (shadow jobs are textq's, not theirs)."""
    job = session.scalar(_TENANT_JOB, {"job_id": job_id, "tenant_id": tenant_id})
    if job is None:
        raise JobNotFound(f"No job with id {job_id}.")
    return job


def job_waited_for(session: Session, job: Job) -> Job:
    """Return the job whose items an unfinished job waits for: itself, or once its texts
    are done, the job summarizing its insights."""
    if job.insights is None or job.insights["status"] != insights.SUMMARIZING:
        return job
    child = session.get(Job, uuid.UUID(job.insights["summary_job_id"]))
    return child if child is not None else job


def list_jobs(
    session: Session,
    *,
    tenant_id: str,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None = None,
    status: JobStatus | None = None,
    task: Task | None = None,
) -> list[Job]:
    """Return the tenant's jobs newest first, starting after the (created_at, id) key.

    Jobs textq made for other jobs (summaries of insights) are left out; they are
    readable by id. Shadow jobs (a candidate's runs) are not the tenant's at all.
    """
    query = select(Job).where(
        Job.tenant_id == tenant_id, Job.parent_job_id.is_(None), Job.shadow.is_(False)
    )
    if status is not None:
        query = query.where(Job.status == status.value)
    if task is not None:
        query = query.where(Job.task == task.value)
    if after is not None:
        query = query.where(tuple_(Job.created_at, Job.id) < tuple_(*after))
    query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
    return list(session.scalars(query))


@dataclass(frozen=True)
class StoredOutcome:
    """A text's stored outcome, as clients are shown it (`outputs` and `failure`)."""

    index: int
    status: str
    result: dict[str, Any] | None
    error: str | None
    custom_id: str | None = None
    item_id: int = 0

    @property
    def outputs(self) -> dict[str, Any] | None:
        """Return the task's outputs of a text that is done, or None (not run, or failed)."""
        return self.result if self.status == ItemStatus.DONE and self.result is not None else None

    @property
    def failure(self) -> str | None:
        """Return why this text has no result (an error, or cancellation), or None."""
        if self.status == ItemStatus.ERROR:
            return self.error or "unknown error"
        if self.status == ItemStatus.CANCELLED:
            return self.error or "cancelled before it ran"
        return None


_ITEM_OUTCOMES = (
    select(
        JobItem.idx, JobItem.status, JobItem.result, JobItem.error, JobItem.custom_id, JobItem.id
    )
    .where(
        JobItem.job_id == bindparam("job_id"),
        JobItem.parent_id.is_(None),
        JobItem.idx > bindparam("after_index"),
    )
    .order_by(JobItem.idx)
    .limit(bindparam("limit"))
)


def list_item_outcomes(
    session: Session,
    *,
    job_id: uuid.UUID,
    after_index: int,
    limit: int,
    finished_only: bool = False,
) -> list[StoredOutcome]:
    """Return the index, status, result and error of a job's texts in input order.

    With `finished_only` (a job still running), stop before the first text that has not
    finished: what is returned never changes later, so a cursor after the last one misses
    nothing and repeats nothing. A long text finishes when its chunks are all reduced.
    """
    rows = session.execute(
        _ITEM_OUTCOMES, {"job_id": job_id, "after_index": after_index, "limit": limit}
    ).all()
    outcomes = [StoredOutcome(*row) for row in rows]
    if finished_only:
        for position, outcome in enumerate(outcomes):
            if ItemStatus(outcome.status) not in TERMINAL_ITEM_STATUSES:
                return outcomes[:position]
    return outcomes


@dataclass(frozen=True)
class StoredChunk:
    parent_id: int
    index: int
    start: int
    end: int
    tokens: int
    status: str
    result: dict[str, Any] | None
    error: str | None


def list_first_round_chunks(session: Session, parent_ids: Sequence[int]) -> list[StoredChunk]:
    """Return the chunks the given texts were first split into, in order, with outcomes."""
    if not parent_ids:
        return []
    rows = session.execute(
        select(
            JobItem.parent_id,
            JobItem.idx,
            JobItem.span_start,
            JobItem.span_end,
            JobItem.token_count,
            JobItem.status,
            JobItem.result,
            JobItem.error,
        )
        .where(JobItem.parent_id.in_(list(parent_ids)), JobItem.level == 0)
        .order_by(JobItem.parent_id, JobItem.idx)
    ).all()
    return [StoredChunk(*row) for row in rows]


def count_reduce_parts(session: Session, parent_ids: Sequence[int]) -> dict[int, int]:
    """Return, per text, the parts that summarized its chunks' summaries (rounds after 0)."""
    if not parent_ids:
        return {}
    rows = session.execute(
        select(JobItem.parent_id, func.count())
        .where(JobItem.parent_id.in_(list(parent_ids)), JobItem.level > 0)
        .group_by(JobItem.parent_id)
    ).all()
    return {parent: count for parent, count in rows if parent is not None}


def item_texts(session: Session, item_ids: Sequence[int]) -> dict[int, str]:
    """Return the submitted text of each item (empty for a row refused at upload)."""
    if not item_ids:
        return {}
    rows = session.execute(
        select(JobItem.id, JobItem.input_text).where(JobItem.id.in_(list(item_ids)))
    ).all()
    return {int(item_id): text for item_id, text in rows}


def text_previews(
    session: Session, job_ids: Sequence[uuid.UUID], *, chars: int
) -> dict[uuid.UUID, str]:
    """Return the first `chars` characters of each job's first text (none for empty ones)."""
    if not job_ids:
        return {}
    rows = session.execute(
        select(JobItem.job_id, func.substr(JobItem.input_text, 1, chars)).where(
            JobItem.job_id.in_(list(job_ids)), JobItem.parent_id.is_(None), JobItem.idx == 0
        )
    ).all()
    return {job_id: text for job_id, text in rows if text}


def count_items(session: Session, *, job_id: uuid.UUID) -> dict[str, int]:
    """Return the number of a job's items in each status."""
    return {
        status: count
        for status, count in session.execute(
            select(JobItem.status, func.count())
            .where(JobItem.job_id == job_id)
            .group_by(JobItem.status)
        ).all()
    }


def ended_jobs_among(session: Session, job_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    """Return those of the jobs that have ended (a worker drops their items not yet run)."""
    return set(session.scalars(_ENDED_AMONG, {"job_ids": sorted(set(job_ids))}))


_ENDED_AMONG = select(Job.id).where(
    Job.id.in_(bindparam("job_ids", expanding=True)),
    Job.status.in_(status_values(TERMINAL_JOB_STATUSES)),
)
