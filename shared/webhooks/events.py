"""Every query about webhooks: events queued with job changes, their delivery, secrets."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from shared.models import (
    DisabledWebhookUrl,
    Job,
    WebhookAttempt,
    WebhookEvent,
    WebhookSecret,
    utcnow,
)
from shared.states import JobStatus
from shared.webhooks import signing

EVENT_KINDS = ("completed", "failed", "progress")
DEFAULT_EVENT_KINDS = ["completed", "failed"]
PENDING, DELIVERED, FAILED, DISABLED = "pending", "delivered", "failed", "disabled"


def terminal_event_kind(status: JobStatus) -> str:
    """Return the event a job's terminal status is announced as."""
    return "failed" if status is JobStatus.FAILED else "completed"


def queue_event(session: Session, job: Any, kind: str) -> None:
    """Add an event for a job if it has a webhook that asked for this kind of event.

    Written in the transaction of the change it reports: the event exists if and only if
    the change does.
    """
    if not job.webhook_url or kind not in (job.webhook_events or DEFAULT_EVENT_KINDS):
        return
    session.add(
        WebhookEvent(
            id=f"msg_{uuid.uuid4().hex}",
            tenant_id=job.tenant_id,
            job_id=job.id,
            type=f"job.{kind}",
            url=job.webhook_url,
            status=PENDING,
            attempts=0,
            next_attempt_at=utcnow(),
        )
    )


def queue_output_event(session: Session, job: Any, *, delivered: bool) -> None:
    """Add `output.delivered` or `output.failed` for a job that has a webhook (any events).

    A job with both an output_url and a webhook is told how its delivery ended whatever
    events it chose: it is the one answer to a request it made.
    """
    if not job.webhook_url:
        return
    session.add(
        WebhookEvent(
            id=f"msg_{uuid.uuid4().hex}",
            tenant_id=job.tenant_id,
            job_id=job.id,
            type="output.delivered" if delivered else "output.failed",
            url=job.webhook_url,
            status=PENDING,
            attempts=0,
            next_attempt_at=utcnow(),
        )
    )


def has_due_events(session: Session) -> bool:
    """Return whether any event's next attempt is due (a read, before taking write locks)."""
    due = session.scalar(
        select(WebhookEvent.id)
        .where(WebhookEvent.status == PENDING, WebhookEvent.next_attempt_at <= utcnow())
        .limit(1)
    )
    return due is not None


def claim_due_events(session: Session, *, limit: int, lease_s: float) -> list[str]:
    """Lease up to `limit` events whose next attempt is due; return their ids."""
    now = utcnow()
    due = session.scalars(
        select(WebhookEvent.id)
        .where(
            WebhookEvent.status == PENDING,
            WebhookEvent.next_attempt_at <= now,
            or_(WebhookEvent.lease_expires_at.is_(None), WebhookEvent.lease_expires_at < now),
        )
        .order_by(WebhookEvent.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if due:
        session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id.in_(due))
            .values(lease_expires_at=now + timedelta(seconds=lease_s))
        )
    return list(due)


def release_events(session: Session, event_ids: list[str]) -> None:
    """Hand back leases of events whose attempt was never published: due again at once."""
    session.execute(
        update(WebhookEvent).where(WebhookEvent.id.in_(event_ids)).values(lease_expires_at=None)
    )


@dataclass(frozen=True)
class Delivery:
    """What one attempt at an event needs: where, what, and with which secrets."""

    event_id: str
    event_type: str
    occurred_at: datetime
    url: str
    attempts: int
    job: Job
    secrets: list[str]
    url_disabled: bool


def load_delivery(session: Session, event_id: str) -> Delivery | None:
    """Return a pending event with its job and the tenant's secrets, or None if not pending."""
    event = session.get(WebhookEvent, event_id)
    if event is None or event.status != PENDING:
        return None
    job = session.get(Job, event.job_id)
    assert job is not None  # events go with their job
    disabled = session.get(DisabledWebhookUrl, (event.tenant_id, event.url)) is not None
    return Delivery(
        event_id=event.id,
        event_type=event.type,
        occurred_at=event.created_at,
        url=event.url,
        attempts=event.attempts,
        job=job,
        secrets=secrets_in_use(session, event.tenant_id),
        url_disabled=disabled,
    )


