"""Recover from lost workers and lost messages: expire stale leases and ring for orphaned work.

Each sweep also ends the items of jobs whose deadline passed before they started.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta

from shared import worker_registry
from shared.broker import Doorbell, create_celery
from shared.catalogue import CatalogueModel
from shared.config import Settings
from shared.db import Database
from shared.jobs.after_commit import use_doorbell
from shared.jobs.claims import expire_leases
from shared.jobs.deadlines import expire_past_deadlines
from shared.jobs.queue import catalogue_models_awaited, models_waiting_for_a_worker
from shared.jobs.result_cache import forget_results_before
from shared.jobs.retention import (
    jobs_past_expiry,
    jobs_past_retention,
    mark_expired,
    purge_items,
)
from shared.models import utcnow
from shared.states import Task

log = logging.getLogger(__name__)

UNSERVED_WARNING_EVERY_S = 300.0
CACHE_EVICTION_EVERY_S = 60.0
FORGET_UNSEEN_WORKERS_AFTER_S = 24 * 3600.0
DEADLINE_EXPIRY_SLICE = 5000


def purge_expired_jobs(
    db: Database, *, default_days: int, batch_jobs: int = 100, own_expiry_only: bool = False
) -> int:
    """Purge every job past retention (or, `own_expiry_only`, past its own
    `expires_after_s`); return how many expired.

    Items go in chunks of their own transactions, so a million-row job never holds one
    long transaction; the job is marked expired once its last chunk is gone.
    """
    expired = 0
    while True:
        with db.read() as session:
            due = (
                jobs_past_expiry(session, limit=batch_jobs)
                if own_expiry_only
                else jobs_past_retention(session, default_days=default_days, limit=batch_jobs)
            )
        for job_id in due:
            while True:
                with db.write() as session:
                    if purge_items(session, job_id) == 0:
                        mark_expired(session, job_id)
                        break
            expired += 1
        if len(due) < batch_jobs:
            break
    if expired:
        log.info("purged %d jobs past retention", expired, extra={"action": "purged"})
    return expired


class Sweeper:
    """One sweep: re-pend items of dead workers, then ring for pending work nobody is doing."""

    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        doorbell: Doorbell,
        served: Sequence[CatalogueModel],
        worker_name: str | None = None,
        on_unanswered: Callable[[Task], None] | None = None,
    ) -> None:
        self.worker_name = worker_name
        # Called with a task whose work waited through two sweeps' rings with nobody on it.
        self.on_unanswered = on_unanswered
        self._waiting_since: dict[Task, float] = {}
        self.settings = settings
        self.db = db
        self.doorbell = doorbell
        use_doorbell(db.session_info, doorbell)  # work its sweeps make rings at commit
        self.served = list(served)
        self._warned_at: dict[tuple[Task, str, str | None], float] = {}
        self._forgot_at = -CACHE_EVICTION_EVERY_S
        self._purged_at = -settings.retention_sweep_interval_s

    def sweep(self) -> None:
        """Run one sweep; never raises (a sweep that fails is simply tried again later)."""
        try:
            with self.db.write() as session:
                expired = expire_leases(session, max_attempts=self.settings.max_attempts)
            if expired.repended or expired.given_up:
                log.warning(
                    "leases expired: %d items back to pending, %d given up",
                    expired.repended,
                    expired.given_up,
                    extra={"action": "leases_expired"},
                )
            self._expire_past_deadlines()
            self._say_alive()
            self._forget_old_results()
            self._purge_past_retention()
            # A job's own expiry is seconds to hours, not days: kept at every sweep (one
            # indexed query) rather than at the hourly retention sweep.
            purge_expired_jobs(
                self.db, default_days=self.settings.retention_days, own_expiry_only=True
            )
            with self.db.read() as session:
                waiting = models_waiting_for_a_worker(session, self.served)
                tasks = dict.fromkeys(model.task for model in self.served)
                awaited = {task: catalogue_models_awaited(session, task) for task in tasks}
            for model in waiting:
                self.doorbell.ring(model.task, model_name=model.name, always=True)
            self._answer_unanswered(list(dict.fromkeys(model.task for model in waiting)))
            self._warn_about_unserved_models(awaited)
        except Exception as error:
            log.warning("sweep failed: %s", error, extra={"action": "sweep_failed"})

    def _answer_unanswered(self, waiting: list[Task]) -> None:
        """Hand on the tasks that stayed waiting for two sweep intervals despite the rings.

        A ring is answered in milliseconds by an idle worker, and a busy one holds a live
        lease (so its task is not waiting): work that still waits two sweeps later had its
        doorbells lost on the way.
        """
        now = time.monotonic()
        for task in list(self._waiting_since):
            if task not in waiting:
                del self._waiting_since[task]
        for task in waiting:
            since = self._waiting_since.setdefault(task, now)
            if self.on_unanswered and now - since >= 2 * self.settings.sweep_interval_s:
                self.on_unanswered(task)

    def _expire_past_deadlines(self) -> None:
        """End the pending items of jobs whose deadline passed, a slice per transaction."""
        ended = 0
        while True:
            with self.db.write() as session:
                count = expire_past_deadlines(session, clock=utcnow(), limit=DEADLINE_EXPIRY_SLICE)
            ended += count
            if count < DEADLINE_EXPIRY_SLICE:
                break
        if ended:
            log.info(
                "%d items not started before their job's deadline",
                ended,
                extra={"action": "deadline_passed"},
            )

    def _say_alive(self) -> None:
        """Keep this worker listed, and drop workers that died without saying so."""
        if self.worker_name is None:
            return
        with self.db.write() as session:
            worker_registry.worker_seen(session, self.worker_name)
            worker_registry.forget_workers_unseen_since(
                session, utcnow() - timedelta(seconds=FORGET_UNSEEN_WORKERS_AFTER_S)
            )

    def _forget_old_results(self) -> None:
        now = time.monotonic()
        if now - self._forgot_at < CACHE_EVICTION_EVERY_S:
            return
        self._forgot_at = now
        cutoff = utcnow() - timedelta(seconds=self.settings.result_cache_ttl_s)
        with self.db.write() as session:
            forget_results_before(session, cutoff)

    def _purge_past_retention(self) -> None:
        """Delete inputs and results of jobs past retention, a chunk per transaction."""
        now = time.monotonic()
        if now - self._purged_at < self.settings.retention_sweep_interval_s:
            return
        self._purged_at = now
        purge_expired_jobs(self.db, default_days=self.settings.retention_days)

    def _warn_about_unserved_models(
        self, awaited: dict[Task, dict[tuple[str, str | None], int]]
    ) -> None:
        """Say when jobs wait for a model this worker does not serve (rate-limited, per model).

        Without a worker for their model such jobs would wait silently forever.
        """
        now = time.monotonic()
        for task, counts in awaited.items():
            mine = [model for model in self.served if model.task is task]
            for (source, name), jobs in counts.items():
                key = (task, source, name)
                recently = now - self._warned_at.get(key, -UNSERVED_WARNING_EVERY_S)
                served = any(
                    model.source == source and name in (None, model.name) for model in mine
                )
                if served or recently < UNSERVED_WARNING_EVERY_S:
                    continue
                self._warned_at[key] = now
                log.warning(
                    "%d %s jobs wait for model %r (%s); this worker serves %s. Unless another "
                    "worker serves that model, serve it here (--models, %s)",
                    jobs,
                    task.value,
                    name or source,
                    source,
                    ", ".join(repr(model.name) for model in mine),
                    "TEXTQ_MODELS_FILE"
                    if self.settings.models_file
                    else self.settings.model_setting_name(task),
                    extra={"action": "model_unserved", "task": task.value},
                )


class SweeperThread:
    """Sweeps every TEXTQ_SWEEP_INTERVAL_S on a thread of the worker, with its own connections."""

    def __init__(
        self,
        settings: Settings,
        *,
        served: Sequence[CatalogueModel],
        worker_name: str | None = None,
        on_unanswered: Callable[[Task], None] | None = None,
    ) -> None:
        self.sweeper = Sweeper(
            settings=settings,
            db=Database(settings.resolved_database_url, application_name="textq-sweeper"),
            doorbell=Doorbell(create_celery(settings), settings),
            served=served,
            worker_name=worker_name,
            on_unanswered=on_unanswered,
        )
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="textq-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=self.sweeper.settings.sweep_interval_s + 5)
        self.sweeper.db.dispose()

    def _run(self) -> None:
        while True:
            self.sweeper.sweep()
            if self._stopped.wait(self.sweeper.settings.sweep_interval_s):
                return
