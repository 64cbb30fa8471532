"""Retention: find jobs past their tenant's retention or their own expiry (`expires_after_s`),
purge their items, mark them expired."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from shared.errors import InvalidRequest
from shared.jobs import insights
from shared.jobs.rows import status_values
from shared.models import Job, JobItem, Tenant, utcnow
from shared.states import FINISHED_JOB_STATUSES, JobStatus, job_sources

PURGE_SLICE_ROWS = 10_000


def jobs_past_retention(session: Session, *, default_days: int, limit: int) -> list[uuid.UUID]:
    """Return finished jobs past their own expiry, then those older than their tenant's
    retention (0 days: kept forever), `limit` at most."""
    days = func.coalesce(Tenant.retention_days, default_days)
    periods = {default_days, *session.scalars(select(Tenant.retention_days).distinct())}
    found = jobs_past_expiry(session, limit=limit)
    for period in sorted(p for p in periods if p):
        if len(found) >= limit:
            break
        found += session.scalars(
            select(Job.id)
            .outerjoin(Tenant, Tenant.id == Job.tenant_id)
            .where(
                Job.status.in_(status_values(FINISHED_JOB_STATUSES)),
                days == period,
                Job.finished_at < utcnow() - timedelta(days=period),
                Job.id.not_in(found),
            )
            .order_by(Job.finished_at)
            .limit(limit - len(found))
        ).all()
        if len(found) >= limit:
            break
    return found


def jobs_past_expiry(session: Session, *, limit: int) -> list[uuid.UUID]:
    """Return finished jobs whose `expires_after_s` since their end has passed, oldest first."""
    now = utcnow()
    if session.get_bind().dialect.name == "postgresql":
        seconds = func.make_interval(0, 0, 0, 0, 0, 0, Job.expires_after_s)
        due: Any = Job.finished_at + seconds < now
    else:  # SQLite stores UTC text; julianday() reads it as days since 4714 BC
        now_days = now.timestamp() / 86400 + _UNIX_EPOCH_JULIAN_DAY
        due = func.julianday(Job.finished_at) + Job.expires_after_s / 86400.0 < now_days
    return list(
        session.scalars(
            select(Job.id)
            .where(
                Job.expires_after_s.is_not(None),
                Job.status.in_(status_values(FINISHED_JOB_STATUSES)),
                due,
            )
            .order_by(Job.finished_at)
            .limit(limit)
        ).all()
    )


_UNIX_EPOCH_JULIAN_DAY = 2440587.5


def retention_days_of(session: Session, *, tenant_id: str, default_days: int) -> int:
    """Return the days a tenant's finished jobs are kept (0: forever)."""
    days = session.scalar(select(Tenant.retention_days).where(Tenant.id == tenant_id))
    return default_days if days is None else int(days)


def check_expiry_within_retention(
    session: Session, *, tenant_id: str, expires_after_s: int, default_days: int
) -> None:
    """Raise InvalidRequest (422) if `expires_after_s` is past the tenant's retention."""
    days = retention_days_of(session, tenant_id=tenant_id, default_days=default_days)
    if days and expires_after_s > days * 86400:
        raise InvalidRequest(
            f"expires_after_s is {expires_after_s}; the most is {days * 86400} "
            f"(this tenant's retention of {days} days): results are never kept longer",
            errors=[{"field": "expires_after_s", "message": f"at most {days * 86400}"}],
        )


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
