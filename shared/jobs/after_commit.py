"""Effects that follow a commit: waking workers, counting finished jobs."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import event
from sqlalchemy.orm import Session

from shared import metrics
from shared.states import JobStatus, Task

# Tasks whose workers to wake once the transaction commits (see `committed_wakeups`).
_WAKE_PENDING = "textq_wake_pending"


_WAKE_COMMITTED = "textq_wake_committed"


_WAKE_HOOKED = "textq_wake_hooked"


def wake_when_committed(session: Session, task: Task) -> None:
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


def count_when_committed(
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
