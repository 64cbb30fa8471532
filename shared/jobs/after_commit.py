"""Effects that must follow a commit, queued during the transaction: the one way textq does it.

Waking workers (a doorbell), waking API requests that wait on a job (NOTIFY) and counting
a finished job in the metrics happen only if the transaction that made them true commits:
each is queued on the session while the transaction runs, run once after it commits, and
dropped if it rolls back. The API and the worker queue them the same way; the process
that owns a `Database` says once which doorbell its sessions ring (`use_doorbell`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Hashable, Iterable
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import ARRAY, Text, bindparam, event, func, select
from sqlalchemy.orm import Session, SessionTransaction

from shared import metrics
from shared.states import JobStatus, Task

log = logging.getLogger(__name__)

# Postgres channel a job's id is sent on when it finishes (API requests wait on it).
JOB_FINISHED_CHANNEL = "textq_job_finished"
# Postgres channel a job's id is sent on when its items' outcomes are stored (event streams).
JOB_PROGRESS_CHANNEL = "textq_job_progress"

_EFFECTS = "textq_after_commit"  # session.info: key -> effect, in the order queued
_DOORBELL = "textq_doorbell"  # session.info: what wake-ups ring
_ANNOUNCED = "textq_progress_announced"  # session.info: jobs this transaction announced


class Doorbell(Protocol):
    """Tells the workers of a task that there is work in the database (shared.broker)."""

    def ring(self, task: Task, *, job_id: uuid.UUID | None = None) -> bool: ...


def use_doorbell(info: dict[str, Any], doorbell: Doorbell) -> None:
    """Have wake-ups ring `doorbell`: for every session of a process (`Database.session_info`)
    or for one session (`session.info`)."""
    info[_DOORBELL] = doorbell


def run_after_commit(
    session: Session, effect: Callable[[], object], *, key: Hashable | None = None
) -> None:
    """Run `effect` once this session's transaction commits; drop it if it rolls back.

    Effects queued with the same `key` run once (the first one queued).
    """
    effects = session.info.get(_EFFECTS)
    if effects is None:
        effects = session.info[_EFFECTS] = {}
        if not event.contains(session, "after_commit", _run_effects):
            event.listen(session, "after_commit", _run_effects)
            event.listen(session, "after_transaction_end", _drop_effects)
    effects.setdefault(object() if key is None else key, effect)


def _run_effects(session: Session) -> None:
    for effect in session.info.pop(_EFFECTS, {}).values():
        try:
            effect()
        except Exception:  # the transaction committed: an effect failing must not say otherwise
            log.exception("an after-commit effect failed", extra={"action": "after_commit"})


def _drop_effects(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the outermost transaction ended: committed or not
        session.info.pop(_EFFECTS, None)


def wake_workers(
    session: Session,
    task: Task,
    *,
    model_name: str | None = None,
    job_id: uuid.UUID | None = None,
) -> None:
    """Have the workers of a catalogue model of `task` woken (its doorbell rung) once this
    transaction commits; `model_name` None wakes every worker of the task.

    A worker woken earlier could look before the new items exist. Without a doorbell (a
    process that does not ring) nothing rings: the sweeper rings for work left waiting.
    """
    doorbell = session.info.get(_DOORBELL)
    if doorbell is not None:
        run_after_commit(
            session,
            lambda: doorbell.ring(task, model_name=model_name, job_id=job_id),
            key=("wake", task, model_name),
        )


def announce_finished(session: Session, *job_ids: uuid.UUID) -> None:
    """Wake API requests waiting on these jobs once this transaction commits.

    On Postgres a NOTIFY is itself held until commit and dropped on rollback, so it is sent
    in the transaction, as one more statement of it (one for all the jobs); on SQLite
    waiters re-read with backoff.
    """
    if job_ids and session.get_bind().dialect.name == "postgresql":
        _notify_each(session, JOB_FINISHED_CHANNEL, [str(job_id) for job_id in job_ids])


def announce_progress(session: Session, job_ids: Iterable[uuid.UUID]) -> None:
    """Wake API event streams following these jobs once this transaction commits.

    Sent in the transaction, as `announce_finished` is, at most once per job per
    transaction however many batches it records (one statement for all new jobs).
    On SQLite nothing is sent: streams re-read with backoff.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    announced = session.info.get(_ANNOUNCED)
    if announced is None:
        announced = session.info[_ANNOUNCED] = set()
        if not event.contains(session, "after_transaction_end", _forget_announced):
            event.listen(session, "after_transaction_end", _forget_announced)
    fresh = sorted({str(job_id) for job_id in job_ids} - announced)
    if not fresh:
        return
    announced.update(fresh)
    _notify_each(session, JOB_PROGRESS_CHANNEL, fresh)


def _notify_each(session: Session, channel: str, payloads: list[str]) -> None:
    """NOTIFY `channel` once per payload, all in one statement."""
    session.execute(_NOTIFY_EACH, {"channel": channel, "payloads": payloads})


_NOTIFY_EACH = select(
    func.pg_notify(
        bindparam("channel", type_=Text),
        func.unnest(bindparam("payloads", type_=ARRAY(Text))).column_valued("id"),
    )
)


def _forget_announced(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_ANNOUNCED, None)


def count_finished_job(
    session: Session,
    task: str,
    status: JobStatus,
    created_at: datetime,
    started_at: datetime | None,
    finished_at: datetime,
) -> None:
    """Count a finished job in the metrics once its transaction commits."""

    def observe() -> None:
        metrics.JOBS_FINISHED.labels(task=task, status=status.value).inc()
        started = started_at or finished_at
        for phase, seconds in (
            ("queue_wait", started - created_at),
            ("run", finished_at - started),
            ("end_to_end", finished_at - created_at),
        ):
            metrics.JOB_SECONDS.labels(task=task, phase=phase).observe(
                max(seconds.total_seconds(), 0.0)
            )

    run_after_commit(session, observe)
