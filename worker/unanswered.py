"""Drain a task on a thread of the worker when the sweeper finds its doorbells unanswered."""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor

from shared import metrics
from shared.states import Task
from worker.tasks import drain_unanswered

log = logging.getLogger(__name__)


class UnansweredDrains:
    """Runs `drain_unanswered` for the sweeper, one at a time, off the sweeper's thread.

    The sweeper keeps sweeping (leases, deadlines) while such a drain runs for up to a drain
    slice; a task handed on while one runs is skipped, as the next sweep hands it on again.
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="textq-unanswered")
        self._running: Future[None] | None = None

    def __call__(self, task: Task) -> None:
        """Start draining `task` unless a drain of this kind is running (sweeper thread only)."""
        if self._running is not None and not self._running.done():
            return
        self._running = self._executor.submit(self._drain, task)

    def stop(self) -> None:
        """Wait for a drain in progress (it stops after its batch once the worker stops)."""
        self._executor.shutdown(wait=True)

    @staticmethod
    def _drain(task: Task) -> None:
        try:
            recorded = drain_unanswered(task)
        except Exception as error:  # the next sweep tries again; the thread must not die
            log.warning("drain without a doorbell failed: %s", error, extra={"action": "drain"})
            return
        if recorded:
            metrics.UNANSWERED_DRAINS.labels(task=task.value).inc()
            log.warning(
                "no doorbell for %s reached this worker although its work waited; drained "
                "%d items without one (is the broker losing messages?)",
                task.value,
                recorded,
                extra={"action": "unanswered_drain", "task": task.value},
            )
