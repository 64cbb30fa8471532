"""Recover from lost workers and lost messages: expire stale leases and ring for orphaned work."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

from celery import bootsteps

from shared import repository
from shared.celery_app import Doorbell
from shared.config import Settings
from shared.db import Database
from shared.states import Task

log = logging.getLogger(__name__)


class Sweeper:
    """One sweep: re-pend items of dead workers, then ring for pending work nobody is doing."""

    def __init__(
        self, *, settings: Settings, db: Database, doorbell: Doorbell, tasks: Sequence[Task]
    ) -> None:
        self.settings = settings
        self.db = db
        self.doorbell = doorbell
        self.tasks = list(tasks)

    def sweep(self) -> None:
        """Run one sweep; never raises (a sweep that fails is simply tried again later)."""
        try:
            with self.db.write() as session:
                expired = repository.expire_leases(session, max_attempts=self.settings.max_attempts)
            if expired.repended or expired.given_up:
                log.warning(
                    "leases expired: %d items back to pending, %d given up",
                    expired.repended,
                    expired.given_up,
                    extra={"action": "leases_expired"},
                )
            with self.db.read() as session:
                waiting = repository.tasks_waiting_for_a_worker(session, self.tasks)
            for task in waiting:
                self.doorbell.ring(task)
        except Exception as error:
            log.warning("sweep failed: %s", error, extra={"action": "sweep_failed"})


class SweeperStep(bootsteps.StartStopStep):
    """Runs the sweeper on the worker main process's timer (the worker loop, not a beat)."""

    requires: ClassVar[set[str]] = {"celery.worker.components:Timer"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.sweeper: Sweeper | None = None
        self.tref: Any = None

    def start(self, parent: Any) -> None:
        from shared.config import get_settings
        from worker.runtime import worker_tasks

        settings = get_settings()
        self.sweeper = Sweeper(
            settings=settings,
            db=Database(settings.resolved_database_url, application_name="textq-sweeper"),
            doorbell=Doorbell(parent.app, settings),
            tasks=worker_tasks(settings),
        )
        parent.timer.call_after(0.0, self.sweeper.sweep)
        self.tref = parent.timer.call_repeatedly(settings.sweep_interval_s, self.sweeper.sweep)

    def stop(self, parent: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None
        if self.sweeper is not None:
            self.sweeper.db.dispose()
