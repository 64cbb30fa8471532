"""Every query textq runs: jobs, items, claims with leases, outcomes. Callers commit."""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Text,
    bindparam,
    case,
    cast,
    delete,
    event,
    exists,
    func,
    insert,
    literal,
    literal_column,
    null,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, aliased

from shared import documents, insights, metrics, webhook_repository
from shared.errors import (
    IdempotencyKeyReused,
    InvalidRequest,
    JobAlreadyFinished,
    JobNotFound,
    RequestTooLarge,
)
from shared.models import (
    CachedResult,
    IdempotencyKey,
    Job,
    JobItem,
    Tenant,
    WebhookAttempt,
    WebhookEvent,
    utcnow,
)
from shared.states import (
    ACTIVE_JOB_STATUSES,
    FINISHED_JOB_STATUSES,
    TERMINAL_JOB_STATUSES,
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
# First key of textq's Postgres advisory locks on submissions (the second is the tenant's hash).
SUBMISSION_LOCK_SPACE = 0x7E7051


# --- jobs -------------------------------------------------------------------------------


def create_job(
    session: Session,
    *,
    tenant_id: str,
    task: Task,
    model: str,
    options: dict[str, Any],
    texts: Sequence[str],
    input_kind: str = "texts",
    webhook: Webhook | None = None,
    priority: int = 5,
    summarizer: insights.Summarizer | None = None,
    custom_ids: Sequence[str] | None = None,
    parent_job_id: uuid.UUID | None = None,
) -> Job:
    """Add a queued job and one pending item per text.

    `summarizer` is what summarizes the negative feedback of a job with `insights`.
    """
    job = _add_job(
        session,
        priority=priority,
        tenant_id=tenant_id,
        task=task,
        model=model,
        options=options,
        total_items=len(texts),
        input_kind=input_kind,
        webhook=webhook,
        summarizer=summarizer,
        parent_job_id=parent_job_id,
    )
    rows = (
        {
            "job_id": job.id,
            "idx": position,
            "task": task.value,
            "status": ItemStatus.PENDING.value,
            "input_text": text,
            "char_count": len(text),
            "custom_id": custom_ids[position] if custom_ids is not None else None,
            "attempts": 0,
        }
        for position, text in enumerate(texts)
    )
    for chunk in _chunks(rows, INSERT_CHUNK_ROWS):
        session.execute(insert(JobItem), chunk)
    return job


@dataclass(frozen=True)
class Webhook:
    """Where a job's events go, and which events."""

    url: str
    events: list[str]


def _add_job(
    session: Session,
    *,
    tenant_id: str,
    task: Task,
    model: str,
    options: dict[str, Any],
    total_items: int,
    input_kind: str,
    input_meta: dict[str, Any] | None = None,
    webhook: Webhook | None = None,
    priority: int = 5,
    summarizer: insights.Summarizer | None = None,
    parent_job_id: uuid.UUID | None = None,
) -> Job:
    state = None
    if task is Task.SENTIMENT and options.get("insights"):
        if summarizer is None:
            raise ValueError("a job with insights needs the summarizer of its feedback")
        state = insights.initial_state(options, summarizer)
    job = Job(
        priority=priority,
        webhook_url=webhook.url if webhook else None,
        webhook_events=webhook.events if webhook else None,
        tenant_id=tenant_id,
        task=task.value,
        status=JobStatus.QUEUED.value,
        model=model,
        options=options,
        total_items=total_items,
        done_items=0,
        error_items=0,
        input_kind=input_kind,
        input_meta=input_meta,
        label_counts={} if task is Task.SENTIMENT else None,
        insights=state,
        parent_job_id=parent_job_id,
    )
    session.add(job)
    session.flush()
    return job


@dataclass(frozen=True)
class FileRow:
    """A row of an uploaded file: its text, or the error that keeps it from running."""

    index: int
    custom_id: str | None  # None: the row has no id of its own; its index names it
    text: str | None
    error: str | None


# COPY's column order for file rows (Postgres).
_FILE_ROW_COLUMNS = (
    "job_id",
    "idx",
    "task",
    "status",
    "input_text",
    "char_count",
    "custom_id",
    "error",
    "attempts",
    "level",
    "finished_at",
)


def create_file_job(
    session: Session,
    *,
    tenant_id: str,
    task: Task,
    model: str,
    options: dict[str, Any],
    input_meta: dict[str, Any],
    rows: Iterable[FileRow],
    max_rows: int,
    check_duplicate_ids: bool,
    webhook: Webhook | None = None,
    priority: int = 2,
    summarizer: insights.Summarizer | None = None,
) -> Job:
    """Add a queued job for an uploaded file, streaming its rows in (COPY on Postgres).

    Rows with an error are stored as finished with that error, so they appear in the
    results in place. Raise (and so store nothing) if the file has no rows or too many.
    """
    job = _add_job(
        session,
        tenant_id=tenant_id,
        task=task,
        model=model,
        options=options,
        total_items=0,
        input_kind="file",
        input_meta=input_meta,
        webhook=webhook,
        priority=priority,
        summarizer=summarizer,
    )
    counts = Counter[str]()

    def tuples() -> Iterable[tuple[Any, ...]]:
        now = utcnow()
        for row in rows:
            counts["rows"] += 1
            if counts["rows"] > max_rows:
                raise RequestTooLarge(
                    f"The file has more than {max_rows} rows (TEXTQ_MAX_UPLOAD_ROWS)."
                )
            failed = row.text is None
            counts["errors"] += failed
            yield (
                job.id,
                row.index,
                task.value,
                (ItemStatus.ERROR if failed else ItemStatus.PENDING).value,
                row.text or "",
                len(row.text or ""),
                row.custom_id,
                row.error if failed else None,
                0,
                0,
                now if failed else None,
            )

    if session.get_bind().dialect.name == "postgresql":
        _copy_rows(session, tuples())
    else:
        records = (dict(zip(_FILE_ROW_COLUMNS, values, strict=True)) for values in tuples())
        for chunk in _chunks(records, INSERT_CHUNK_ROWS):
            session.execute(insert(JobItem), chunk)
    if counts["rows"] == 0:
        raise InvalidRequest("The file has no rows to process.")
    if check_duplicate_ids:
        counts["errors"] += _fail_duplicate_ids(session, job.id)
    job.total_items = counts["rows"]
    job.error_items = counts["errors"]
    session.flush()
    finish_complete_jobs(session, [job.id])
    return job


def lock_tenant_submissions(session: Session, *, tenant_id: str) -> None:
    """Hold the tenant's submission lock until this transaction ends.

    Postgres only: SQLite write transactions already run one at a time.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            select(func.pg_advisory_xact_lock(SUBMISSION_LOCK_SPACE, func.hashtext(tenant_id)))
        )


def count_active_jobs(session: Session, *, tenant_id: str) -> int:
    """Return how many of the tenant's jobs are queued or running (this transaction's too).

    Jobs textq made for other jobs (summaries of insights) are not the tenant's doing.
    """
    return int(
        session.scalar(
            select(func.count())
            .select_from(Job)
            .where(
                Job.tenant_id == tenant_id,
                _literal_in(Job.status, ACTIVE_JOB_STATUSES),
                Job.parent_job_id.is_(None),
            )
        )
        or 0
    )


def _copy_rows(session: Session, rows: Iterable[tuple[Any, ...]]) -> None:
    """Stream rows into job_items with COPY, on the session's own connection (transaction)."""
    connection = session.connection().connection.driver_connection
    statement = f"COPY job_items ({', '.join(_FILE_ROW_COLUMNS)}) FROM STDIN"
    with connection.cursor() as cursor, cursor.copy(statement) as copy:  # type: ignore[union-attr]
        for row in rows:
            copy.write_row(row)


