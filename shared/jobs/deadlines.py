"""Job deadlines: the claims' condition, and ending the items not started before one.

A deadline is a time by which a job's items must have started. Past it, claims skip the
job (`before_deadline`), and the sweeper ends its pending items with `NOT_STARTED`
(`expire_past_deadlines`); items already running finish as usual. The job then ends
`partial` or `failed` by the usual rules (shared/jobs/lifecycle.py). How a deadline is
written and checked: `shared.job_options.parse_deadline`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.jobs.outcomes import ItemRef, store_outcomes
from shared.jobs.rows import status_values
from shared.jobs.work import Outcome
from shared.models import Job, JobItem
from shared.states import ACTIVE_JOB_STATUSES, ItemStatus

NOT_STARTED = "not started before the deadline"


def before_deadline(clock: Any) -> Any:
    """Return the condition on jobs: no deadline, or one still ahead of `clock`."""
    return Job.deadline.is_(None) | (Job.deadline > clock)


def expire_past_deadlines(session: Session, *, clock: Any, limit: int = 1000) -> int:
    """End pending items of active jobs whose deadline passed with `NOT_STARTED`; return
    how many ended.

    Pending items of those jobs are ended together (up to `limit`, oldest first): texts
    never claimed, chunks of a long text not run yet (their text then fails, naming the
    chunk, as any failed chunk makes it), and a summary's next round. Items a worker is
    claiming right now are skipped (SKIP LOCKED) and finish as usual. The outcomes count
    into the jobs and finish them (shared/jobs/outcomes.py).
    """
    past = select(Job.id).where(
        Job.deadline.is_not(None),
        Job.deadline <= clock,
        Job.status.in_(status_values(ACTIVE_JOB_STATUSES)),
    )
    rows = session.execute(
        select(JobItem.id, JobItem.job_id, JobItem.parent_id, JobItem.level)
        .where(JobItem.job_id.in_(past), JobItem.status == ItemStatus.PENDING.value)
        .order_by(JobItem.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    store_outcomes(
        session,
        [Outcome(item_id=row.id, error=NOT_STARTED) for row in rows],
        {row.id: ItemRef(row.job_id, row.parent_id, row.level) for row in rows},
    )
    return len(rows)
