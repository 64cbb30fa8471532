"""Webhooks: the tenant's signing secret, and each job's events with every delivery attempt."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict

from api.deps import DatabaseDep, SettingsDep, TenantDep
from api.responses import API_KEY_SCHEMES, KEYED, problems
from api.submit import parse_job_id
from shared.jobs.reads import get_job
from shared.models import WebhookSecret
from shared.webhooks import events as webhook_events

router = APIRouter(tags=["webhooks"], dependencies=API_KEY_SCHEMES)


class SecretRead(BaseModel):
    """The secret deliveries are signed with (Standard Webhooks, `whsec_` + base64)."""

    secret: str
    previous_secret_valid_until: datetime | None = None


class AttemptRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None


class EventRead(BaseModel):
    """One event: its `webhook-id`, what it announces, and how delivering it went."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    type: str
    url: str
    status: str
    created_at: datetime
    next_attempt_at: datetime | None
    attempts: list[AttemptRead]


class Redelivery(BaseModel):
    redelivered: int


@router.get("/v1/webhooks/secret", response_model=SecretRead, responses=problems(*KEYED))
def get_secret(db: DatabaseDep, tenant_id: TenantDep) -> SecretRead:
    """Return the secret to verify this tenant's webhook signatures with."""
    with db.write() as session:  # the first call creates it
        secret = webhook_events.secrets_in_use(session, tenant_id)[0]
        row = session.get(WebhookSecret, tenant_id)
        valid_until = row.previous_valid_until if row else None
    return SecretRead(secret=secret, previous_secret_valid_until=valid_until)


@router.post("/v1/webhooks/secret/rotate", response_model=SecretRead, responses=problems(*KEYED))
def rotate_secret(db: DatabaseDep, settings: SettingsDep, tenant_id: TenantDep) -> SecretRead:
    """Make a new secret; deliveries carry signatures of both until the old one expires."""
    with db.write() as session:
        row = webhook_events.rotate_secret(
            session, tenant_id, overlap_s=settings.webhook_secret_overlap_s
        )
        return SecretRead(secret=row.secret, previous_secret_valid_until=row.previous_valid_until)


@router.get(
    "/v1/jobs/{job_id}/webhooks",
    response_model=list[EventRead],
    responses=problems(*KEYED, 404, 422),
)
def list_events(job_id: str, db: DatabaseDep, tenant_id: TenantDep) -> list[EventRead]:
    """List a job's webhook events, oldest first, with every attempt."""
    with db.read() as session:
        job = get_job(session, tenant_id=tenant_id, job_id=parse_job_id(job_id))
        events = webhook_events.list_events(session, job_id=job.id)
    return [EventRead.model_validate(event) for event in events]


@router.post(
    "/v1/jobs/{job_id}/webhooks/redeliver",
    response_model=Redelivery,
    status_code=status.HTTP_202_ACCEPTED,
    responses=problems(*KEYED, 404, 422),
)
def redeliver(job_id: str, db: DatabaseDep, tenant_id: TenantDep) -> Redelivery:
    """Send every event of a job again (same ids, so receivers can tell it is a repeat)."""
    with db.write() as session:
        job = get_job(session, tenant_id=tenant_id, job_id=parse_job_id(job_id))
        return Redelivery(redelivered=webhook_events.redeliver(session, job_id=job.id))