def _fail_duplicate_ids(session: Session, job_id: uuid.UUID) -> int:
    """Turn every row whose custom_id an earlier row already used into an error row.

    Done in the database after the rows are in: remembering a million ids in the API
    process would cost more memory than the whole upload is allowed to.
    """
    first = (
        select(
            JobItem.id,
            JobItem.idx,
            JobItem.custom_id,
            func.min(JobItem.idx).over(partition_by=JobItem.custom_id).label("first_idx"),
        )
        # Rows that already failed may carry no readable id; rows without ids repeat none.
        .where(
            JobItem.job_id == job_id,
            JobItem.parent_id.is_(None),
            JobItem.status == ItemStatus.PENDING.value,
            JobItem.custom_id.is_not(None),
        )
        .subquery()
    )
    # Rows are named by the `index` of their results, as the upload's own row errors are.
    message = (
        "index "
        + cast(first.c.idx, Text)
        + ": custom_id "
        + first.c.custom_id
        + " is already used by index "
        + cast(first.c.first_idx, Text)
    )
    result = session.execute(
        update(JobItem)
        .where(JobItem.id == first.c.id, first.c.idx > first.c.first_idx)
        .values(
            status=ItemStatus.ERROR.value,
            error=message,
            input_text="",
            char_count=0,
            finished_at=utcnow(),
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def reserve_idempotency_key(
    session: Session, *, tenant_id: str, key: str, request_hash: str, ttl_s: float
) -> Job | None:
    """Reserve a key for this request; return the job an earlier identical request made.

    None means this request is the first with the key (within `ttl_s`): the caller creates
    the job and `attach_idempotency_key`s it in the same transaction. A concurrent request
    with the same key waits on the primary key until this transaction ends, then finds the
    job: twenty simultaneous retries make one job.
    """
    dialect = session.get_bind().dialect.name
    insert_into = postgresql_insert if dialect == "postgresql" else sqlite_insert
    row = {"tenant_id": tenant_id, "key": key, "request_hash": request_hash, "created_at": utcnow()}
    reserve = insert_into(IdempotencyKey).values(**row).on_conflict_do_nothing()
    if session.execute(reserve.returning(IdempotencyKey.key)).first() is not None:
        return None
    earlier = session.scalar(
        select(IdempotencyKey)
        .where(IdempotencyKey.tenant_id == tenant_id, IdempotencyKey.key == key)
        .with_for_update()
    )
    assert earlier is not None  # keys are only deleted when expired, below
    expired = earlier.created_at < utcnow() - timedelta(seconds=ttl_s)
    if expired or earlier.job_id is None:
        earlier.request_hash, earlier.created_at, earlier.job_id = request_hash, utcnow(), None
        session.flush()
        return None
    if earlier.request_hash != request_hash:
        raise IdempotencyKeyReused(
            f"Idempotency-Key {key!r} was used with a different request "
            f"(for job {earlier.job_id}); use a new key for a new request."
        )
    return get_job(session, tenant_id=tenant_id, job_id=earlier.job_id)


def attach_idempotency_key(session: Session, *, tenant_id: str, key: str, job: Job) -> None:
    """Record the job a reserved key's request created."""
    session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.tenant_id == tenant_id, IdempotencyKey.key == key)
        .values(job_id=job.id)
    )


def get_job(session: Session, *, tenant_id: str, job_id: uuid.UUID) -> Job:
    """Return the tenant's job or raise JobNotFound."""
    job = session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id))
    if job is None:
        raise JobNotFound(f"No job with id {job_id}.")
    return job


THROUGHPUT_WINDOW_S = 60


@dataclass(frozen=True)
class QueuePlace:
    """Where an unfinished job stands: work ahead of it, its own left, the recent pace."""

    items_ahead: int
    items_left: int
    items_per_s: float


def job_waited_for(session: Session, job: Job) -> Job:
    """Return the job whose items an unfinished job waits for: itself, or once its texts
    are done, the job summarizing its insights."""
    if job.insights is None or job.insights["status"] != insights.SUMMARIZING:
        return job
    child = session.get(Job, uuid.UUID(job.insights["summary_job_id"]))
    return child if child is not None else job


