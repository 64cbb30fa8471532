"""Finish jobs whose items all finished, start and settle the summaries of their insights."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from shared.jobs import insights
from shared.jobs.after_commit import announce_finished, count_finished_job, wake_workers
from shared.jobs.feedback import negative_feedback, store_insights, summary_outcomes
from shared.jobs.rows import status_values
from shared.jobs.submit import create_job
from shared.models import JOBS, Job, utcnow
from shared.states import (
    ACTIVE_JOB_STATUSES,
    TERMINAL_JOB_STATUSES,
    JobStatus,
    Task,
    job_sources,
    outcome_status,
)
from shared.webhooks.events import queue_event, terminal_event_kind


def finish_complete_jobs(session: Session, job_ids: Iterable[uuid.UUID]) -> list[uuid.UUID]:
    """Move jobs whose every item has finished to their terminal status; return those ids.

    A job with insights waits instead for a job of its own that summarizes its negative
    feedback (if it has any); that child job, finishing, finishes it.
    """
    complete = session.execute(_COMPLETE_JOBS, {"job_ids": list(job_ids)}).all()
    ending = [
        row for row in complete if row.insights is None or not _waits_for_summaries(session, row)
    ]
    _finish_jobs(session, ending)
    finished = []
    for row in ending:
        finished.append(row.id)
        if row.parent_job_id is not None:
            finished += hand_summaries_to_parent(session, row.id, row.parent_job_id)
    return finished


_FINISHING_COLUMNS = (
    Job.id,
    Job.done_items,
    Job.error_items,
    Job.tenant_id,
    Job.webhook_url,
    Job.webhook_events,
    Job.task,
    Job.created_at,
    Job.started_at,
    Job.priority,
    Job.insights,
    Job.parent_job_id,
    Job.shadow,
)
# Built once, as every record runs it (see shared.jobs.reads: building costs more than running).
_COMPLETE_JOBS = (
    select(*_FINISHING_COLUMNS)
    .where(
        Job.id.in_(bindparam("job_ids", expanding=True)),
        Job.status.in_(status_values(ACTIVE_JOB_STATUSES)),
        Job.done_items + Job.error_items >= Job.total_items,
    )
    .order_by(Job.id)
    .with_for_update()
)


def _finish_jobs(session: Session, rows: Sequence[Any]) -> None:
    """End locked jobs whose items all finished: status, events, announcement, metrics.

    A statement per terminal status and one announcement for them all, however many jobs
    (one-text jobs end many to a record).
    """
    if not rows:
        return
    now = utcnow()
    targets = {row.id: outcome_status(done=row.done_items, errored=row.error_items) for row in rows}
    for target in sorted(set(targets.values()), key=lambda status: status.value):
        ending = [job_id for job_id, status in targets.items() if status is target]
        session.execute(_END_JOBS[target], {"job_ids": ending, "now": now})
        # A job object the session holds (an upload's own, ended at once) says so too.
        for job_id in ending:
            if (held := session.identity_map.get(identity_key(Job, job_id))) is not None:
                set_committed_value(held, "status", target.value)
                set_committed_value(held, "finished_at", now)
    for row in rows:
        queue_event(session, row, terminal_event_kind(targets[row.id]))
        # A summary or shadow job textq made is not a job anyone submitted.
        if row.parent_job_id is None and not row.shadow:
            count_finished_job(
                session, row.task, targets[row.id], row.created_at, row.started_at, now
            )
    announce_finished(session, *[row.id for row in rows])


# By the status the jobs end in: from any status that may move to it.
_END_JOBS = {
    target: update(JOBS)
    .where(
        Job.id.in_(bindparam("job_ids", expanding=True)),
        Job.status.in_(status_values(job_sources(target))),
    )
    # On the table, the session's objects are not brought up to date: `_finish_jobs` does.
    .values(status=target.value, finished_at=bindparam("now"))
    for target in TERMINAL_JOB_STATUSES
}


def _waits_for_summaries(session: Session, row: Any) -> bool:
    """Say whether a job whose texts all finished waits for its feedback's summaries,
    starting them if its texts just finished. Its child job, finishing, finishes it."""
    status = row.insights["status"]
    if status == insights.COUNTING:
        return _summarize_feedback(session, row)
    return bool(status == insights.SUMMARIZING)


def _summarize_feedback(session: Session, row: Any) -> bool:
    """Start summarizing a finished job's negative feedback; False if it has none.

    The summaries are a summarization job of the same tenant, one text per category with
    negative feedback, claimed by summarization workers like any job.
    """
    state = row.insights
    feedback = negative_feedback(session, row.id, max_chars=insights.summarizer_of(state).max_chars)
    if not feedback:
        store_insights(session, row.id, insights.settled(state, {}))
        return False
    child = create_job(
        session,
        tenant_id=row.tenant_id,
        task=Task.SUMMARIZE,
        model=insights.summarizer_of(state).model,
        model_name=insights.summarizer_of(state).name,
        options={},
        texts=list(feedback.values()),
        custom_ids=list(feedback),
        parent_job_id=row.id,
        priority=row.priority,
    )
    store_insights(session, row.id, insights.summarizing(state, summary_job_id=str(child.id)))
    wake_workers(session, Task.SUMMARIZE, model_name=child.model_name)
    return True


def hand_summaries_to_parent(
    session: Session, child_id: uuid.UUID, parent_id: uuid.UUID, *, missing: str | None = None
) -> list[uuid.UUID]:
    """Copy an ended child job's summaries into its parent's insights and finish the parent.

    Return the parent's id if it finished. Runs in the transaction that ended the child,
    which holds the child's row: the parent's is locked after it, as everywhere.
    """
    parent = session.execute(
        select(Job.insights, Job.status).where(Job.id == parent_id).with_for_update()
    ).first()
    if (
        parent is None
        or parent.insights is None
        or JobStatus(parent.status) not in ACTIVE_JOB_STATUSES
    ):
        return []
    store_insights(
        session,
        parent_id,
        insights.settled(parent.insights, summary_outcomes(session, child_id), missing=missing),
    )
    return finish_complete_jobs(session, [parent_id])
