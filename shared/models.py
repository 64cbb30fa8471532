"""The database tables: tenants, jobs and the items (texts) of each job."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    Uuid,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

DEFAULT_TENANT_ID = "default"

# SQLite only auto-increments an INTEGER PRIMARY KEY; Postgres gets a real bigint.
BigId = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC, also on SQLite (which drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given for a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
        }
    )


class Tenant(Base):
    """An owner of jobs; the embedded mode has the single tenant `default`."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    # Days a finished job keeps its inputs and results; None: TEXTQ_RETENTION_DAYS.
    retention_days: Mapped[int | None] = mapped_column(Integer)


class ApiKey(Base):
    """A tenant's API key, kept only as a hash; its prefix names it in lists and logs."""

    __tablename__ = "api_keys"

    prefix: Mapped[str] = mapped_column(String(16), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class Job(Base):
    """One submitted request: a task over one or more texts, with its progress counters."""

    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    task: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    # The source (hub id or directory) claims match on, and the catalogue name the job chose
    # (None on jobs from before the catalogue: any worker serving the source takes them).
    model: Mapped[str] = mapped_column(String(500))
    model_name: Mapped[str | None] = mapped_column(String(100))
    model_revision: Mapped[str | None] = mapped_column(String(100))
    options: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    total_items: Mapped[int] = mapped_column(Integer)
    done_items: Mapped[int] = mapped_column(Integer, default=0)
    error_items: Mapped[int] = mapped_column(Integer, default=0)
    # Of the done items, how many were answered from the result cache.
    cached_items: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Chunks of long texts: created as texts are split, counted as they finish.
    total_parts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    done_parts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Sentiment jobs: how many finished items got each label so far.
    label_counts: Mapped[dict[str, int] | None] = mapped_column(Json)
    # Jobs with the `insights` option: counts per category and label, the negative
    # feedback's summaries and where they stand (see shared/insights.py).
    insights: Mapped[dict[str, Any] | None] = mapped_column(Json)
    # Set on a job textq made for another (the summaries of its insights): hidden from
    # lists, gone with its parent.
    parent_job_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    # A job textq made to run a default's items again on its shadow candidate
    # (shared/shadow/): lowest priority, hidden from the tenant's lists, counts and metrics.
    shadow: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # "texts", "document" or "file", and what a file upload said about itself.
    input_kind: Mapped[str] = mapped_column(String(16), default="texts", server_default="texts")
    input_meta: Mapped[dict[str, Any] | None] = mapped_column(Json)
    # Higher first (0-9); among jobs of one priority, the least recently served goes next.
    priority: Mapped[int] = mapped_column(Integer, default=5, server_default="5")
    last_claimed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # Items not started by then end with an error; earlier deadlines are claimed first
    # within a priority (shared/jobs/deadlines.py).
    deadline: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # Where to send signed events about this job, and which: completed, failed, progress.
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    webhook_events: Mapped[list[str] | None] = mapped_column(Json)
    # Seconds after the end when the job's results are purged (never past retention).
    expires_after_s: Mapped[int | None] = mapped_column(Integer)
    # The output delivery as clients see it (url_host, status, attempts, ...), kept in step
    # with its `output_deliveries` row so presenting a job needs no second query.
    output: Mapped[dict[str, Any] | None] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    __table_args__ = (
        Index("ix_jobs_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_jobs_status_task", "status", "task"),
        # The claim's order of an active job: by priority, then deadline (NULLs last).
        Index(
            "ix_jobs_active_claim_order",
            "task",
            "model",
            "priority",
            "deadline",
            postgresql_where=text("status IN ('queued', 'running')"),
            sqlite_where=text("status IN ('queued', 'running')"),
        ),
        # The sweeper's look for active jobs whose deadline passed.
        Index(
            "ix_jobs_active_deadline",
            "deadline",
            postgresql_where=text("status IN ('queued', 'running') AND deadline IS NOT NULL"),
            sqlite_where=text("status IN ('queued', 'running') AND deadline IS NOT NULL"),
        ),
        # Counted on every submission against TEXTQ_MAX_ACTIVE_JOBS_PER_TENANT.
        Index(
            "ix_jobs_active_tenant",
            "tenant_id",
            postgresql_where=text("status IN ('queued', 'running')"),
            sqlite_where=text("status IN ('queued', 'running')"),
        ),
        Index(
            "ix_jobs_expiring",
            "finished_at",
            postgresql_where=text("expires_after_s IS NOT NULL"),
            sqlite_where=text("expires_after_s IS NOT NULL"),
        ),
    )


class JobItem(Base):
    """One text of a job (or one chunk of a long text): its input, claim, and result or error.

    A text longer than the model's window is split: its chunks are items too, with
    `parent_id` set, claimed and batched like any text; the text waits for them, then is
    reduced (summaries) or aggregated (sentiment) into its own result.
    """

    __tablename__ = "job_items"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    # A text's position in the job; a chunk's position among its parent's chunks.
    idx: Mapped[int] = mapped_column(Integer)
    # Copied from the job so a worker finds its pending items through one small index.
    task: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    input_text: Mapped[str] = mapped_column(Text)
    # Characters of the text the next claim will run (sizes claims before tokenizing).
    char_count: Mapped[int] = mapped_column(Integer)
    custom_id: Mapped[str | None] = mapped_column(String(512))
    parent_id: Mapped[int | None] = mapped_column(BigId)
    # A text: its reduce round (0: the text itself). A chunk: the round it belongs to.
    level: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # A chunk: its characters in the text of its round, and its token count.
    span_start: Mapped[int | None] = mapped_column(Integer)
    span_end: Mapped[int | None] = mapped_column(Integer)
    token_count: Mapped[int | None] = mapped_column(Integer)
    # A text past round 0: its chunks' summaries, joined, to summarize next.
    work_text: Mapped[str | None] = mapped_column(Text)
    # An item of a shadow job: the user's item whose text it runs again (no foreign key:
    # either side may be purged first).
    shadow_of: Mapped[int | None] = mapped_column(BigId)
    # A waiting text: how many of its chunks have not finished.
    open_parts: Mapped[int | None] = mapped_column(Integer)
    result: Mapped[dict[str, Any] | None] = mapped_column(Json)
    error: Mapped[str | None] = mapped_column(Text)
    claim_token: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    __table_args__ = (
        Index(
            "uq_job_items_job_idx",
            "job_id",
            "idx",
            unique=True,
            postgresql_where=text("parent_id IS NULL"),
            sqlite_where=text("parent_id IS NULL"),
        ),
        Index("ix_job_items_parent", "parent_id", "level", "idx"),
        Index("ix_job_items_finished", "task", "finished_at"),
        Index(
            "ix_job_items_pending_job",
            "job_id",
            "id",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        Index(
            "ix_job_items_pending",
            "task",
            "id",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        Index(
            "ix_job_items_running_lease",
            "lease_expires_at",
            postgresql_where=text("status = 'running'"),
            sqlite_where=text("status = 'running'"),
        ),
        Index("ix_job_items_claim", "claim_token"),
        Index(
            "ix_job_items_shadow_of",
            "shadow_of",
            postgresql_where=text("shadow_of IS NOT NULL"),
            sqlite_where=text("shadow_of IS NOT NULL"),
        ),
    )


class IdempotencyKey(Base):
    """A client's Idempotency-Key: the request it came with first, and the job it created."""

    __tablename__ = "idempotency_keys"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, index=True)


class WebhookEvent(Base):
    """An event to deliver to a job's webhook: written with the change it reports (outbox).

    Its id is the `webhook-id` of every attempt, so a receiver can drop duplicates.
    """

    __tablename__ = "webhook_events"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(String(2048))
    # pending -> delivered | failed (retries used up) | disabled (the receiver said 410)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # Set while a sender holds the event; an expired lease makes it due again.
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)

    __table_args__ = (
        Index("ix_webhook_events_job", "job_id", "created_at"),
        Index(
            "ix_webhook_events_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
    )


class OutputDelivery(Base):
    """A job's results to PUT to its `output_url` once it ends (outbox, like webhook events).

    Written with the job; due once the job has ended; claimed under a lease by the webhooks
    process and retried on the webhook schedule. `url` is a presigned URL: a secret, never
    shown or logged (clients see its host).
    """

    __tablename__ = "output_deliveries"

    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    tenant_id: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(Text)
    gzip: Mapped[bool] = mapped_column(Boolean)
    # pending -> delivered | failed (retries used up, or the job has no results to send)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)

    __table_args__ = (
        Index(
            "ix_output_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
    )


class WebhookAttempt(Base):
    """One try at delivering an event: when, the answer (or the error), how long it took."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_events.id", ondelete="CASCADE"), index=True
    )
    attempted_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)


class WebhookSecret(Base):
    """A tenant's signing secret, and the one it replaced while that is still honoured."""

    __tablename__ = "webhook_secrets"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    secret: Mapped[str] = mapped_column(String(100))
    previous_secret: Mapped[str | None] = mapped_column(String(100))
    previous_valid_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    rotated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class DisabledWebhookUrl(Base):
    """A URL whose receiver answered 410 Gone: nothing more is sent there."""

    __tablename__ = "disabled_webhook_urls"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    url: Mapped[str] = mapped_column(String(2048), primary_key=True)
    disabled_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class CachedResult(Base):
    """A result already computed for the same text, task options and exact model."""

    __tablename__ = "result_cache"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    result: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, index=True)


class Worker(Base):
    """A worker process and what it serves, kept fresh by its sweeper (`textq models list`)."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    device: Mapped[str] = mapped_column(String(32))
    dtype: Mapped[str] = mapped_column(String(16))
    # {task: {"model": source, "revision": revision}}
    models: Mapped[dict[str, Any]] = mapped_column(Json)
    # Every catalogue model it serves: [{"name", "task", "model" (source), "revision",
    # "loaded", "limits", "labels"}] (None: a worker from before the catalogue).
    served: Mapped[list[dict[str, Any]] | None] = mapped_column(Json)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class DriftCount(Base):
    """How many finished texts of a model and tenant fell in a bin of a feature, per hour.

    Features and bins: shared/drift.py. Rows are added to as outcomes are recorded, one
    upsert per recorded batch (shared/jobs/drift_counts.py).
    """

    __tablename__ = "drift_counts"

    # The model's catalogue name (a job from before the catalogue: its source).
    model: Mapped[str] = mapped_column(String(500), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UtcDateTime(), primary_key=True)
    feature: Mapped[str] = mapped_column(String(32), primary_key=True)
    bin: Mapped[str] = mapped_column(String(64), primary_key=True)
    item_count: Mapped[int] = mapped_column(BigInteger)


# The tables under the mapped classes, for Core statements on the hot paths: an UPDATE of the
# table skips the ORM's bulk-statement machinery (130 µs of CPU against 218 for a claim's
# job start, measured alternately on Postgres); the rows it returns are plain rows either way.
JOBS = cast(Table, Job.__table__)
JOB_ITEMS = cast(Table, JobItem.__table__)