def queue_place(session: Session, job: Job) -> QueuePlace:
    """Return the items ahead of a job (higher priority, or its priority and older), its
    unfinished items, and how many items of its task and model finished per second lately
    (0 while no pace is known)."""
    ahead = session.scalar(
        select(func.count())
        .select_from(JobItem)
        .join(Job, Job.id == JobItem.job_id)
        .where(
            JobItem.status == ItemStatus.PENDING.value,
            JobItem.task == job.task,
            Job.model == job.model,
            Job.status.in_(_values(ACTIVE_JOB_STATUSES)),
            (Job.priority > job.priority)
            | ((Job.priority == job.priority) & (Job.created_at < job.created_at)),
        )
    )
    left = session.scalar(
        select(func.count()).where(
            JobItem.job_id == job.id,
            JobItem.status.in_(_values({ItemStatus.PENDING, ItemStatus.RUNNING})),
        )
    )
    return QueuePlace(
        items_ahead=ahead or 0, items_left=left or 0, items_per_s=_recent_pace(session, job)
    )


def _recent_pace(session: Session, job: Job) -> float:
    """Return items of the job's task and model workers finished per second lately, or 0.

    Measured between the first and the last batch that finished in the window, so a worker
    that started seconds ago is not taken for one that idled most of it. Items no worker
    ran (cache hits, rows refused at upload) do not count. One batch alone gives no pace.
    """
    since = utcnow() - timedelta(seconds=THROUGHPUT_WINDOW_S)
    ran = (
        select(JobItem.finished_at)
        .join(Job, Job.id == JobItem.job_id)
        .where(
            JobItem.task == job.task,
            JobItem.finished_at > since,
            JobItem.claimed_by.is_not(None),
            Job.model == job.model,
        )
        .subquery()
    )
    count, first, last = session.execute(
        select(func.count(), func.min(ran.c.finished_at), func.max(ran.c.finished_at))
    ).one()
    if not count or first is None or last is None or last <= first:
        return 0.0
    in_first_batch = session.scalar(
        select(func.count()).select_from(ran).where(ran.c.finished_at == first)
    )
    return (count - (in_first_batch or 0)) / (last - first).total_seconds()


def list_jobs(
    session: Session,
    *,
    tenant_id: str,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None = None,
    status: JobStatus | None = None,
    task: Task | None = None,
) -> list[Job]:
    """Return the tenant's jobs newest first, starting after the (created_at, id) key.

    Jobs textq made for other jobs (summaries of insights) are left out; they are
    readable by id.
    """
    query = select(Job).where(Job.tenant_id == tenant_id, Job.parent_job_id.is_(None))
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
    custom_id: str | None = None
    item_id: int = 0

    @property
    def failure(self) -> str | None:
        """Return why this text has no result (an error, or cancellation), or None."""
        if self.status == ItemStatus.ERROR:
            return self.error or "unknown error"
        if self.status == ItemStatus.CANCELLED:
            return self.error or "cancelled before it ran"
        return None


def list_item_outcomes(
    session: Session, *, job_id: uuid.UUID, after_index: int, limit: int
) -> list[StoredOutcome]:
    """Return the index, status, result and error of a job's texts in input order."""
    rows = session.execute(
        select(
            JobItem.idx,
            JobItem.status,
            JobItem.result,
            JobItem.error,
            JobItem.custom_id,
            JobItem.id,
        )
        .where(JobItem.job_id == job_id, JobItem.parent_id.is_(None), JobItem.idx > after_index)
        .order_by(JobItem.idx)
        .limit(limit)
    ).all()
    return [StoredOutcome(*row) for row in rows]


@dataclass(frozen=True)
class StoredChunk:
    parent_id: int
    index: int
    start: int
    end: int
    tokens: int
    status: str
    result: dict[str, Any] | None
    error: str | None


def list_first_round_chunks(session: Session, parent_ids: Sequence[int]) -> list[StoredChunk]:
    """Return the chunks the given texts were first split into, in order, with outcomes."""
    if not parent_ids:
        return []
    rows = session.execute(
        select(
            JobItem.parent_id,
            JobItem.idx,
            JobItem.span_start,
            JobItem.span_end,
            JobItem.token_count,
            JobItem.status,
            JobItem.result,
            JobItem.error,
        )
        .where(JobItem.parent_id.in_(list(parent_ids)), JobItem.level == 0)
        .order_by(JobItem.parent_id, JobItem.idx)
    ).all()
    return [StoredChunk(*row) for row in rows]


def count_reduce_parts(session: Session, parent_ids: Sequence[int]) -> dict[int, int]:
    """Return, per text, the parts that summarized its chunks' summaries (rounds after 0)."""
    if not parent_ids:
        return {}
    rows = session.execute(
        select(JobItem.parent_id, func.count())
        .where(JobItem.parent_id.in_(list(parent_ids)), JobItem.level > 0)
        .group_by(JobItem.parent_id)
    ).all()
    return {parent: count for parent, count in rows if parent is not None}


def item_texts(session: Session, item_ids: Sequence[int]) -> dict[int, str]:
    """Return the submitted text of each item (empty for a row refused at upload)."""
    if not item_ids:
        return {}
    rows = session.execute(
        select(JobItem.id, JobItem.input_text).where(JobItem.id.in_(list(item_ids)))
    ).all()
    return {int(item_id): text for item_id, text in rows}


def text_previews(
    session: Session, job_ids: Sequence[uuid.UUID], *, chars: int
) -> dict[uuid.UUID, str]:
    """Return the first `chars` characters of each job's first text (none for empty ones)."""
    if not job_ids:
        return {}
    rows = session.execute(
        select(JobItem.job_id, func.substr(JobItem.input_text, 1, chars)).where(
            JobItem.job_id.in_(list(job_ids)), JobItem.parent_id.is_(None), JobItem.idx == 0
        )
    ).all()
    return {job_id: text for job_id, text in rows if text}


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
    # Set on a chunk of a long text: the text's item id.
    parent_id: int | None = None
    # A text: its reduce round (0: as submitted). A chunk: the round it belongs to.
    level: int = 0

    @property
    def is_chunk(self) -> bool:
        return self.parent_id is not None


