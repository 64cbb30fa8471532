"""Cancel and delete jobs on request, and end the items of jobs that ended."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from sqlalchemy import Text, case, cast, delete, func, literal, null, select, update
from sqlalchemy.orm import Session, aliased

from shared.errors import JobAlreadyFinished, JobNotFound
from shared.jobs import insights
from shared.jobs.after_commit import announce_finished, count_finished_job
from shared.jobs.feedback import lock_child_job, store_insights, summary_outcomes
from shared.jobs.lifecycle import hand_summaries_to_parent
from shared.jobs.reads import get_job
from shared.jobs.rows import status_values
from shared.models import IdempotencyKey, Job, JobItem, WebhookAttempt, WebhookEvent, utcnow
from shared.states import ACTIVE_JOB_STATUSES, TERMINAL_JOB_STATUSES, ItemStatus, JobStatus
from shared.webhooks.events import queue_event


def cancel_job(session: Session, *, tenant_id: str, job_id: uuid.UUID) -> Job:
    """Cancel a job now: its waiting and pending items end cancelled, the job too.

    Items a worker is running keep running: their batch finishes and its results are kept.
    The job summarizing a job's insights is cancelled with it; cancelled on its own, its
    parent finishes with the summaries written so far.
    """
    # A child job's row is locked before its parent's, in the order finishing them takes.
    child = lock_child_job(session, job_id)
    job = session.scalar(
        select(Job)
        .where(Job.id == job_id, Job.tenant_id == tenant_id)
        .with_for_update()
        # Read afresh under the lock, even if this session read the job before.
        .execution_options(populate_existing=True)
    )
    if job is None:
        raise JobNotFound(f"No job with id {job_id}.")
    if child is None:
        # Made while this waited for the job's row. Waiting for it now would invert the
        # order finishing takes, so a child locked by its own finish is left to it: that
        # finish then finds its parent ended and changes nothing more.
        child = lock_child_job(session, job_id, skip_locked=True)
    if JobStatus(job.status) in TERMINAL_JOB_STATUSES:
        raise JobAlreadyFinished(
            f"Job {job.id} already finished as {job.status}; there is nothing to cancel."
        )
    _cancel_now(session, job)
    if child is not None and JobStatus(child.status) not in TERMINAL_JOB_STATUSES:
        _cancel_now(session, child)
    if job.insights is not None and job.insights["status"] != insights.DONE:
        outcomes = summary_outcomes(session, child.id) if child is not None else {}
        state = insights.settled(job.insights, outcomes, missing=CANCELLED_BEFORE_SUMMARY)
        store_insights(session, job.id, state)
    if job.parent_job_id is not None:
        hand_summaries_to_parent(
            session, job.id, job.parent_job_id, missing=CANCELLED_BEFORE_SUMMARY
        )
    session.flush()
    session.refresh(job)
    return job


CANCELLED_BEFORE_SUMMARY = "cancelled before it was summarized"


def _cancel_now(session: Session, job: Job) -> None:
    """End a locked, unfinished job cancelled, with its items not yet claimed."""
    now = utcnow()
    # Rows a worker is claiming right now are skipped: waiting for them while holding the
    # job's row would deadlock with that claim. The worker learns of the cancellation at
    # its next record and its hand-back ends them cancelled.
    unclaimed = (
        select(JobItem.id)
        .where(
            JobItem.job_id == job.id,
            JobItem.status.in_(status_values({ItemStatus.PENDING, ItemStatus.WAITING})),
        )
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    session.execute(
        update(JobItem)
        .where(JobItem.id.in_(unclaimed))
        .values(
            status=ItemStatus.CANCELLED.value,
            finished_at=now,
            open_parts=None,
            error=why_cancelled(),
        )
    )
    session.execute(
        update(Job)
        .where(Job.id == job.id)
        .values(status=JobStatus.CANCELLED.value, finished_at=now)
    )
    queue_event(session, job, "completed")
    announce_finished(session, job.id)
    if job.parent_job_id is None:
        count_finished_job(
            session, job.task, JobStatus.CANCELLED, job.created_at, job.started_at, now
        )


def cancel_items_of_ended_jobs(session: Session, which: Any) -> None:
    ended = select(Job.id).where(Job.status.in_(status_values(TERMINAL_JOB_STATUSES)))
    session.execute(
        update(JobItem)
        .where(which, JobItem.job_id.in_(ended))
        .values(
            status=ItemStatus.CANCELLED.value,
            claim_token=None,
            lease_expires_at=None,
            finished_at=utcnow(),
            error=why_cancelled(),
        )
    )


def why_cancelled() -> Any:
    """Return SQL for what a text being cancelled had done: None if it never ran.

    A long text split into chunks did run, whether none, some or all of its chunks ran:
    "cancelled before it ran" would say otherwise. Chunks a worker was running go on to
    finish after the cancel; their record sets this again on their cancelled text, so that
    it tells what was finished in the end, not at the cancel.
    """
    chunk = aliased(JobItem)
    first_round = (chunk.parent_id == JobItem.id) & (chunk.level == 0)
    chunk_count = select(func.count()).where(first_round).scalar_subquery()
    chunks = cast(chunk_count, Text)
    finished = status_values({ItemStatus.DONE, ItemStatus.ERROR})
    ran_count = (
        select(func.count()).where(first_round, chunk.status.in_(finished)).scalar_subquery()
    )
    ran = cast(ran_count, Text)
    split = JobItem.status.in_(status_values({ItemStatus.WAITING, ItemStatus.CANCELLED}))
    all_ran = (
        literal("cancelled after its ")
        + chunks
        + literal(" chunks ran, before their summaries were combined")
    )
    return case(
        (JobItem.parent_id.is_not(None), null()),
        (JobItem.level > 0, all_ran),
        (split & (chunk_count == 0), JobItem.error),
        (
            split & (ran_count == 0),
            literal("cancelled after it was split into ")
            + chunks
            + literal(" chunks, before any of them finished"),
        ),
        (split & (ran_count == chunk_count), all_ran),
        (
            split,
            literal("cancelled while its chunks ran: ")
            + ran
            + literal(" of ")
            + chunks
            + literal(" had finished"),
        ),
        else_=null(),
    )


def delete_job(session: Session, *, tenant_id: str, job_id: uuid.UUID) -> None:
    """Delete a job and everything of it now: items, webhook events and attempts, keys.

    The job summarizing its insights goes with it (the foreign key cascades). A summary
    job deleted on its own is cancelled first, so that its parent finishes.
    """
    # The child's row first, as finishing it locks them (the cascade deletes it after).
    lock_child_job(session, job_id)
    job = get_job(session, tenant_id=tenant_id, job_id=job_id)
    if job.parent_job_id is not None and JobStatus(job.status) in ACTIVE_JOB_STATUSES:
        # Having finished since it was read, it has already handed its summaries over.
        with contextlib.suppress(JobAlreadyFinished):
            cancel_job(session, tenant_id=tenant_id, job_id=job_id)
    events = select(WebhookEvent.id).where(WebhookEvent.job_id == job.id)
    session.execute(delete(WebhookAttempt).where(WebhookAttempt.event_id.in_(events)))
    session.execute(delete(WebhookEvent).where(WebhookEvent.job_id == job.id))
    session.execute(delete(IdempotencyKey).where(IdempotencyKey.job_id == job.id))
    session.execute(delete(JobItem).where(JobItem.job_id == job.id))
    session.execute(delete(Job).where(Job.id == job.id))
