"""Queries of insights: a job's negative feedback, its summary job, the stored state."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from shared.jobs import insights
from shared.jobs.reads import StoredOutcome
from shared.models import Job, JobItem
from shared.states import ItemStatus


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


def summary_outcomes(session: Session, child_id: uuid.UUID) -> dict[str, insights.SummaryOutcome]:
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


def store_insights(session: Session, job_id: uuid.UUID, state: dict[str, Any]) -> None:
    session.execute(update(Job).where(Job.id == job_id).values(insights=state))


def lock_child_job(session: Session, job_id: uuid.UUID, *, skip_locked: bool = False) -> Job | None:
    """Return (locked) the job textq made to summarize this job's feedback, if any."""
    return session.scalar(
        select(Job)
        .where(Job.parent_job_id == job_id)
        .limit(1)
        .with_for_update(skip_locked=skip_locked)
    )