@dataclass(frozen=True)
class Claim:
    """Items a worker holds under one lease token until it records their outcomes."""

    token: uuid.UUID
    items: list[ClaimedItem]
    priority: int = 5


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
) -> Claim | None:
    """Claim pending items of a task and model, across jobs, up to a token budget.

    Only the highest priority with pending work is claimed from. Among its jobs the least
    recently served come first, each with a share of the claim, so one huge job cannot
    starve the others. On Postgres, rows other workers are claiming are skipped (SKIP
    LOCKED); on SQLite the caller's write transaction holds the database's write lock.
    """
    waiting = _jobs_with_pending_items(task=task, model=model)
    top = session.scalar(select(func.max(Job.priority)).where(waiting))
    if top is None:
        return None
    job_ids = session.scalars(
        select(Job.id)
        .where(waiting, Job.priority == top)
        .order_by(Job.last_claimed_at.asc().nulls_first(), Job.created_at, Job.id)
        .limit(MAX_JOBS_PER_CLAIM)
    ).all()
    candidates: list[Any] = []
    for position, job_id in enumerate(job_ids):
        share = (max_items - len(candidates)) // (len(job_ids) - position)
        candidates += session.execute(
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
                JobItem.job_id == job_id,
                JobItem.status == ItemStatus.PENDING.value,
                JobItem.task == task.value,
            )
            .order_by(JobItem.id)
            .limit(max(share, 1))
            .with_for_update(skip_locked=True)
        ).all()
    if not candidates:
        return None
    chosen = _claimable(candidates, max_tokens, max_attempts=max_attempts)
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
    session.execute(update(Job).where(Job.id.in_(job_ids)).values(last_claimed_at=now))
    options: dict[uuid.UUID, dict[str, Any]] = dict(
        session.execute(select(Job.id, Job.options).where(Job.id.in_(job_ids))).all()
    )
    return Claim(
        token=token,
        priority=top,
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


MAX_JOBS_PER_CLAIM = 64


def _jobs_with_pending_items(*, task: Task, model: str) -> Any:
    """Return the condition: an active job of this task and model with items to claim."""
    return (
        (Job.task == task.value)
        & (Job.model == model)
        & Job.status.in_(_values(ACTIVE_JOB_STATUSES))
        & exists().where(JobItem.job_id == Job.id, JobItem.status == ItemStatus.PENDING.value)
    )


def queue_depths(session: Session) -> list[tuple[str, int, datetime | None]]:
    """Return, per task, the items waiting for a worker and when the oldest one's job came."""
    pending = JobItem.status == literal_column(f"'{ItemStatus.PENDING.value}'")
    depths = []
    for task in Task:
        count = session.scalar(
            select(func.count()).select_from(JobItem).where(pending, JobItem.task == task.value)
        )
        oldest = session.scalar(
            select(Job.created_at)
            .join(JobItem, JobItem.job_id == Job.id)
            .where(pending, JobItem.task == task.value)
            .order_by(JobItem.id)
            .limit(1)
        )
        depths.append((task.value, int(count or 0), oldest))
    return depths


def higher_priority_waiting(session: Session, *, task: Task, model: str, priority: int) -> bool:
    """Return whether a job of higher priority than `priority` has items to claim."""
    waiting = _jobs_with_pending_items(task=task, model=model)
    return session.scalar(select(exists().where(waiting, Job.priority > priority))) or False


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
        .values(lease_expires_at=_lease_clock(session) + timedelta(seconds=lease_s))
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def release_claim(session: Session, *, claim_token: uuid.UUID) -> int:
    """Hand a claim's unfinished items back to the queue without counting an attempt.

    Items of a job cancelled meanwhile are not handed back: they end cancelled.
    """
    _cancel_items_of_ended_jobs(
        session,
        (JobItem.claim_token == claim_token) & (JobItem.status == ItemStatus.RUNNING.value),
    )
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


def cancel_job(session: Session, *, tenant_id: str, job_id: uuid.UUID) -> Job:
    """Cancel a job now: its waiting and pending items end cancelled, the job too.

    Items a worker is running keep running: their batch finishes and its results are kept.
    The job summarizing a job's insights is cancelled with it; cancelled on its own, its
    parent finishes with the summaries written so far.
    """
    # A child job's row is locked before its parent's, in the order finishing them takes.
    child = _lock_child_job(session, job_id)
    job = session.scalar(
        select(Job)
        .where(Job.id == job_id, Job.tenant_id == tenant_id)
        .with_for_update()
        # Read afresh under the lock, even if this session read the job before.
        .execution_options(populate_existing=True)
    )
    if job is None:
        raise JobNotFound(f"No job with id {job_id}.")
    if child is None:
        # Made while this waited for the job's row. Waiting for it now would invert the
        # order finishing takes, so a child locked by its own finish is left to it: that
        # finish then finds its parent ended and changes nothing more.
        child = _lock_child_job(session, job_id, skip_locked=True)
    if JobStatus(job.status) in TERMINAL_JOB_STATUSES:
        raise JobAlreadyFinished(
            f"Job {job.id} already finished as {job.status}; there is nothing to cancel."
        )
    _cancel_now(session, job)
    if child is not None and JobStatus(child.status) not in TERMINAL_JOB_STATUSES:
        _cancel_now(session, child)
    if job.insights is not None and job.insights["status"] != insights.DONE:
        outcomes = _summary_outcomes(session, child.id) if child is not None else {}
        state = insights.settled(job.insights, outcomes, missing=CANCELLED_BEFORE_SUMMARY)
        _store_insights(session, job.id, state)
    if job.parent_job_id is not None:
        _hand_summaries_to_parent(
            session, job.id, job.parent_job_id, missing=CANCELLED_BEFORE_SUMMARY
        )
    session.flush()
    session.refresh(job)
    return job


CANCELLED_BEFORE_SUMMARY = "cancelled before it was summarized"


def _cancel_now(session: Session, job: Job) -> None:
    """End a locked, unfinished job cancelled, with its items not yet claimed."""
    now = utcnow()
    # Rows a worker is claiming right now are skipped: waiting for them while holding the
    # job's row would deadlock with that claim. The worker learns of the cancellation at
    # its next record and its hand-back ends them cancelled.
    unclaimed = (
        select(JobItem.id)
        .where(
            JobItem.job_id == job.id,
            JobItem.status.in_(_values({ItemStatus.PENDING, ItemStatus.WAITING})),
        )
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    session.execute(
        update(JobItem)
        .where(JobItem.id.in_(unclaimed))
        .values(
            status=ItemStatus.CANCELLED.value,
            finished_at=now,
            open_parts=None,
            error=_why_cancelled(),
        )
    )
    session.execute(
        update(Job)
        .where(Job.id == job.id)
        .values(status=JobStatus.CANCELLED.value, finished_at=now)
    )
    webhook_repository.queue_event(session, job, "completed")
    _announce_finished(session, job.id)
    if job.parent_job_id is None:
        _count_when_committed(
            session, job.task, JobStatus.CANCELLED, job.created_at, job.started_at, now
        )


def ended_jobs_among(session: Session, job_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    """Return those of the jobs that have ended (a worker drops their items not yet run)."""
    return set(
        session.scalars(
            select(Job.id).where(
                Job.id.in_(sorted(set(job_ids))), Job.status.in_(_values(TERMINAL_JOB_STATUSES))
            )
        )
    )


def _cancel_items_of_ended_jobs(session: Session, which: Any) -> None:
    ended = select(Job.id).where(Job.status.in_(_values(TERMINAL_JOB_STATUSES)))
    session.execute(
        update(JobItem)
        .where(which, JobItem.job_id.in_(ended))
        .values(
            status=ItemStatus.CANCELLED.value,
            claim_token=None,
            lease_expires_at=None,
            finished_at=utcnow(),
            error=_why_cancelled(),
        )
    )


def _why_cancelled() -> Any:
    """Return SQL for what a text being cancelled had done: None if it never ran.

    A long text whose chunks ran, all or some, did run: "cancelled before it ran" would
    say otherwise.
    """
    chunk = aliased(JobItem)
    first_round = (chunk.parent_id == JobItem.id) & (chunk.level == 0)
    chunks = cast(select(func.count()).where(first_round).scalar_subquery(), Text)
    ran = cast(
        select(func.count())
        .where(first_round, chunk.status == ItemStatus.DONE.value)
        .scalar_subquery(),
        Text,
    )
    return case(
        (JobItem.parent_id.is_not(None), null()),
        (
            JobItem.level > 0,
            literal("cancelled after its ")
            + chunks
            + literal(" chunks ran, before their summaries were combined"),
        ),
        (
            JobItem.status == ItemStatus.WAITING.value,
            literal("cancelled while its chunks ran: ")
            + ran
            + literal(" of ")
            + chunks
            + literal(" had finished"),
        ),
        else_=null(),
    )


# --- outcomes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NewPart:
    """A chunk a text too long for the model's window is split into."""

    start: int
    end: int
    tokens: int
    text: str


@dataclass(frozen=True)
class Outcome:
    """The result (or error) of one claimed item, or the chunks it was split into."""

    item_id: int
    result: dict[str, Any] | None = None
    error: str | None = None
    from_cache: bool = False
    parts: list[NewPart] | None = None

    @property
    def status(self) -> ItemStatus:
        if self.parts is not None:
            return ItemStatus.WAITING
        return ItemStatus.ERROR if self.error is not None else ItemStatus.DONE


@dataclass(frozen=True)
class ItemRef:
    """Where an item whose outcome is being stored belongs."""

    job_id: uuid.UUID
    parent_id: int | None
    level: int


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
    owned = {
        row.id: ItemRef(row.job_id, row.parent_id, row.level)
        for row in session.execute(
            select(JobItem.id, JobItem.job_id, JobItem.parent_id, JobItem.level)
            .where(
                JobItem.id.in_([o.item_id for o in outcomes]),
                JobItem.claim_token == claim_token,
                JobItem.status == ItemStatus.RUNNING.value,
            )
            .order_by(JobItem.id)
            .with_for_update()
        )
    }
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
    session: Session, outcomes: Sequence[Outcome], refs: dict[int, ItemRef]
) -> None:
    """Write outcomes of locked, running items, then update their texts and jobs.

    A split item starts waiting for its new chunks; a finished chunk counts down its text,
    and the text whose last chunk finished moves on (see `_advance`). Outcomes of texts
    (not chunks) then bump their jobs' counters, and jobs whose every text finished end.
    """
    if not outcomes:
        return
    now = utcnow()
    finished = [o for o in outcomes if o.parts is None]
    if finished:
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
                for o in finished
            ],
        )
    _split(session, [o for o in outcomes if o.parts is not None], refs)
    texts = [(refs[o.item_id].job_id, o) for o in finished if refs[o.item_id].parent_id is None]
    texts += _count_down_parents(session, [o for o in finished if refs[o.item_id].parent_id], refs)
    _count_texts(session, texts)
    finish_complete_jobs(session, {job_id for job_id, _ in texts})


