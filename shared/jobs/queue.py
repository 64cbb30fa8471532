"""What waits for workers: queue depth, a job's place in the queue, the recent pace."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import exists, func, literal_column, select
from sqlalchemy.orm import Session

from shared.catalogue import CatalogueModel
from shared.db import Database
from shared.jobs.claims import lease_clock, of_model_name
from shared.jobs.rows import status_values
from shared.models import Job, JobItem, utcnow
from shared.states import ACTIVE_JOB_STATUSES, ItemStatus, Task

log = logging.getLogger(__name__)

THROUGHPUT_WINDOW_S = 60


@dataclass(frozen=True)
class QueuePlace:
    """Where an unfinished job stands: work ahead of it, its own left, the recent pace."""

    items_ahead: int
    items_left: int
    items_per_s: float


def queue_place(session: Session, job: Job, *, pace_since: datetime | None = None) -> QueuePlace:
    """Return the items ahead of a job (higher priority, or its priority and older), its
    unfinished items, and how many items of its task and model finished per second lately
    (0 while no pace is known), not counting those finished before `pace_since` (when the
    last of the live workers that run them started: a minute that spans a restart is not
    their pace).

    Its model is its source and catalogue name, as workers claim them: a job of another
    catalogue model of the same source is not ahead of it.
    """
    # Summed per job ahead, not counted over a join of items and jobs: planned on statistics
    # taken while few items were pending, that join ran as a scan of every pending item for
    # each job (265 ms a read at 2,000 queued one-text jobs, against 6 analyzed). A subquery
    # in the select list stays one probe of the pending-items index per job.
    pending_of_job = (
        select(func.count())
        .where(JobItem.job_id == Job.id, JobItem.status == ItemStatus.PENDING.value)
        .scalar_subquery()
    )
    ahead = session.scalar(
        select(func.coalesce(func.sum(pending_of_job), 0)).where(
            # A job's items are of its task (submit, upload and split write them so).
            Job.task == job.task,
            Job.model == job.model,
            of_model_name(job.model_name),
            Job.status.in_(status_values(ACTIVE_JOB_STATUSES)),
            (Job.priority > job.priority)
            | ((Job.priority == job.priority) & (Job.created_at < job.created_at)),
        )
    )
    left = session.scalar(
        select(func.count()).where(
            JobItem.job_id == job.id,
            JobItem.status.in_(status_values({ItemStatus.PENDING, ItemStatus.RUNNING})),
        )
    )
    return QueuePlace(
        items_ahead=int(ahead or 0),
        items_left=left or 0,
        items_per_s=_recent_pace(session, job, pace_since),
    )


def _recent_pace(session: Session, job: Job, not_before: datetime | None) -> float:
    """Return items of the job's task and model workers finished per second lately, or 0.

    Measured between the first and the last batch that finished in the window, so a worker
    that started seconds ago is not taken for one that idled most of it. Items no worker
    ran (cache hits, rows refused at upload) do not count. One batch alone gives no pace.
    """
    since = utcnow() - timedelta(seconds=THROUGHPUT_WINDOW_S)
    if not_before is not None:
        since = max(since, not_before)
    ran = (
        select(JobItem.finished_at)
        .join(Job, Job.id == JobItem.job_id)
        .where(
            JobItem.task == job.task,
            JobItem.finished_at > since,
            JobItem.claimed_by.is_not(None),
            Job.model == job.model,
            of_model_name(job.model_name),
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


def models_awaited(session: Session, task: Task) -> dict[str, int]:
    """Return how many unfinished jobs of a task wait for each model (by source)."""
    return dict(
        session.execute(
            select(Job.model, func.count())
            .where(Job.task == task.value, Job.status.in_(status_values(ACTIVE_JOB_STATUSES)))
            .group_by(Job.model)
        ).all()
    )


def catalogue_models_awaited(session: Session, task: Task) -> dict[tuple[str, str | None], int]:
    """Return how many unfinished jobs of a task wait for each (source, catalogue name)."""
    rows = session.execute(
        select(Job.model, Job.model_name, func.count())
        .where(Job.task == task.value, Job.status.in_(status_values(ACTIVE_JOB_STATUSES)))
        .group_by(Job.model, Job.model_name)
    ).all()
    return {(source, name): count for source, name, count in rows}


def models_waiting_for_a_worker(
    session: Session, served: Sequence[CatalogueModel]
) -> list[CatalogueModel]:
    """Return the served models with pending items and none of theirs under a live lease.

    Their doorbell may have been lost (broker wiped, API died before publishing).
    """
    now = lease_clock(session)
    waiting: list[CatalogueModel] = []
    for model in served:
        of_model = (
            (Job.id == JobItem.job_id)
            & (Job.model == model.source)
            & ((Job.model_name == model.name) | Job.model_name.is_(None))
        )
        pending = session.scalar(
            select(
                exists()
                .where(JobItem.task == model.task.value, JobItem.status == ItemStatus.PENDING.value)
                .where(of_model)
                .where(Job.status.in_(status_values(ACTIVE_JOB_STATUSES)))
            )
        )
        working = pending and session.scalar(
            select(
                exists().where(
                    JobItem.task == model.task.value,
                    JobItem.status == ItemStatus.RUNNING.value,
                    JobItem.lease_expires_at > now,
                    of_model,
                )
            )
        )
        if pending and not working:
            waiting.append(model)
    return waiting


class QueueCollector(Collector):
    """Pending items per task and the age of the oldest, read at each scrape."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "textq_queue_depth", "Items waiting for a worker.", labels=["task"]
        )
        oldest = GaugeMetricFamily(
            "textq_queue_oldest_age_seconds",
            "Age of the job of the oldest item waiting for a worker.",
            labels=["task"],
        )
        try:
            rows = self._read()
        except Exception as error:  # a scrape must not fail because the database blinked
            log.warning("queue metrics unavailable: %s", error, extra={"action": "metrics"})
            rows = []
        for task, count, age_s in rows:
            depth.add_metric([task], count)
            oldest.add_metric([task], age_s)
        yield depth
        yield oldest

    def _read(self) -> list[tuple[str, int, float]]:
        now = utcnow()
        with self.db.read() as session:
            return [
                (task, count, (now - oldest).total_seconds() if oldest else 0.0)
                for task, count, oldest in queue_depths(session)
            ]
