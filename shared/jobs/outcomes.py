"""Store a claim's outcomes: results, splits into chunks, chunks counted down, job counts."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import bindparam, case, insert, literal, select, text, update
from sqlalchemy.orm import Session

from shared.jobs import documents, insights
from shared.jobs.after_commit import announce_progress
from shared.jobs.cancel import cancel_items_of_ended_jobs, why_cancelled
from shared.jobs.drift_counts import count_drift
from shared.jobs.lifecycle import finish_complete_jobs
from shared.jobs.result_cache import remember_results
from shared.jobs.rows import INSERT_SLICE_ROWS, ids_bound, slices, status_values
from shared.jobs.work import Outcome
from shared.models import Job, JobItem, utcnow
from shared.states import TERMINAL_JOB_STATUSES, ItemStatus, JobStatus, Task
from shared.webhooks.events import queue_event


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
            _OWNED[session.get_bind().dialect.name == "postgresql"],
            {"ids": [o.item_id for o in outcomes], "claim_token": claim_token},
        )
    }
    kept = [o for o in outcomes if o.item_id in owned]
    finished = store_outcomes(session, kept, {o.item_id: owned[o.item_id] for o in kept})
    if cache_entries:
        remember_results(session, cache_entries)
    # Last, so the counts' rows (shared by every recorder of the model and tenant) stay
    # locked only until this transaction commits.
    split = [(owned[o.item_id].job_id, o) for o in kept if o.chunks is not None]
    count_drift(session, finished + split, now=utcnow())
    return len(kept)


# By whether the database is Postgres (see `ids_bound`). Built once: every record runs it.
_OWNED = {
    postgres: select(JobItem.id, JobItem.job_id, JobItem.parent_id, JobItem.level)
    .where(
        ids_bound(JobItem.id, "ids", postgres=postgres),
        JobItem.claim_token == bindparam("claim_token"),
        JobItem.status == ItemStatus.RUNNING.value,
    )
    .order_by(JobItem.id)
    .with_for_update()
    for postgres in (False, True)
}


def store_outcomes(
    session: Session, outcomes: Sequence[Outcome], refs: dict[int, ItemRef]
) -> list[tuple[uuid.UUID, Outcome]]:
    """Write outcomes of locked, running items, then update their texts and jobs; return
    the outcomes of texts (not chunks) that finished, each with its job id.

    A split item starts waiting for its new chunks, unless its job ended meanwhile (then it
    ends cancelled); a finished chunk counts down its text, and the text whose last chunk
    finished moves on (see `_advance`). Outcomes of texts (not chunks) then bump their jobs'
    counters, and jobs whose every text finished end.
    """
    if not outcomes:
        return []
    now = utcnow()
    finished = [o for o in outcomes if o.chunks is None]
    if finished:
        _write_finished(session, finished, now)
    splits = [o for o in outcomes if o.chunks is not None]
    chunks = [o for o in finished if refs[o.item_id].parent_id is not None]
    ended: set[uuid.UUID] = set()
    if splits or chunks:
        # Such a record locks job rows at several steps (parts added, parts counted, texts
        # counted): taken here at once and in id order, as a record of whole texts takes its
        # own in one statement, no two records can hold each other's (see `lock_jobs`).
        ended = lock_jobs(session, {ref.job_id for ref in refs.values()})
    _split(session, splits, refs)
    if late := [o.item_id for o in splits if refs[o.item_id].job_id in ended]:
        # A cancel skips the texts a claim holds: a text split as its job was cancelled, and
        # its new chunks, end here as the cancel ends the rest (no worker claims items of an
        # ended job). With the jobs locked first, a later cancel waits and finds them itself.
        cancel_items_of_ended_jobs(
            session,
            JobItem.status.in_(status_values({ItemStatus.PENDING, ItemStatus.WAITING}))
            & (JobItem.id.in_(late) | JobItem.parent_id.in_(late)),
        )
    texts = [(refs[o.item_id].job_id, o) for o in finished if refs[o.item_id].parent_id is None]
    texts += _count_down_parents(session, chunks, refs)
    _count_texts(session, texts)
    finish_complete_jobs(session, {job_id for job_id, _ in texts})
    announce_progress(session, {ref.job_id for ref in refs.values()})
    return texts


def _write_finished(session: Session, finished: Sequence[Outcome], now: datetime) -> None:
    """Write finished items' results or errors: on Postgres in one statement for them all.

    A statement per row (an executemany) costs each row a round of Python parameter work and
    a server-side execution; one UPDATE joined to the rows, sent as one JSON array of
    [id, status, result, error] (one `orjson.dumps`, no per-value work in the driver), costs
    a round trip for the whole record. (orjson: 0.24 µs a sentiment row against the standard
    library's 2.6, on the record thread, whose Python takes the GIL from the model's.)
    """
    if session.get_bind().dialect.name == "postgresql":
        rows = [[o.item_id, o.status.value, o.result, o.error] for o in finished]
        encoded = orjson.dumps(rows, option=orjson.OPT_NON_STR_KEYS).decode()
        session.execute(_UPDATE_FINISHED, {"rows": encoded, "now": now})
        return
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


_UPDATE_FINISHED = text(
    """
    UPDATE job_items AS item
    SET status = v.row ->> 1, result = NULLIF(v.row -> 2, 'null'::jsonb), error = v.row ->> 3,
        lease_expires_at = NULL, finished_at = :now
    FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS v(row)
    WHERE item.id = CAST(v.row ->> 0 AS bigint)
    """
)


def lock_jobs(session: Session, job_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    """Lock the jobs' rows in id order and return the ids of those that ended.

    Every locker of several job rows takes them in one id-ordered statement (this, a
    claim's job start, the counts of a record of whole texts), after the items it holds
    and before the texts it counts down, so no two wait for each other.
    """
    rows = session.execute(_LOCK_JOBS, {"job_ids": sorted(job_ids)})
    return {row.id for row in rows if JobStatus(row.status) in TERMINAL_JOB_STATUSES}


_LOCK_JOBS = (
    select(Job.id, Job.status)
    .where(Job.id.in_(bindparam("job_ids", expanding=True)))
    .order_by(Job.id)
    .with_for_update()
)


def _split(session: Session, splits: Sequence[Outcome], refs: dict[int, ItemRef]) -> None:
    """Make each split item wait for its chunks, and add the chunks as pending items.

    Three statements for all the record's splits, not three for each: a claim of long texts
    splits dozens of them.
    """
    if not splits:
        return
    tasks = {
        row.id: row.task
        for row in session.execute(
            select(JobItem.id, JobItem.task).where(JobItem.id.in_([o.item_id for o in splits]))
        )
    }
    session.execute(
        update(JobItem),
        [
            {
                "id": outcome.item_id,
                "status": ItemStatus.WAITING.value,
                "open_parts": len(outcome.chunks or []),
                "claim_token": None,
                "lease_expires_at": None,
            }
            for outcome in splits
        ],
    )
    added: Counter[uuid.UUID] = Counter()
    rows = []
    for outcome in splits:
        ref, parts = refs[outcome.item_id], outcome.chunks or []
        rows += [
            {
                "job_id": ref.job_id,
                "idx": position,
                "task": tasks[outcome.item_id],
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
        ]
        added[ref.job_id] += len(parts)
    for rows_slice in slices(rows, INSERT_SLICE_ROWS):
        session.execute(insert(JobItem), rows_slice)
    for job_id in sorted(added):
        session.execute(
            update(Job).where(Job.id == job_id).values(total_parts=Job.total_parts + added[job_id])
        )


def _count_down_parents(
    session: Session, chunks: Sequence[Outcome], refs: dict[int, ItemRef]
) -> list[tuple[uuid.UUID, Outcome]]:
    """Count finished chunks against their texts; return outcomes of texts that finished.

    The texts' rows are locked first, in id order as every recorder locks them, then counted
    down in one statement: of two recorders finishing chunks of one text, exactly one sees
    its count reach 0.
    """
    per_parent = Counter(refs[o.item_id].parent_id for o in chunks)
    per_job = Counter(refs[o.item_id].job_id for o in chunks)
    for job_id in sorted(per_job):
        session.execute(
            update(Job).where(Job.id == job_id).values(done_parts=Job.done_parts + per_job[job_id])
        )
    parents = sorted(p for p in per_parent if p is not None)
    if not parents:
        return []
    session.execute(
        select(JobItem.id).where(JobItem.id.in_(parents)).order_by(JobItem.id).with_for_update()
    ).all()
    counted = session.execute(
        update(JobItem)
        .where(JobItem.id.in_(parents), JobItem.status == ItemStatus.WAITING.value)
        .values(
            open_parts=JobItem.open_parts - case(per_parent, value=JobItem.id, else_=literal(0))
        )
        .returning(JobItem.id, JobItem.open_parts)
        .execution_options(synchronize_session=False)
    ).all()
    if len(counted) < len(parents):
        # Texts cancelled while these chunks ran: what they say they got to is out of date.
        session.execute(
            update(JobItem)
            .where(JobItem.id.in_(parents), JobItem.status == ItemStatus.CANCELLED.value)
            .values(error=why_cancelled())
            .execution_options(synchronize_session=False)
        )
    return _advance(session, sorted(row.id for row in counted if row.open_parts <= 0))


def _advance(session: Session, parent_ids: Sequence[int]) -> list[tuple[uuid.UUID, Outcome]]:
    """Move on texts whose chunks all finished; return the outcomes of those that finish,
    each with its job id.

    Sentiment: a text's label is its chunks' labels combined. Summaries: the chunks'
    summaries, joined, are what the text's next round summarizes (splitting again if they
    are still too long for one window). Three statements for all the texts, and one more
    for each round of summaries.
    """
    if not parent_ids:
        return []
    parents = session.execute(
        select(JobItem.id, JobItem.job_id, JobItem.task, JobItem.level)
        .where(JobItem.id.in_(parent_ids))
        .order_by(JobItem.id)
    ).all()
    level_of = {parent.id: parent.level for parent in parents}
    parts: dict[int, list[documents.FinishedChunk]] = {parent.id: [] for parent in parents}
    for row in session.execute(
        select(
            JobItem.parent_id,
            JobItem.level,
            JobItem.idx,
            JobItem.span_start,
            JobItem.span_end,
            JobItem.token_count,
            JobItem.result,
            JobItem.error,
        )
        .where(JobItem.parent_id.in_(parent_ids))
        .order_by(JobItem.parent_id, JobItem.idx)
    ):
        if row.level == level_of[row.parent_id]:  # this round's chunks, not earlier rounds'
            parts[row.parent_id].append(
                documents.FinishedChunk(
                    index=row.idx,
                    start=row.span_start or 0,
                    end=row.span_end or 0,
                    tokens=row.token_count or 0,
                    result=row.result,
                    error=row.error,
                )
            )
    finished: list[tuple[uuid.UUID, Outcome]] = []
    for parent in parents:
        failure = documents.first_failure(parts[parent.id])
        if failure is None and parent.task == Task.SUMMARIZE.value:
            text = documents.joined_summaries(parts[parent.id])
            session.execute(
                update(JobItem)
                .where(JobItem.id == parent.id)
                .values(
                    status=ItemStatus.PENDING.value,
                    level=parent.level + 1,
                    work_text=text,
                    char_count=len(text),
                    open_parts=None,
                    attempts=0,
                )
            )
            continue
        outcome = (
            Outcome(item_id=parent.id, error=failure)
            if failure is not None
            else Outcome(item_id=parent.id, result=documents.document_sentiment(parts[parent.id]))
        )
        finished.append((parent.job_id, outcome))
    if finished:
        now = utcnow()
        session.execute(
            update(JobItem),
            [
                {
                    "id": outcome.item_id,
                    "status": outcome.status.value,
                    "result": outcome.result,
                    "error": outcome.error,
                    "open_parts": None,
                    "finished_at": now,
                }
                for _, outcome in finished
            ],
        )
    return finished


def _count_texts(session: Session, finished: Sequence[tuple[uuid.UUID, Outcome]]) -> None:
    """Add finished texts to their jobs' done, errored, cached and per-label counts.

    Two statements for all the record's jobs, not two per job: one reads and locks their
    rows (in id order, as every recorder locks them), one writes each job's new counts.
    Locked, the rows cannot change in between, so the counts are written whole.
    """
    done = Counter(job_id for job_id, o in finished if o.status is ItemStatus.DONE)
    errored = Counter(job_id for job_id, o in finished if o.status is ItemStatus.ERROR)
    cached = Counter(job_id for job_id, o in finished if o.from_cache)
    labels: dict[uuid.UUID, Counter[str]] = {}
    labelled: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for job_id, o in finished:
        if o.result is not None and "label" in o.result:
            labels.setdefault(job_id, Counter())[str(o.result["label"])] += 1
            labelled.setdefault(job_id, []).append(o.result)
    job_ids = sorted(set(done) | set(errored))
    if not job_ids:
        return
    jobs = session.execute(_LOCK_COUNTED, {"job_ids": job_ids}).all()
    rows = []
    for job in jobs:
        row: dict[str, Any] = {
            "id": job.id,
            "done_items": job.done_items + done[job.id],
            "error_items": job.error_items + errored[job.id],
            "cached_items": job.cached_items + cached[job.id],
        }
        if job.id in labels:
            merged = Counter(job.label_counts or {})
            merged.update(labels[job.id])
            row["label_counts"] = dict(sorted(merged.items()))
            if job.insights is not None:
                row["insights"] = insights.with_counts(job.insights, labelled[job.id])
        rows.append(row)
    _write_counts(session, rows)
    for job, row in zip(jobs, rows, strict=True):
        _queue_progress_event(
            session, job, row["done_items"] + row["error_items"], done[job.id] + errored[job.id]
        )


def _write_counts(session: Session, rows: list[dict[str, Any]]) -> None:
    """Write jobs' new counts: on Postgres one UPDATE joined to the rows sent as one JSON
    array, as `_write_finished` does, instead of an executemany that runs a statement per
    job (a claim of one-text jobs records dozens). A job whose labels or insights did not
    change sends null for them and keeps its own. Unlike the ORM's update by primary key,
    it does not refresh `Job` objects loaded in the session: the recorders read columns,
    not objects."""
    if session.get_bind().dialect.name != "postgresql":
        # By primary key, grouped by the columns each row sets: an executemany per group.
        session.execute(update(Job), rows)
        return
    encoded = orjson.dumps(
        [
            [
                str(row["id"]),
                row["done_items"],
                row["error_items"],
                row["cached_items"],
                row.get("label_counts"),
                row.get("insights"),
            ]
            for row in rows
        ],
        option=orjson.OPT_NON_STR_KEYS,
    )
    session.execute(_UPDATE_COUNTS, {"rows": encoded.decode()})


_UPDATE_COUNTS = text(
    """
    UPDATE jobs AS job
    SET done_items = CAST(v.row ->> 1 AS integer), error_items = CAST(v.row ->> 2 AS integer),
        cached_items = CAST(v.row ->> 3 AS integer),
        label_counts = COALESCE(NULLIF(v.row -> 4, 'null'::jsonb), job.label_counts),
        insights = COALESCE(NULLIF(v.row -> 5, 'null'::jsonb), job.insights)
    FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS v(row)
    WHERE job.id = CAST(v.row ->> 0 AS uuid)
    """
)


_COUNTED_COLUMNS = (
    Job.id,
    Job.tenant_id,
    Job.webhook_url,
    Job.webhook_events,
    Job.done_items,
    Job.error_items,
    Job.cached_items,
    Job.total_items,
    Job.label_counts,
    Job.insights,
)


_LOCK_COUNTED = (
    select(*_COUNTED_COLUMNS)
    .where(Job.id.in_(bindparam("job_ids", expanding=True)))
    .order_by(Job.id)
    .with_for_update()
)


PROGRESS_EVENT_STEPS = 10


def _queue_progress_event(session: Session, job: Any, finished: int, just_finished: int) -> None:
    """Announce progress each time a job passes another tenth of its items (not the last);
    `finished`: the job's texts finished, with the `just_finished` now counted."""
    if not job.webhook_url or finished >= job.total_items:
        return
    step_before = (finished - just_finished) * PROGRESS_EVENT_STEPS // job.total_items
    if finished * PROGRESS_EVENT_STEPS // job.total_items > step_before:
        queue_event(session, job, "progress")
