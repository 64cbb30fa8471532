"""Every query textq runs: jobs, items, claims with leases, outcomes. Callers commit."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, exists, func, insert, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from shared.errors import JobNotFound
from shared.models import CachedResult, Job, JobItem, utcnow
from shared.states import (
    ACTIVE_JOB_STATUSES,
    ItemStatus,
    JobStatus,
    Task,
    job_sources,
    outcome_status,
)

INSERT_CHUNK_ROWS = 1000
# Postgres channel a job's id is sent on when it finishes (API requests wait on it).
JOB_FINISHED_CHANNEL = "textq_job_finished"
# A rough characters-per-token ratio, only to size a claim before the worker tokenizes.
CHARS_PER_TOKEN_ESTIMATE = 4


# --- jobs -------------------------------------------------------------------------------


def create_job(
    session: Session,
    *,
    tenant_id: str,
    task: Task,
    model: str,
    options: dict[str, Any],
    texts: Sequence[str],
) -> Job:
    """Add a queued job and one pending item per text."""
    job = Job(
        tenant_id=tenant_id,
        task=task.value,
        status=JobStatus.QUEUED.value,
        model=model,
        options=options,
        total_items=len(texts),
        done_items=0,
        error_items=0,
    )
    session.add(job)
    session.flush()
    rows = (
        {
            "job_id": job.id,
            "idx": position,
            "task": task.value,
            "status": ItemStatus.PENDING.value,
            "input_text": text,
            "char_count": len(text),
            "attempts": 0,
        }
        for position, text in enumerate(texts)
    )
    for chunk in _chunks(rows, INSERT_CHUNK_ROWS):
        session.execute(insert(JobItem), chunk)
    return job


def get_job(session: Session, *, tenant_id: str, job_id: uuid.UUID) -> Job:
    """Return the tenant's job or raise JobNotFound."""
    job = session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id))
    if job is None:
        raise JobNotFound(f"No job with id {job_id}.")
    return job


def list_jobs(
    session: Session,
    *,
    tenant_id: str,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None = None,
    status: JobStatus | None = None,
    task: Task | None = None,
) -> list[Job]:
    """Return the tenant's jobs newest first, starting after the (created_at, id) key."""
    query = select(Job).where(Job.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Job.status == status.value)
    if task is not None:
        query = query.where(Job.task == task.value)
    if after is not None:
        query = query.where(tuple_(Job.created_at, Job.id) < tuple_(*after))
    query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
    return list(session.scalars(query))


@dataclass(frozen=True)
class StoredOutcome:
    index: int
    status: str
    result: dict[str, Any] | None
    error: str | None


def list_item_outcomes(
    session: Session, *, job_id: uuid.UUID, after_index: int, limit: int
) -> list[StoredOutcome]:
    """Return the index, status, result and error of a job's items in input order."""
    rows = session.execute(
        select(JobItem.idx, JobItem.status, JobItem.result, JobItem.error)
        .where(JobItem.job_id == job_id, JobItem.idx > after_index)
        .order_by(JobItem.idx)
        .limit(limit)
    ).all()
    return [StoredOutcome(*row) for row in rows]


# --- claims -----------------------------------------------------------------------------


def _lease_clock(session: Session) -> Any:
    """Return "now" for leases: on Postgres the server's clock, so workers on machines whose
    clocks drift still agree on when a lease lapses; on SQLite (one machine) this process's.
    """
    return func.now() if session.get_bind().dialect.name == "postgresql" else utcnow()


@dataclass(frozen=True)
class ClaimedItem:
    id: int
    job_id: uuid.UUID
    index: int
    text: str
    options: dict[str, Any]


@dataclass(frozen=True)
class Claim:
    """Items a worker holds under one lease token until it records their outcomes."""

    token: uuid.UUID
    items: list[ClaimedItem]


def claim_items(
    session: Session,
    *,
    task: Task,
    model: str,
    model_revision: str,
    worker: str,
    max_tokens: int,
    max_items: int,
    lease_s: float,
) -> Claim | None:
    """Claim the oldest pending items of a task and model, across jobs, up to a token budget.

    On Postgres, rows other workers are claiming are skipped (SKIP LOCKED); on SQLite the
    caller's write transaction holds the database's write lock, so claims never overlap.
    """
    candidates = session.execute(
        select(
            JobItem.id,
            JobItem.job_id,
            JobItem.idx,
            JobItem.input_text,
            JobItem.char_count,
            JobItem.attempts,
        )
        .join(Job, Job.id == JobItem.job_id)
        .where(
            JobItem.status == ItemStatus.PENDING.value,
            JobItem.task == task.value,
            Job.model == model,
        )
        .order_by(JobItem.id)
        .limit(max_items)
        .with_for_update(of=JobItem, skip_locked=True)
    ).all()
    if not candidates:
        return None
    chosen = _claimable(candidates, max_tokens)
    now = utcnow()
    token = uuid.uuid4()
    ids = [row.id for row in chosen]
    session.execute(
        update(JobItem)
        .where(JobItem.id.in_(ids))
        .values(
            status=ItemStatus.RUNNING.value,
            claim_token=token,
            claimed_by=worker,
            lease_expires_at=_lease_clock(session) + timedelta(seconds=lease_s),
            attempts=JobItem.attempts + 1,
        )
    )
    job_ids = sorted({row.job_id for row in chosen})
    session.execute(
        update(Job)
        .where(Job.id.in_(job_ids), Job.status.in_(_values(job_sources(JobStatus.RUNNING))))
        .values(status=JobStatus.RUNNING.value, started_at=now, model_revision=model_revision)
    )
    options: dict[uuid.UUID, dict[str, Any]] = dict(
        session.execute(select(Job.id, Job.options).where(Job.id.in_(job_ids))).all()
    )
    return Claim(
        token=token,
        items=[
            ClaimedItem(
                id=row.id,
                job_id=row.job_id,
                index=row.idx,
                text=row.input_text,
                options=options[row.job_id] or {},
            )
            for row in chosen
        ],
    )