def _split(session: Session, splits: Sequence[Outcome], refs: dict[int, ItemRef]) -> None:
    """Make each split item wait for its chunks, and add the chunks as pending items."""
    if not splits:
        return
    added: Counter[uuid.UUID] = Counter()
    for outcome in splits:
        ref, parts = refs[outcome.item_id], outcome.parts or []
        task = session.scalar(select(JobItem.task).where(JobItem.id == outcome.item_id))
        session.execute(
            update(JobItem)
            .where(JobItem.id == outcome.item_id)
            .values(
                status=ItemStatus.WAITING.value,
                open_parts=len(parts),
                claim_token=None,
                lease_expires_at=None,
            )
        )
        rows = (
            {
                "job_id": ref.job_id,
                "idx": position,
                "task": task,
                "status": ItemStatus.PENDING.value,
                "input_text": part.text,
                "char_count": len(part.text),
                "parent_id": outcome.item_id,
                "level": ref.level,
                "span_start": part.start,
                "span_end": part.end,
                "token_count": part.tokens,
                "attempts": 0,
            }
            for position, part in enumerate(parts)
        )
        for chunk in _chunks(rows, INSERT_CHUNK_ROWS):
            session.execute(insert(JobItem), chunk)
        added[ref.job_id] += len(parts)
    for job_id in sorted(added):
        session.execute(
            update(Job).where(Job.id == job_id).values(total_parts=Job.total_parts + added[job_id])
        )


