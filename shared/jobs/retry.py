"""Run a finished job's failed items again, as new attempts of the same items."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from shared.errors import JobNotFound, NothingToRetry
from shared.jobs.after_commit import wake_workers
from shared.jobs.deadlines import NOT_STARTED
from shared.jobs.output_delivery import rearm_output_delivery
from shared.models import Job, JobItem, utcnow
from shared.states import RETRYABLE_JOB_STATUSES, ItemStatus, JobStatus, Task


def retry_job(
    session: Session,
    *,
    tenant_id: str,
    job_id: uuid.UUID,
    deadline: datetime | None = None,
) -> Job:
    """Put a partial or failed job's failed texts back in the queue; return the job, running.

    Each failed text runs again as a new attempt of the same item: its error is cleared,
    its attempt count kept (the next claim adds one), so the item's history stays honest.
    Deadline-expired texts are failed texts like any other. The job's counters go back by
    the texts retried, its status to `running` (`finished_at` cleared, `started_at` kept);
    when they finish it ends again by the usual rules, and a new finished event is queued
    for its webhook (a new `webhook-id`: it reports a new end). The workers' doorbell rings
    after commit.

    A long text that failed because of some of its chunks retries only those chunks: the
    chunks that succeeded hold results of the same text by the same model and options, so
    running them again would cost the same work for the same answer, and a text's result
    is built only once every chunk of its round is done, whichever attempt did each. A
    text that failed on its own (before it was split, or in a reduce round that fit one
    window) runs again from where it stood.

    Attempts count claims: a retried text that was claimed before goes out, as a text
    whose worker was lost does, in the small groups of its history (shared/jobs/claims.py),
    and one already at TEXTQ_MAX_ATTEMPTS is given up at once if its worker is lost again.
    Texts that expired at a deadline were never claimed and go out as fresh ones.

    `deadline` replaces the job's; without one the job keeps its own, which must not have
    passed. Raises JobNotFound, and NothingToRetry (409) saying why and what is accepted:
    a job not partial or failed, one with insights or made for another job's insights,
    one whose deadline passed with no new one given.
    """
    job = session.scalar(
        select(Job)
        .where(Job.id == job_id, Job.tenant_id == tenant_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if job is None:
        raise JobNotFound(f"No job with id {job_id}.")
    _refuse_unless_retryable(job, deadline)
    texts = session.execute(
        select(JobItem.id, JobItem.level).where(
            JobItem.job_id == job.id,
            JobItem.parent_id.is_(None),
            JobItem.status == ItemStatus.ERROR.value,
            # A row refused as input (blank, a repeated id) never ran and would be refused
            # again: only texts a worker took, or that a deadline ended, run again.
            or_(JobItem.attempts > 0, JobItem.error == NOT_STARTED),
        )
    ).all()
    if not texts:
        raise NothingToRetry(
            f"Job {job.id} is {job.status}, but its only failures are rows refused as input "
            "(blank texts, repeated ids), which a retry would refuse again: fix those rows "
            "and submit them as a new job.",
            job_status=job.status,
        )
    failed_chunks = _failed_chunks_per_text(session, job.id)
    by_chunks = {text.id for text in texts if text.id in failed_chunks}
    _repend_chunks(session, job.id)
    if by_chunks:
        session.execute(
            update(JobItem),
            [
                {
                    "id": text_id,
                    "status": ItemStatus.WAITING.value,
                    "open_parts": failed_chunks[text_id],
                    "error": None,
                    "finished_at": None,
                }
                for text_id in sorted(by_chunks)
            ],
        )
    whole = [text.id for text in texts if text.id not in by_chunks]
    if whole:
        _back_to_pending(session, JobItem.id.in_(whole))
    values: dict[str, Any] = {
        "status": JobStatus.RUNNING.value,
        "finished_at": None,
        "error_items": Job.error_items - len(texts),
        "done_parts": Job.done_parts - sum(failed_chunks[text_id] for text_id in by_chunks),
    }
    if deadline is not None:
        values["deadline"] = deadline
    session.execute(update(Job).where(Job.id == job.id).values(**values))
    rearm_output_delivery(session, job.id)
    wake_workers(session, Task(job.task), model_name=job.model_name, job_id=job.id)
    session.flush()
    session.refresh(job)
    return job


def _refuse_unless_retryable(job: Job, deadline: datetime | None) -> None:
    """Raise NothingToRetry, saying why and what would be accepted, unless `job` may retry."""
    status = JobStatus(job.status)
    if status not in RETRYABLE_JOB_STATUSES:
        why = {
            JobStatus.QUEUED: "has not finished yet: retry it once it has ended partial or failed",
            JobStatus.RUNNING: f"is still running ({job.done_items + job.error_items} of "
            f"{job.total_items} texts finished): retry it once it has ended partial or failed",
            JobStatus.SUCCEEDED: "succeeded: none of its texts failed, so there is nothing "
            "to retry",
            JobStatus.CANCELLED: "was cancelled: a cancelled job is not run again; submit "
            "its texts as a new job",
            JobStatus.EXPIRED: "expired: its texts were purged after the retention period",
        }[status]
        raise NothingToRetry(
            f"Job {job.id} {why}. Only a partial or failed job can be retried.",
            job_status=status.value,
        )
    if job.parent_job_id is not None:
        raise NothingToRetry(
            f"Job {job.id} summarizes the insights of job {job.parent_job_id}; it is not "
            "retried on its own.",
            job_status=status.value,
        )
    if job.insights is not None:
        raise NothingToRetry(
            f"Job {job.id} has insights, summarized from its texts as they ended; it is not "
            "retried. Submit its failed texts as a new job.",
            job_status=status.value,
        )
    if deadline is None and job.deadline is not None and job.deadline <= utcnow():
        raise NothingToRetry(
            f"Job {job.id}'s deadline passed at {job.deadline:%Y-%m-%dT%H:%M:%SZ}: its texts "
            'would not start again. Give a new one: {"deadline": "2026-12-01T17:30:00Z"} '
            "(textq retry JOB --deadline 2026-12-01T17:30:00Z).",
            job_status=status.value,
        )


def _failed_chunks_per_text(session: Session, job_id: uuid.UUID) -> Counter[int]:
    """Return, per failed text, how many chunks of its last round failed."""
    text = aliased(JobItem)
    rows = session.execute(
        select(JobItem.parent_id, func.count())
        .join(text, text.id == JobItem.parent_id)
        .where(_failed_chunk(text, job_id))
        .group_by(JobItem.parent_id)
    ).all()
    return Counter({int(parent_id or 0): int(count) for parent_id, count in rows})


def _failed_chunk(text: Any, job_id: uuid.UUID) -> ColumnElement[bool]:
    """Return the condition: a failed chunk of the round its failed text stopped in."""
    return and_(
        JobItem.job_id == job_id,
        JobItem.status == ItemStatus.ERROR.value,
        JobItem.level == text.level,
        text.status == ItemStatus.ERROR.value,
        text.parent_id.is_(None),
    )


def _repend_chunks(session: Session, job_id: uuid.UUID) -> None:
    """Put the failed chunks of the last round of failed texts back in the queue."""
    text = aliased(JobItem)
    chunk_ids = (
        select(JobItem.id)
        .join(text, text.id == JobItem.parent_id)
        .where(_failed_chunk(text, job_id))
        .scalar_subquery()
    )
    _back_to_pending(session, JobItem.id.in_(chunk_ids))


def _back_to_pending(session: Session, which: Any) -> None:
    """Make the items `which` selects pending again, as if never run: no result, no error."""
    session.execute(
        update(JobItem)
        .where(which)
        .values(
            status=ItemStatus.PENDING.value,
            error=None,
            result=None,
            finished_at=None,
            claim_token=None,
            lease_expires_at=None,
        )
    )