def _claimable(candidates: Sequence[Any], max_tokens: int) -> Sequence[Any]:
    """Return the longest prefix whose estimated tokens fit the budget (at least one row).

    An item whose worker was lost before is claimed alone: if it is what killed that worker,
    it must not take a claim full of other items down with it again.
    """
    if candidates[0].attempts > 0:
        return candidates[:1]
    total = 0
    for count, row in enumerate(candidates):
        total += row.char_count // CHARS_PER_TOKEN_ESTIMATE + 2
        if count > 0 and (total > max_tokens or row.attempts > 0):
            return candidates[:count]
    return candidates


def renew_lease(session: Session, *, claim_token: uuid.UUID, lease_s: float) -> int:
    """Push back the lease expiry of a claim's unfinished items; return how many."""
    result = session.execute(
        update(JobItem)
        .where(JobItem.claim_token == claim_token, JobItem.status == ItemStatus.RUNNING.value)
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def release_claim(session: Session, *, claim_token: uuid.UUID) -> int:
    """Hand a claim's unfinished items back to the queue without counting an attempt."""
    result = session.execute(
        update(JobItem)
        .where(JobItem.claim_token == claim_token, JobItem.status == ItemStatus.RUNNING.value)
        .values(
            status=ItemStatus.PENDING.value,
            claim_token=None,
            lease_expires_at=None,
            attempts=JobItem.attempts - 1,
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


# --- outcomes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """The result (or error) of one claimed item."""

    item_id: int
    result: dict[str, Any] | None = None
    error: str | None = None
    from_cache: bool = False

    @property
    def status(self) -> ItemStatus:
        return ItemStatus.ERROR if self.error is not None else ItemStatus.DONE


def record_outcomes(
    session: Session,
    *,
    claim_token: uuid.UUID,
    outcomes: Sequence[Outcome],
    cache_entries: dict[str, dict[str, Any]] | None = None,
) -> int:
    """Store outcomes of items this claim still owns; return how many were stored.

    An item whose lease expired and went to another worker is not this claim's any more:
    its outcome is dropped, so no result is ever stored twice or overwritten.
    """
    if not outcomes:
        return 0
    owned = dict(
        session.execute(
            select(JobItem.id, JobItem.job_id)
            .where(
                JobItem.id.in_([o.item_id for o in outcomes]),
                JobItem.claim_token == claim_token,
                JobItem.status == ItemStatus.RUNNING.value,
            )
            .order_by(JobItem.id)
            .with_for_update()
        ).all()
    )
    kept = [o for o in outcomes if o.item_id in owned]
    _store_outcomes(session, kept, {o.item_id: owned[o.item_id] for o in kept})
    if cache_entries:
        remember_results(session, cache_entries)
    return len(kept)


# --- result cache -----------------------------------------------------------------------


def cached_results(session: Session, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Return the cached results among `keys`."""
    wanted = sorted(set(keys))
    found: dict[str, dict[str, Any]] = {}
    for chunk in range(0, len(wanted), INSERT_CHUNK_ROWS):
        rows = session.execute(
            select(CachedResult.key, CachedResult.result).where(
                CachedResult.key.in_(wanted[chunk : chunk + INSERT_CHUNK_ROWS])
            )
        ).all()
        found.update({key: result for key, result in rows})
    return found


def remember_results(session: Session, entries: dict[str, dict[str, Any]]) -> None:
    """Cache results by key; a key already cached keeps its first result."""
    dialect = session.get_bind().dialect.name
    insert_into = postgresql_insert if dialect == "postgresql" else sqlite_insert
    now = utcnow()
    rows = [{"key": key, "result": result, "created_at": now} for key, result in entries.items()]
    for chunk in _chunks(rows, INSERT_CHUNK_ROWS):
        session.execute(insert_into(CachedResult).on_conflict_do_nothing(), chunk)


def forget_results_before(session: Session, moment: datetime) -> int:
    """Drop cache entries created before `moment`; return how many."""
    result = session.execute(delete(CachedResult).where(CachedResult.created_at < moment))
    return int(result.rowcount)  # type: ignore[attr-defined]


def _store_outcomes(
    session: Session, outcomes: Sequence[Outcome], job_of: dict[int, uuid.UUID]
) -> None:
    """Write outcomes of locked, running items, then bump job counters and finish jobs."""
    if not outcomes:
        return
    now = utcnow()
    session.execute(
        update(JobItem),
        [
            {
                "id": o.item_id,
                "status": o.status.value,
                "result": o.result,
                "error": o.error,
                "lease_expires_at": None,
                "finished_at": now,
            }
            for o in outcomes
        ],
    )
    done = Counter(job_of[o.item_id] for o in outcomes if o.status is ItemStatus.DONE)
    errored = Counter(job_of[o.item_id] for o in outcomes if o.status is ItemStatus.ERROR)
    cached = Counter(job_of[o.item_id] for o in outcomes if o.from_cache)
    job_ids = sorted(set(done) | set(errored))
    for job_id in job_ids:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                done_items=Job.done_items + done[job_id],
                error_items=Job.error_items + errored[job_id],
                cached_items=Job.cached_items + cached[job_id],
            )
        )
    finish_complete_jobs(session, job_ids)


def finish_complete_jobs(session: Session, job_ids: Iterable[uuid.UUID]) -> list[uuid.UUID]:
    """Move jobs whose every item has finished to their terminal status; return those ids."""
    complete = session.execute(
        select(Job.id, Job.done_items, Job.error_items)
        .where(
            Job.id.in_(list(job_ids)),
            Job.status.in_(_values(ACTIVE_JOB_STATUSES)),
            Job.done_items + Job.error_items >= Job.total_items,
        )
        .order_by(Job.id)
        .with_for_update()
    ).all()
    now = utcnow()
    notify = session.get_bind().dialect.name == "postgresql"
    for job_id, done, errored in complete:
        target = outcome_status(done=done, errored=errored)
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status.in_(_values(job_sources(target))))
            .values(status=target.value, finished_at=now)
        )
        if notify:  # delivered when this transaction commits, never before
            session.execute(select(func.pg_notify(JOB_FINISHED_CHANNEL, str(job_id))))
    return [row.id for row in complete]


# --- sweeping ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpiredLeases:
    repended: int
    given_up: int


def expire_leases(session: Session, *, max_attempts: int, limit: int = 1000) -> ExpiredLeases:
    """Re-pend items whose worker stopped renewing its lease; error those tried too often."""
    expired = session.execute(
        select(JobItem.id, JobItem.job_id, JobItem.attempts)
        .where(
            JobItem.status == ItemStatus.RUNNING.value,
            JobItem.lease_expires_at < _lease_clock(session),
        )
        .order_by(JobItem.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    retry = [row.id for row in expired if row.attempts < max_attempts]
    if retry:
        session.execute(
            update(JobItem)
            .where(JobItem.id.in_(retry))
            .values(status=ItemStatus.PENDING.value, claim_token=None, lease_expires_at=None)
        )
    exhausted = [row for row in expired if row.attempts >= max_attempts]
    _store_outcomes(
        session,
        [
            Outcome(
                item_id=row.id,
                error=f"the worker processing this item was lost {row.attempts} times; "
                "giving up (TEXTQ_MAX_ATTEMPTS)",
            )
            for row in exhausted
        ],
        {row.id: row.job_id for row in exhausted},
    )
    return ExpiredLeases(repended=len(retry), given_up=len(exhausted))


def tasks_waiting_for_a_worker(session: Session, served: dict[Task, str]) -> list[Task]:
    """Return the served tasks whose model has pending items and none under a live lease.

    Their doorbell may have been lost (broker wiped, API died before publishing).
    """
    now = _lease_clock(session)
    waiting = []
    for task, model in served.items():
        pending = session.scalar(
            select(
                exists()
                .where(JobItem.task == task.value, JobItem.status == ItemStatus.PENDING.value)
                .where(Job.id == JobItem.job_id, Job.model == model)
            )
        )
        working = session.scalar(
            select(
                exists().where(
                    JobItem.task == task.value,
                    JobItem.status == ItemStatus.RUNNING.value,
                    JobItem.lease_expires_at > now,
                )
            )
        )
        if pending and not working:
            waiting.append(task)
    return waiting


def models_awaited(session: Session, task: Task) -> dict[str, int]:
    """Return how many unfinished jobs of a task wait for each model."""
    return dict(
        session.execute(
            select(Job.model, func.count())
            .where(Job.task == task.value, Job.status.in_(_values(ACTIVE_JOB_STATUSES)))
            .group_by(Job.model)
        ).all()
    )


def count_items(session: Session, *, job_id: uuid.UUID) -> dict[str, int]:
    """Return the number of a job's items in each status."""
    return {
        status: count
        for status, count in session.execute(
            select(JobItem.status, func.count())
            .where(JobItem.job_id == job_id)
            .group_by(JobItem.status)
        ).all()
    }


# --- helpers ----------------------------------------------------------------------------


def _values(statuses: Iterable[JobStatus | ItemStatus]) -> list[str]:
    return sorted(status.value for status in statuses)


def _chunks(rows: Iterable[dict[str, Any]], size: int) -> Iterable[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