def _count_down_parents(
    session: Session, chunks: Sequence[Outcome], refs: dict[int, ItemRef]
) -> list[tuple[uuid.UUID, Outcome]]:
    """Count finished chunks against their texts; return outcomes of texts that finished."""
    per_parent = Counter(refs[o.item_id].parent_id for o in chunks)
    per_job = Counter(refs[o.item_id].job_id for o in chunks)
    for job_id in sorted(per_job):
        session.execute(
            update(Job).where(Job.id == job_id).values(done_parts=Job.done_parts + per_job[job_id])
        )
    finished: list[tuple[uuid.UUID, Outcome]] = []
    for parent_id in sorted(p for p in per_parent if p is not None):
        # One row update at a time serializes recorders: exactly one sees the count reach 0.
        left = session.execute(
            update(JobItem)
            .where(JobItem.id == parent_id, JobItem.status == ItemStatus.WAITING.value)
            .values(open_parts=JobItem.open_parts - per_parent[parent_id])
            .returning(JobItem.open_parts, JobItem.job_id)
        ).first()
        if left is not None and left.open_parts <= 0:
            outcome = _advance(session, parent_id)
            if outcome is not None:
                finished.append((left.job_id, outcome))
    return finished


def _advance(session: Session, parent_id: int) -> Outcome | None:
    """Move on a text whose chunks all finished; return its outcome if that finishes it.

    Sentiment: the text's label is its chunks' labels combined. Summaries: the chunks'
    summaries, joined, are what the text's next round summarizes (splitting again if they
    are still too long for one window).
    """
    task, level = session.execute(
        select(JobItem.task, JobItem.level).where(JobItem.id == parent_id)
    ).one()
    parts = [
        documents.FinishedPart(
            index=row.idx,
            start=row.span_start or 0,
            end=row.span_end or 0,
            tokens=row.token_count or 0,
            result=row.result,
            error=row.error,
        )
        for row in session.execute(
            select(
                JobItem.idx,
                JobItem.span_start,
                JobItem.span_end,
                JobItem.token_count,
                JobItem.result,
                JobItem.error,
            )
            .where(JobItem.parent_id == parent_id, JobItem.level == level)
            .order_by(JobItem.idx)
        )
    ]
    failure = documents.first_failure(parts)
    if failure is None and task == Task.SUMMARIZE.value:
        text = documents.joined_summaries(parts)
        session.execute(
            update(JobItem)
            .where(JobItem.id == parent_id)
            .values(
                status=ItemStatus.PENDING.value,
                level=level + 1,
                work_text=text,
                char_count=len(text),
                open_parts=None,
                attempts=0,
            )
        )
        return None
    outcome = (
        Outcome(item_id=parent_id, error=failure)
        if failure is not None
        else Outcome(item_id=parent_id, result=documents.document_sentiment(parts))
    )
    session.execute(
        update(JobItem)
        .where(JobItem.id == parent_id)
        .values(
            status=outcome.status.value,
            result=outcome.result,
            error=outcome.error,
            open_parts=None,
            finished_at=utcnow(),
        )
    )
    return outcome


def _count_texts(session: Session, finished: Sequence[tuple[uuid.UUID, Outcome]]) -> None:
    """Add finished texts to their jobs' done, errored, cached and per-label counts."""
    done = Counter(job_id for job_id, o in finished if o.status is ItemStatus.DONE)
    errored = Counter(job_id for job_id, o in finished if o.status is ItemStatus.ERROR)
    cached = Counter(job_id for job_id, o in finished if o.from_cache)
    labels: dict[uuid.UUID, Counter[str]] = {}
    labelled: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for job_id, o in finished:
        if o.result is not None and "label" in o.result:
            labels.setdefault(job_id, Counter())[str(o.result["label"])] += 1
            labelled.setdefault(job_id, []).append(o.result)
    for job_id in sorted(set(done) | set(errored)):
        values: dict[str, Any] = {
            "done_items": Job.done_items + done[job_id],
            "error_items": Job.error_items + errored[job_id],
            "cached_items": Job.cached_items + cached[job_id],
        }
        if job_id in labels:
            # The job's row is locked by this transaction from here on, so the
            # read-modify-write of the counts cannot interleave with another recorder's.
            current, state = session.execute(
                select(Job.label_counts, Job.insights).where(Job.id == job_id).with_for_update()
            ).one()
            merged = Counter(current or {})
            merged.update(labels[job_id])
            values["label_counts"] = dict(sorted(merged.items()))
            if state is not None:
                values["insights"] = insights.with_counts(state, labelled[job_id])
        counts = session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(**values)
            .returning(
                Job.id,
                Job.tenant_id,
                Job.webhook_url,
                Job.webhook_events,
                Job.done_items,
                Job.error_items,
                Job.total_items,
            )
        ).one()
        _queue_progress_event(session, counts, done[job_id] + errored[job_id])


