"""Claim pending items under a lease, renew, release and expire leases (the lease clock)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    Interval,
    String,
    bindparam,
    case,
    exists,
    func,
    literal_column,
    select,
    true,
    update,
)
from sqlalchemy.orm import Session

from shared.jobs.cancel import cancel_items_of_ended_jobs
from shared.jobs.deadlines import before_deadline
from shared.jobs.outcomes import ItemRef, lock_jobs, store_outcomes
from shared.jobs.rows import ids_bound, status_values
from shared.jobs.work import Claim, ClaimedItem, Outcome
from shared.models import JOB_ITEMS, JOBS, Job, JobItem, UtcDateTime, utcnow
from shared.states import ACTIVE_JOB_STATUSES, ItemStatus, JobStatus, Task, job_sources

# A rough characters-per-token ratio, only to size a claim before the worker tokenizes.
CHARS_PER_TOKEN_ESTIMATE = 4


def lease_clock(session: Session) -> Any:
    """Return "now" for leases: on Postgres the server's clock, so workers on machines whose
    clocks drift still agree on when a lease lapses; on SQLite (one machine) this process's.
    """
    return func.now() if session.get_bind().dialect.name == "postgresql" else utcnow()


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
    max_attempts: int = 3,
    model_name: str | None = None,
    ahead: bool = False,
) -> Claim | None:
    """Claim pending items of a task and model, across jobs, up to a token budget.

    `model` is the source jobs name; with `model_name`, only jobs that chose that catalogue
    model (or that chose none, made before the catalogue) are claimed. `ahead`: the claim
    is taken while another one runs, so it claims nothing (None, no row written) when it
    would hold a lost claim's items (should the claim running kill the worker again, they
    would lose an attempt with it) or texts with a deadline (held ahead they would count as
    started, and not end when it passes); the next claim taken once the running one has
    ended takes them.

    Only the highest priority with pending work is claimed from. Among its jobs the least
    recently served come first, each with a share of the claim, so one huge job cannot
    starve the others. On Postgres, rows other workers are claiming are skipped (SKIP
    LOCKED); on SQLite the caller's write transaction holds the database's write lock.
    """
    jobs = _jobs_to_serve(session, _waiting_params(task, model, model_name))
    if not jobs:
        return None
    top = jobs[0].priority
    candidates = _lock_candidates(session, task=task, jobs=jobs, max_items=max_items)
    if not candidates:
        return None
    chosen = _claimable(candidates, max_tokens, max_attempts=max_attempts)
    claimed_jobs = {row.job_id for row in chosen}
    retried = chosen[0].attempts > 0
    deadlines = any(job.deadline is not None for job in jobs if job.id in claimed_jobs)
    if ahead and (retried or deadlines):
        return None
    token = uuid.uuid4()
    _lease(session, [row.id for row in chosen], token=token, worker=worker, lease_s=lease_s)
    options = _start_jobs(session, sorted(claimed_jobs), model_revision)
    return Claim(
        token=token,
        priority=top,
        full=len(candidates) >= max_items or len(chosen) < len(candidates),
        retried=retried,
        deadlines=deadlines,
        items=[
            ClaimedItem(
                id=row.id,
                job_id=row.job_id,
                index=row.idx,
                text=row.text,
                options=options[row.job_id] or {},
                parent_id=row.parent_id,
                level=row.level,
            )
            for row in chosen
        ],
    )


def _jobs_to_serve(session: Session, params: dict[str, Any]) -> Sequence[Any]:
    """Return the waiting jobs of the highest priority that has any (id, deadline,
    priority): those with a deadline first, the earliest first; then the least recently
    served. Empty when no job waits. `params`: from `_waiting_params`.

    One query finds the priority and its jobs: ordered by priority first, the rows of the
    top priority come first, and those of lower ones are dropped here.
    """
    rows = session.execute(_JOBS_TO_SERVE[params["model_name"] is not None], params).all()
    return [row for row in rows if row.priority == rows[0].priority]


def _lock_candidates(
    session: Session, *, task: Task, jobs: Sequence[Any], max_items: int
) -> list[Any]:
    """Lock pending items of each job in turn, oldest first (SKIP LOCKED).

    A job with a deadline may fill what is left of the claim, so the earliest deadline is
    served first, and many small jobs with deadlines (the classic endpoints') still share
    one claim; jobs without one each get an even share of what is left.
    """
    candidates: list[Any] = []
    for position, job in enumerate(jobs):
        left = max_items - len(candidates)
        if left <= 0:
            break
        share = left if job.deadline is not None else left // (len(jobs) - position)
        candidates += session.execute(
            _CANDIDATES, {"job_id": job.id, "task": task.value, "limit": max(share, 1)}
        ).all()
    return candidates


_CANDIDATES = (
    select(
        JobItem.id,
        JobItem.job_id,
        JobItem.idx,
        func.coalesce(JobItem.work_text, JobItem.input_text).label("text"),
        JobItem.char_count,
        JobItem.attempts,
        JobItem.parent_id,
        JobItem.level,
    )
    .where(
        JobItem.job_id == bindparam("job_id"),
        JobItem.status == ItemStatus.PENDING.value,
        JobItem.task == bindparam("task"),
    )
    .order_by(JobItem.id)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)


def _lease(
    session: Session, item_ids: list[int], *, token: uuid.UUID, worker: str, lease_s: float
) -> None:
    """Mark the chosen items running under the claim's token, leased on the lease clock."""
    postgres = session.get_bind().dialect.name == "postgresql"
    lease = timedelta(seconds=lease_s)
    session.execute(
        _LEASE[postgres],
        {
            "ids": item_ids,
            "token": token,
            "worker": worker,
            # On SQLite the lease clock is this process's (`lease_clock`).
            "lease": lease if postgres else utcnow() + lease,
        },
    )


# By whether the database is Postgres: there the lease runs on the server's clock.
_LEASE = {
    postgres: update(JOB_ITEMS)
    .where(ids_bound(JobItem.id, "ids", postgres=postgres))
    .values(
        status=ItemStatus.RUNNING.value,
        claim_token=bindparam("token"),
        claimed_by=bindparam("worker"),
        lease_expires_at=(
            func.now() + bindparam("lease", type_=Interval) if postgres else bindparam("lease")
        ),
        attempts=JobItem.attempts + 1,
    )
    for postgres in (False, True)
}


def _start_jobs(
    session: Session, job_ids: list[uuid.UUID], model_revision: str
) -> dict[uuid.UUID, dict[str, Any]]:
    """Start the claimed items' jobs (if queued), note them served now; return their options.

    One statement for all of them: a claim of many one-text jobs is on every small job's path.
    """
    postgres = session.get_bind().dialect.name == "postgresql"
    started = session.execute(
        _START_JOBS[postgres],
        {"job_ids": job_ids, "now": utcnow(), "model_revision": model_revision},
    )
    return {row.id: row.options for row in started}


_STARTING = Job.status.in_(status_values(job_sources(JobStatus.RUNNING)))
_NOW = bindparam("now", type_=UtcDateTime())
# The jobs' rows in id order, locked, as every locker of several job rows takes them (see
# outcomes.lock_jobs): an UPDATE alone locks them in the order it finds them, and a claim
# waiting on a record's job while holding one the record waits on would deadlock.
_IN_ID_ORDER = (
    select(JOBS.c.id)
    .where(JOBS.c.id.in_(bindparam("job_ids", expanding=True)))
    .order_by(JOBS.c.id)
    .with_for_update()
    .subquery()
)
# By whether the database is Postgres (SQLite runs one write transaction at a time).
_START_JOBS = {
    postgres: update(JOBS)
    .where(
        JOBS.c.id == _IN_ID_ORDER.c.id
        if postgres
        else JOBS.c.id.in_(bindparam("job_ids", expanding=True))
    )
    .values(
        status=case((_STARTING, JobStatus.RUNNING.value), else_=Job.status),
        started_at=case((_STARTING, _NOW), else_=Job.started_at),
        model_revision=case(
            (_STARTING, bindparam("model_revision", type_=String)), else_=Job.model_revision
        ),
        last_claimed_at=_NOW,
    )
    .returning(JOBS.c.id, JOBS.c.options)
    for postgres in (False, True)
}


def _jobs_with_pending_items(*, named: bool) -> Any:
    """Return the condition: an active job of a task and model with items to claim.

    Its values are bound by name (`_waiting_params`): the statements that use it are built
    once, as building a select and keying it for the compiled cache costs more CPU than
    running it, on every claim. `named`: only jobs of the catalogue model `model_name`, or
    of none (made before the catalogue). A job whose deadline passed has none: the sweeper
    ends its pending items.
    """
    return (
        (Job.task == bindparam("task"))
        & (Job.model == bindparam("model"))
        & (of_model_name(bindparam("model_name")) if named else true())
        & Job.status.in_(status_values(ACTIVE_JOB_STATUSES))
        & before_deadline(bindparam("now"))
        & _PENDING_ITEM.exists()
    )


# A pending item of the job being looked at. OFFSET 0 keeps Postgres from planning the check
# as a semi-join, which statistics taken while few items were pending make it run as a scan
# of every pending item for each job: 346 ms a claim at 2,000 queued one-text jobs, where
# kept as a subplan it is one probe of the pending-items index per job (2.6 ms), whatever
# the statistics say. (The planner drops a LIMIT in EXISTS, not an OFFSET.)
_PENDING_ITEM = (
    select(JobItem.id)
    .where(JobItem.job_id == Job.id, JobItem.status == ItemStatus.PENDING.value)
    .offset(literal_column("0"))
)


def _waiting_params(task: Task, model: str, model_name: str | None) -> dict[str, Any]:
    """Return the values `_jobs_with_pending_items`' condition binds, as of now."""
    return {"task": task.value, "model": model, "model_name": model_name, "now": utcnow()}


def of_model_name(model_name: Any) -> Any:
    """Return the condition: a job of this catalogue model, or of none (made before it)."""
    if model_name is None:
        return true()
    return (Job.model_name == model_name) | Job.model_name.is_(None)


MAX_JOBS_PER_CLAIM = 64

# By whether the claim names a catalogue model.
_JOBS_TO_SERVE = {
    named: select(Job.id, Job.deadline, Job.priority)
    .where(_jobs_with_pending_items(named=named))
    .order_by(
        Job.priority.desc(),
        Job.deadline.asc().nulls_last(),
        Job.last_claimed_at.asc().nulls_first(),
        Job.created_at,
        Job.id,
    )
    .limit(MAX_JOBS_PER_CLAIM)
    for named in (False, True)
}
_HIGHER_PRIORITY_WAITING = {
    named: select(
        exists().where(_jobs_with_pending_items(named=named), Job.priority > bindparam("priority"))
    )
    for named in (False, True)
}
_WORK_WAITING = {
    named: select(exists().where(_jobs_with_pending_items(named=named))) for named in (False, True)
}


def higher_priority_waiting(
    session: Session, *, task: Task, model: str, priority: int, model_name: str | None = None
) -> bool:
    """Return whether a job of higher priority than `priority` has items to claim."""
    params = _waiting_params(task, model, model_name) | {"priority": priority}
    return session.scalar(_HIGHER_PRIORITY_WAITING[model_name is not None], params) or False


def models_outranking(
    session: Session, *, served: Iterable[tuple[Task, str, str]], priority: int
) -> list[tuple[Task, str]]:
    """Return the models among `served` (task, source, catalogue name) that have work of a
    higher priority than `priority` to claim, as (task, catalogue name), in the order given.

    A claim ends itself early when any has: the models of a worker share its device, so a
    bulk claim yields to urgent work of its own model, of another, or of another task; and
    a shadow claim (priority -1) to any user's work.
    """
    return [
        (task, name)
        for task, source, name in served
        if higher_priority_waiting(
            session, task=task, model=source, model_name=name, priority=priority
        )
    ]


def work_waiting(session: Session, *, task: Task, model: str, model_name: str | None) -> bool:
    """Return whether any job of this task and catalogue model has items to claim."""
    params = _waiting_params(task, model, model_name)
    return session.scalar(_WORK_WAITING[model_name is not None], params) or False


# Items of a lost claim go out again in groups this small; on their last try, alone.
LOST_CLAIM_GROUP = 16


def _claimable(candidates: Sequence[Any], max_tokens: int, *, max_attempts: int) -> Sequence[Any]:
    """Return the longest prefix whose estimated tokens fit the budget (at least one row).

    Items whose worker was lost are claimed apart from fresh ones, in small groups of the
    same history, and alone on their last try: if one of them is what killed that worker,
    it takes few others down with it again, and none on the try that decides its fate.
    """
    first = candidates[0]
    if first.attempts > 0:
        group = 1 if first.attempts + 1 >= max_attempts else LOST_CLAIM_GROUP
        limit = len(candidates)
        for count, row in enumerate(candidates[:group]):
            if row.attempts != first.attempts:
                limit = count
                break
        candidates = candidates[: min(group, limit)]
    total = 0
    for count, row in enumerate(candidates):
        total += row.char_count // CHARS_PER_TOKEN_ESTIMATE + 2
        if count > 0 and (total > max_tokens or row.attempts != first.attempts):
            return candidates[:count]
    return candidates


def renew_lease(session: Session, *, claim_token: uuid.UUID, lease_s: float) -> int:
    """Push back the lease expiry of a claim's unfinished items; return how many.

    The new expiry is read on the lease clock that claims and expiry use, never the worker's
    own: a worker whose clock is behind the database's would otherwise renew into the past.
    """
    result = session.execute(
        update(JobItem)
        .where(JobItem.claim_token == claim_token, JobItem.status == ItemStatus.RUNNING.value)
        .values(lease_expires_at=lease_clock(session) + timedelta(seconds=lease_s))
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def release_claim(session: Session, *, claim_token: uuid.UUID) -> int:
    """Hand a claim's unfinished items back to the queue without counting an attempt.

    Items of a job cancelled meanwhile are not handed back: they end cancelled. The items
    are locked, then their jobs (`lock_jobs`), so that a cancel either ended the job before
    (seen here) or waits, and then finds the items pending to cancel.
    """
    held = (JobItem.claim_token == claim_token) & (JobItem.status == ItemStatus.RUNNING.value)
    items = session.execute(
        select(JobItem.job_id).where(held).order_by(JobItem.id).with_for_update()
    ).all()
    if not items:
        return 0
    lock_jobs(session, {item.job_id for item in items})
    cancel_items_of_ended_jobs(session, held)
    result = session.execute(
        update(JobItem)
        .where(held)
        .values(
            status=ItemStatus.PENDING.value,
            claim_token=None,
            lease_expires_at=None,
            attempts=JobItem.attempts - 1,
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ExpiredLeases:
    repended: int
    given_up: int


def expire_leases(session: Session, *, max_attempts: int, limit: int = 1000) -> ExpiredLeases:
    """Re-pend items whose worker stopped renewing its lease; error those tried too often.

    Expired items of a job cancelled meanwhile end cancelled instead: locked, then their
    jobs (`lock_jobs`), as `release_claim` does.
    """
    expired = session.execute(
        select(JobItem.id, JobItem.job_id, JobItem.attempts, JobItem.parent_id, JobItem.level)
        .where(
            JobItem.status == ItemStatus.RUNNING.value,
            JobItem.lease_expires_at < lease_clock(session),
        )
        .order_by(JobItem.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not expired:
        return ExpiredLeases(repended=0, given_up=0)
    ended = lock_jobs(session, {row.job_id for row in expired})
    cancel_items_of_ended_jobs(session, JobItem.id.in_([row.id for row in expired]))
    expired = [row for row in expired if row.job_id not in ended]
    retry = [row.id for row in expired if row.attempts < max_attempts]
    if retry:
        session.execute(
            update(JobItem)
            .where(JobItem.id.in_(retry))
            .values(status=ItemStatus.PENDING.value, claim_token=None, lease_expires_at=None)
        )
    exhausted = [row for row in expired if row.attempts >= max_attempts]
    store_outcomes(
        session,
        [
            Outcome(
                item_id=row.id,
                error=f"the worker processing this item was lost {row.attempts} times; "
                "giving up (TEXTQ_MAX_ATTEMPTS)",
            )
            for row in exhausted
        ],
        {row.id: ItemRef(row.job_id, row.parent_id, row.level) for row in exhausted},
    )
    return ExpiredLeases(repended=len(retry), given_up=len(exhausted))
