"""Retention: find jobs past their tenant's retention, purge their items, mark them expired."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from shared.jobs import insights
from shared.jobs.rows import status_values
from shared.models import Job, JobItem, Tenant, utcnow
from shared.states import FINISHED_JOB_STATUSES, JobStatus, job_sources

PURGE_SLICE_ROWS = 10_000


def jobs_past_retention(session: Session, *, default_days: int, limit: int) -> list[uuid.UUID]:
    """Return finished jobs older than their tenant's retention (0 days: kept forever)."""
    days = func.coalesce(Tenant.retention_days, default_days)
    periods = {default_days, *session.scalars(select(Tenant.retention_days).distinct())}
    found: list[uuid.UUID] = []
    for period in sorted(p for p in periods if p):
        found += session.scalars(
            select(Job.id)
            .outerjoin(Tenant, Tenant.id == Job.tenant_id)
            .where(
                Job.status.in_(status_values(FINISHED_JOB_STATUSES)),
                days == period,
                Job.finished_at < utcnow() - timedelta(days=period),
            )
            .order_by(Job.finished_at)
            .limit(limit - len(found))
        ).all()
        if len(found) >= limit:
            break
    return found


def purge_items(session: Session, job_id: uuid.UUID) -> int:
    """Delete up to PURGE_SLICE_ROWS of a job's items; return how many (0: none left)."""
    rows_slice = select(JobItem.id).where(JobItem.job_id == job_id).limit(PURGE_SLICE_ROWS)
    result = session.execute(delete(JobItem).where(JobItem.id.in_(rows_slice.scalar_subquery())))
    return int(result.rowcount)  # type: ignore[attr-defined]


def mark_expired(session: Session, job_id: uuid.UUID) -> None:
    """Record that a job's data is gone; its status, counts and timings stay readable.

    Its insights keep their counts and lose their summaries, which quote the texts.
    """
    state = session.scalar(select(Job.insights).where(Job.id == job_id))
    values: dict[str, Any] = {"status": JobStatus.EXPIRED.value, "input_meta": None}
    if state is not None:
        values["insights"] = insights.without_summaries(state)
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(status_values(job_sources(JobStatus.EXPIRED))))
        .values(**values)
    )