PROGRESS_EVENT_STEPS = 10


def _queue_progress_event(session: Session, job: Any, just_finished: int) -> None:
    """Announce progress each time a job passes another tenth of its items (not the last)."""
    finished = job.done_items + job.error_items
    if not job.webhook_url or finished >= job.total_items:
        return
    step_before = (finished - just_finished) * PROGRESS_EVENT_STEPS // job.total_items
    if finished * PROGRESS_EVENT_STEPS // job.total_items > step_before:
        webhook_repository.queue_event(session, job, "progress")


def finish_complete_jobs(session: Session, job_ids: Iterable[uuid.UUID]) -> list[uuid.UUID]:
    """Move jobs whose every item has finished to their terminal status; return those ids.

    A job with insights waits instead for a job of its own that summarizes its negative
    feedback (if it has any); that child job, finishing, finishes it.
    """
    complete = session.execute(
        select(*_FINISHING_COLUMNS)
        .where(
            Job.id.in_(list(job_ids)),
            Job.status.in_(_values(ACTIVE_JOB_STATUSES)),
            Job.done_items + Job.error_items >= Job.total_items,
        )
        .order_by(Job.id)
        .with_for_update()
    ).all()
    finished = []
    for row in complete:
        if row.insights is not None and _waits_for_summaries(session, row):
            continue
        _finish_job(session, row)
        finished.append(row.id)
        if row.parent_job_id is not None:
            finished += _hand_summaries_to_parent(session, row.id, row.parent_job_id)
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
)


def _finish_job(session: Session, row: Any) -> None:
    """End a locked job whose items all finished: status, event, announcement, metrics."""
    now = utcnow()
    target = outcome_status(done=row.done_items, errored=row.error_items)
    session.execute(
        update(Job)
        .where(Job.id == row.id, Job.status.in_(_values(job_sources(target))))
        .values(status=target.value, finished_at=now)
    )
    webhook_repository.queue_event(session, row, webhook_repository.terminal_event_kind(target))
    _announce_finished(session, row.id)
    # A summary job textq made is part of its parent's run, not a job anyone submitted.
    if row.parent_job_id is None:
        _count_when_committed(session, row.task, target, row.created_at, row.started_at, now)


# --- insights ---------------------------------------------------------------------------


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
        _store_insights(session, row.id, insights.settled(state, {}))
        return False
    child = create_job(
        session,
        tenant_id=row.tenant_id,
        task=Task.SUMMARIZE,
        model=insights.summarizer_of(state).model,
        options={},
        texts=list(feedback.values()),
        custom_ids=list(feedback),
        parent_job_id=row.id,
        priority=row.priority,
    )
    _store_insights(session, row.id, insights.summarizing(state, summary_job_id=str(child.id)))
    _wake_when_committed(session, Task.SUMMARIZE)
    return True


def negative_feedback(session: Session, job_id: uuid.UUID, *, max_chars: int) -> dict[str, str]:
    """Return per category the texts labelled negative, most negative first, one per line.

    Only the texts that fit in `max_chars` are read: a running sum per category, in the
    database, stops at the limit.
    """
    result = JobItem.result
    category = func.coalesce(result["category"].as_string(), insights.ALL)
    ranked = (
        select(
            category.label("category"),
            JobItem.input_text.label("text"),
            JobItem.char_count.label("chars"),
            func.sum(JobItem.char_count + 1)
            .over(partition_by=category, order_by=(result["score"].as_float().desc(), JobItem.idx))
            .label("through"),
        )
        .where(
            JobItem.job_id == job_id,
            JobItem.parent_id.is_(None),
            JobItem.status == ItemStatus.DONE.value,
            func.lower(result["label"].as_string()).contains(insights.NEGATIVE_MARK),
        )
        .subquery()
    )
    texts: dict[str, list[str]] = {}
    for category_name, text in session.execute(
        select(ranked.c.category, ranked.c.text)
        .where(ranked.c.through - ranked.c.chars - 1 < max_chars)
        .order_by(ranked.c.category, ranked.c.through)
    ):
        texts.setdefault(category_name, []).append(text)
    joined = {name: insights.joined_feedback(lines, max_chars) for name, lines in texts.items()}
    return {name: text for name, text in joined.items() if text}