def record_attempt(
    session: Session,
    *,
    event_id: str,
    status_code: int | None,
    latency_ms: int,
    error: str | None,
    outcome: str,
    next_attempt_at: datetime | None = None,
) -> None:
    """Record one attempt and what follows: delivered, retry at `next_attempt_at`, or stop."""
    session.add(
        WebhookAttempt(
            event_id=event_id, status_code=status_code, latency_ms=latency_ms, error=error
        )
    )
    session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id == event_id)
        .values(
            status=outcome,
            attempts=WebhookEvent.attempts + 1,
            next_attempt_at=next_attempt_at,
            lease_expires_at=None,
        )
    )


def disable_url(session: Session, *, tenant_id: str, url: str) -> None:
    """Stop sending to a URL whose receiver answered 410 Gone."""
    dialect = session.get_bind().dialect.name
    insert_into = postgresql_insert if dialect == "postgresql" else sqlite_insert
    session.execute(
        insert_into(DisabledWebhookUrl)
        .values(tenant_id=tenant_id, url=url, disabled_at=utcnow())
        .on_conflict_do_nothing()
    )


def mark_disabled(session: Session, event_id: str) -> None:
    """End an event without sending it: its URL was disabled."""
    session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id == event_id)
        .values(status=DISABLED, next_attempt_at=None, lease_expires_at=None)
    )


@dataclass(frozen=True)
class EventRecord:
    id: str
    type: str
    url: str
    status: str
    attempts: list[WebhookAttempt]
    next_attempt_at: datetime | None
    created_at: datetime


def list_events(session: Session, *, job_id: uuid.UUID) -> list[EventRecord]:
    """Return a job's events, oldest first, each with every attempt made."""
    events = session.scalars(
        select(WebhookEvent).where(WebhookEvent.job_id == job_id).order_by(WebhookEvent.created_at)
    ).all()
    attempts: dict[str, list[WebhookAttempt]] = {}
    if events:
        for attempt in session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.event_id.in_([e.id for e in events]))
            .order_by(WebhookAttempt.id)
        ):
            attempts.setdefault(attempt.event_id, []).append(attempt)
    return [
        EventRecord(
            id=e.id,
            type=e.type,
            url=e.url,
            status=e.status,
            attempts=attempts.get(e.id, []),
            next_attempt_at=e.next_attempt_at,
            created_at=e.created_at,
        )
        for e in events
    ]


def redeliver(session: Session, *, job_id: uuid.UUID) -> int:
    """Make every event of a job due again, same ids; return how many."""
    result = session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.job_id == job_id)
        .values(status=PENDING, next_attempt_at=utcnow(), lease_expires_at=None)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def secrets_in_use(session: Session, tenant_id: str) -> list[str]:
    """Return the tenant's signing secret (made on first use) and a rotated-out one still valid."""
    row = session.get(WebhookSecret, tenant_id)
    if row is None:
        dialect = session.get_bind().dialect.name
        insert_into = postgresql_insert if dialect == "postgresql" else sqlite_insert
        session.execute(
            insert_into(WebhookSecret)
            .values(tenant_id=tenant_id, secret=signing.new_secret(), rotated_at=utcnow())
            .on_conflict_do_nothing()
        )
        row = session.get(WebhookSecret, tenant_id)
        assert row is not None
    valid = [row.secret]
    if row.previous_secret and row.previous_valid_until and row.previous_valid_until > utcnow():
        valid.append(row.previous_secret)
    return valid


def rotate_secret(session: Session, tenant_id: str, *, overlap_s: float) -> WebhookSecret:
    """Give the tenant a new secret; the old one is still signed with for `overlap_s`."""
    current = secrets_in_use(session, tenant_id)[0]
    row = session.scalar(
        select(WebhookSecret).where(WebhookSecret.tenant_id == tenant_id).with_for_update()
    )
    assert row is not None
    row.previous_secret = current
    row.previous_valid_until = utcnow() + timedelta(seconds=overlap_s)
    row.secret = signing.new_secret()
    row.rotated_at = utcnow()
    session.flush()
    return row
