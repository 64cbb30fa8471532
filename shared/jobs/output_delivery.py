"""Every query about output deliveries: a job's results PUT to its `output_url` once it ends.

Modelled on webhook events (shared/webhooks/events.py): a row written with the job, due once
the job has ended, leased by the webhooks process, retried on the webhook schedule, each
attempt counted. The job's `output` column mirrors the row for clients (host only: the URL
is presigned, its query string a secret).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from shared.jobs.rows import status_values
from shared.models import Job, OutputDelivery, utcnow
from shared.states import TERMINAL_JOB_STATUSES
from shared.webhooks.events import queue_output_event
from shared.webhooks.targets import url_host

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


def add_output_delivery(session: Session, job: Job, *, url: str, gzip: bool) -> None:
    """Write the delivery of a new job's results, due once the job ends (same transaction)."""
    session.add(
        OutputDelivery(
            job_id=job.id,
            tenant_id=job.tenant_id,
            url=url,
            gzip=gzip,
            status=PENDING,
            attempts=0,
            created_at=utcnow(),
        )
    )
    job.output = _view(url=url, gzip=gzip, status=PENDING, attempts=0)


def rearm_output_delivery(session: Session, job_id: uuid.UUID) -> None:
    """Make a retried job's delivery due again when it ends anew, with a fresh schedule: the
    results sent before are out of date. (No row: the job has no `output_url`.)"""
    delivery = session.get(OutputDelivery, job_id, with_for_update=True)
    job = session.get(Job, job_id)
    if delivery is None or job is None:
        return
    delivery.status, delivery.attempts, delivery.last_error = PENDING, 0, None
    delivery.next_attempt_at = delivery.lease_expires_at = delivery.delivered_at = None
    job.output = _view(url=delivery.url, gzip=delivery.gzip, status=PENDING, attempts=0)


def _view(
    *,
    url: str,
    gzip: bool,
    status: str,
    attempts: int,
    last_error: str | None = None,
    delivered_at: datetime | None = None,
) -> dict[str, Any]:
    """Return what a job shows of its delivery: never the URL itself."""
    return {
        "url_host": url_host(url),
        "gzip": gzip,
        "status": status,
        "attempts": attempts,
        "last_error": last_error,
        "delivered_at": delivered_at.isoformat() if delivered_at else None,
    }


def _due(now: datetime) -> Any:
    ended = select(Job.id).where(Job.status.in_(status_values(TERMINAL_JOB_STATUSES)))
    return (
        OutputDelivery.status == PENDING,
        OutputDelivery.job_id.in_(ended.scalar_subquery()),
        or_(OutputDelivery.next_attempt_at.is_(None), OutputDelivery.next_attempt_at <= now),
        or_(OutputDelivery.lease_expires_at.is_(None), OutputDelivery.lease_expires_at < now),
    )


def has_due_deliveries(session: Session) -> bool:
    """Return whether any delivery of an ended job is due (a read, before taking locks)."""
    found = session.scalar(select(OutputDelivery.job_id).where(*_due(utcnow())).limit(1))
    return found is not None


def claim_due_deliveries(session: Session, *, limit: int, lease_s: float) -> list[uuid.UUID]:
    """Lease up to `limit` due deliveries of ended jobs; return their job ids."""
    now = utcnow()
    due = session.scalars(
        select(OutputDelivery.job_id)
        .where(*_due(now))
        .order_by(OutputDelivery.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if due:
        session.execute(
            update(OutputDelivery)
            .where(OutputDelivery.job_id.in_(due))
            .values(lease_expires_at=now + timedelta(seconds=lease_s))
        )
    return list(due)


def release_deliveries(session: Session, job_ids: list[uuid.UUID]) -> None:
    """Hand back leases of deliveries whose attempt was never published: due again at once."""
    session.execute(
        update(OutputDelivery)
        .where(OutputDelivery.job_id.in_(job_ids))
        .values(lease_expires_at=None)
    )


@dataclass(frozen=True)
class PendingOutput:
    """What one attempt needs: where (a secret URL), how, and the ended job."""

    url: str
    gzip: bool
    attempts: int
    job: Job


def load_pending(session: Session, job_id: uuid.UUID) -> PendingOutput | None:
    """Return a pending delivery with its job, or None if it is not pending."""
    delivery = session.get(OutputDelivery, job_id)
    if delivery is None or delivery.status != PENDING:
        return None
    job = session.get(Job, job_id)
    assert job is not None  # deliveries go with their job
    return PendingOutput(url=delivery.url, gzip=delivery.gzip, attempts=delivery.attempts, job=job)


def record_attempt(
    session: Session,
    *,
    job_id: uuid.UUID,
    outcome: str,
    error: str | None,
    next_attempt_at: datetime | None = None,
) -> None:
    """Record one attempt: delivered, failed for good, or pending until `next_attempt_at`.

    Mirrors it on the job, and on a final outcome queues `output.delivered` or
    `output.failed` for the job's webhook, in the same transaction.
    """
    delivery = session.get(OutputDelivery, job_id, with_for_update=True)
    job = session.get(Job, job_id)
    assert delivery is not None and job is not None
    delivery.attempts += 1
    delivery.status = outcome
    delivery.last_error = error
    delivery.next_attempt_at = next_attempt_at
    delivery.lease_expires_at = None
    if outcome == DELIVERED:
        delivery.delivered_at = utcnow()
    job.output = _view(
        url=delivery.url,
        gzip=delivery.gzip,
        status=outcome,
        attempts=delivery.attempts,
        last_error=error,
        delivered_at=delivery.delivered_at,
    )
    if outcome in (DELIVERED, FAILED):
        queue_output_event(session, job, delivered=outcome == DELIVERED)
    session.flush()