def _hand_summaries_to_parent(
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
    _store_insights(
        session,
        parent_id,
        insights.settled(parent.insights, _summary_outcomes(session, child_id), missing=missing),
    )
    return finish_complete_jobs(session, [parent_id])


def _summary_outcomes(session: Session, child_id: uuid.UUID) -> dict[str, insights.SummaryOutcome]:
    """Return each category's summary (or why it has none) from a child job's items."""
    outcomes = {}
    for row in session.execute(
        select(JobItem.idx, JobItem.status, JobItem.result, JobItem.error, JobItem.custom_id)
        .where(JobItem.job_id == child_id, JobItem.parent_id.is_(None))
        .order_by(JobItem.idx)
    ):
        stored = StoredOutcome(*row)
        if stored.status == ItemStatus.DONE and stored.result is not None:
            outcome = insights.SummaryOutcome(str(stored.result["summary_text"]), None)
        else:
            outcome = insights.SummaryOutcome(None, stored.failure or "it did not run")
        outcomes[str(stored.custom_id)] = outcome
    return outcomes


def _store_insights(session: Session, job_id: uuid.UUID, state: dict[str, Any]) -> None:
    session.execute(update(Job).where(Job.id == job_id).values(insights=state))


def _lock_child_job(
    session: Session, job_id: uuid.UUID, *, skip_locked: bool = False
) -> Job | None:
    """Return (locked) the job textq made to summarize this job's feedback, if any."""
    return session.scalar(
        select(Job)
        .where(Job.parent_job_id == job_id)
        .limit(1)
        .with_for_update(skip_locked=skip_locked)
    )


# --- wake-ups after commit --------------------------------------------------------------

# Tasks whose workers to wake once the transaction commits (see `committed_wakeups`).
_WAKE_PENDING = "textq_wake_pending"
_WAKE_COMMITTED = "textq_wake_committed"
_WAKE_HOOKED = "textq_wake_hooked"


def _wake_when_committed(session: Session, task: Task) -> None:
    """Have `task`'s workers woken after this transaction commits (never if rolled back).

    A worker woken earlier could look before the new items exist; the caller rings the
    doorbell (`committed_wakeups`), and the sweeper rings should that message be lost.
    """
    if not session.info.get(_WAKE_HOOKED):
        event.listen(session, "after_commit", _wakeups_committed)
        event.listen(session, "after_rollback", lambda s: s.info.pop(_WAKE_PENDING, None))
        session.info[_WAKE_HOOKED] = True
    session.info.setdefault(_WAKE_PENDING, set()).add(task)


def _wakeups_committed(session: Session) -> None:
    committed = session.info.setdefault(_WAKE_COMMITTED, set())
    committed.update(session.info.pop(_WAKE_PENDING, set()))


def committed_wakeups(session: Session) -> list[Task]:
    """Return (and forget) the tasks whose new work this session's commits added."""
    return sorted(session.info.pop(_WAKE_COMMITTED, set()))


def _announce_finished(session: Session, job_id: uuid.UUID) -> None:
    """Wake API requests waiting on a job (Postgres NOTIFY, sent when this transaction
    commits, never before; on SQLite they re-read with backoff)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_notify(JOB_FINISHED_CHANNEL, str(job_id))))


def _count_when_committed(
    session: Session,
    task: str,
    status: JobStatus,
    created_at: datetime,
    started_at: datetime | None,
    finished_at: datetime,
) -> None:
    """Count a finished job in the metrics once its transaction commits (never if rolled back)."""
    finished = session.info.setdefault("textq_finished_jobs", [])
    if not finished:
        event.listen(session, "after_commit", _observe_finished, once=True)
        event.listen(session, "after_rollback", lambda s: s.info.pop("textq_finished_jobs", None))
    finished.append((task, status.value, created_at, started_at, finished_at))


def _observe_finished(session: Session) -> None:
    for task, status, created_at, started_at, finished_at in session.info.pop(
        "textq_finished_jobs", []
    ):
        metrics.JOBS_FINISHED.labels(task=task, status=status).inc()
        started = started_at or finished_at
        for phase, seconds in (
            ("queue_wait", started - created_at),
            ("run", finished_at - started),
            ("end_to_end", finished_at - created_at),
        ):
            metrics.JOB_SECONDS.labels(task=task, phase=phase).observe(
                max(seconds.total_seconds(), 0.0)
            )


# --- retention --------------------------------------------------------------------------

PURGE_CHUNK_ROWS = 10_000


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
                Job.status.in_(_values(FINISHED_JOB_STATUSES)),
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
    """Delete up to PURGE_CHUNK_ROWS of a job's items; return how many (0: none left)."""
    chunk = select(JobItem.id).where(JobItem.job_id == job_id).limit(PURGE_CHUNK_ROWS)
    result = session.execute(delete(JobItem).where(JobItem.id.in_(chunk.scalar_subquery())))
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
        .where(Job.id == job_id, Job.status.in_(_values(job_sources(JobStatus.EXPIRED))))
        .values(**values)
    )


def delete_job(session: Session, *, tenant_id: str, job_id: uuid.UUID) -> None:
    """Delete a job and everything of it now: items, webhook events and attempts, keys.

    The job summarizing its insights goes with it (the foreign key cascades). A summary
    job deleted on its own is cancelled first, so that its parent finishes.
    """
    # The child's row first, as finishing it locks them (the cascade deletes it after).
    _lock_child_job(session, job_id)
    job = get_job(session, tenant_id=tenant_id, job_id=job_id)
    if job.parent_job_id is not None and JobStatus(job.status) in ACTIVE_JOB_STATUSES:
        # Having finished since it was read, it has already handed its summaries over.
        with contextlib.suppress(JobAlreadyFinished):
            cancel_job(session, tenant_id=tenant_id, job_id=job_id)
    events = select(WebhookEvent.id).where(WebhookEvent.job_id == job.id)
    session.execute(delete(WebhookAttempt).where(WebhookAttempt.event_id.in_(events)))
    session.execute(delete(WebhookEvent).where(WebhookEvent.job_id == job.id))
    session.execute(delete(IdempotencyKey).where(IdempotencyKey.job_id == job.id))
    session.execute(delete(JobItem).where(JobItem.job_id == job.id))
    session.execute(delete(Job).where(Job.id == job.id))


# --- sweeping ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpiredLeases:
    repended: int
    given_up: int


def expire_leases(session: Session, *, max_attempts: int, limit: int = 1000) -> ExpiredLeases:
    """Re-pend items whose worker stopped renewing its lease; error those tried too often.

    Expired items of a job cancelled meanwhile end cancelled instead.
    """
    _cancel_items_of_ended_jobs(
        session,
        (JobItem.status == ItemStatus.RUNNING.value)
        & (JobItem.lease_expires_at < _lease_clock(session)),
    )
    expired = session.execute(
        select(JobItem.id, JobItem.job_id, JobItem.attempts, JobItem.parent_id, JobItem.level)
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
        {row.id: ItemRef(row.job_id, row.parent_id, row.level) for row in exhausted},
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
                .where(Job.status.in_(_values(ACTIVE_JOB_STATUSES)))
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


def _literal_in(column: Any, statuses: Iterable[JobStatus | ItemStatus]) -> Any:
    """Return `column IN (...)` with the values written out, as a partial index's WHERE is.

    With bound values, a plan Postgres caches for a prepared statement cannot use the index.
    """
    values = _values(statuses)
    return column.in_(bindparam("statuses", values, expanding=True, literal_execute=True))


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
