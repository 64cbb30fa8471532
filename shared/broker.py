"""The Celery app both sides share, and the doorbell message that wakes workers."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import Celery, signals

from shared.config import Settings
from shared.states import Task
from shared.unanswered_rings import UnansweredRings

log = logging.getLogger(__name__)

DRAIN_TASK = "textq.drain"
WEBHOOK_TASK = "textq.deliver_webhook"
EMBEDDED_POLLING_INTERVAL_S = 0.05
# kombu's file-system transport with atomic writes (see the module for the race it closes).
EMBEDDED_TRANSPORT = "shared.embedded_broker:Transport"


def _broker_options(settings: Settings) -> dict[str, Any]:
    if settings.is_embedded_broker:
        folders = {
            name: settings.broker_dir / name
            for name in ("queue", "processed", "control", "unreadable")
        }
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folders["queue"]),
            "data_folder_out": str(folders["queue"]),
            "processed_folder": str(folders["processed"]),
            "control_folder": str(folders["control"]),
            "unreadable_folder": str(folders["unreadable"]),
            "store_processed": False,
            "polling_interval": EMBEDDED_POLLING_INTERVAL_S,
        }
    return {
        "visibility_timeout": settings.broker_visibility_timeout_s,
        **settings.broker_transport_options,
    }


def create_celery(settings: Settings) -> Celery:
    """Create the Celery app for these settings (no result backend: results live in the DB)."""
    app = Celery("textq", broker=settings.resolved_broker_url, set_as_current=False)
    app.conf.update(
        broker_transport=EMBEDDED_TRANSPORT if settings.is_embedded_broker else None,
        broker_transport_options=_broker_options(settings),
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_create_missing_queues=True,
        task_default_queue=f"{settings.queue_prefix}.default",
        worker_prefetch_multiplier=1,
        # A drain interrupted by a lost connection keeps going; its claims stay valid and a
        # re-delivered doorbell finds nothing left to claim.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        enable_utc=True,
    )
    return app


def run_worker(app: Celery, argv: list[str]) -> int:
    """Run `celery worker` with `argv` (starting with "worker") here until it stops.

    Returns the worker's exit status: 0 after a warm shutdown, 1 after an unrecoverable error
    (Celery's own `worker_main` drops it, so a process that crashed would exit 0).
    """
    started: list[Any] = []

    def remember(sender: Any, **_: Any) -> None:
        started.append(sender)

    signals.worker_init.connect(remember, weak=False)
    try:
        app.worker_main(argv)
    finally:
        signals.worker_init.disconnect(remember)
    exitcode = started[-1].exitcode if started else None
    return int(exitcode or 0)


class Doorbell:
    """Publishes the small message that tells workers of a task there is work in the DB."""

    def __init__(self, app: Celery, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.unanswered = UnansweredRings(settings)

    def ring(
        self,
        task: Task,
        *,
        model_name: str | None = None,
        job_id: uuid.UUID | None = None,
        always: bool = False,
    ) -> bool:
        """Publish a doorbell for a catalogue model of `task` (None: for any model of it),
        unless one rung there still waits for a worker; return False (and log) if the
        broker is unreachable.

        Only workers serving the model take its doorbell. A lost doorbell delays a job but
        never loses it: the sweeper rings again (`always`, even over a ring that seems to
        wait) for pending items that no worker is working on.
        """
        queue = self.settings.queue_for(task, model_name)
        if not self.unanswered.mark(queue) and not always:
            return True  # the waiting ring's drain will claim this job's items too
        try:
            self.app.send_task(
                DRAIN_TASK,
                kwargs={
                    "task": task.value,
                    "model": model_name,
                    "job_id": str(job_id) if job_id else None,
                },
                queue=queue,
                retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2},
            )
        except Exception as error:  # the broker's client raises many types
            self.unanswered.clear([queue])
            log.warning(
                "could not publish doorbell for %s: %s",
                task.value,
                error,
                extra={"action": "doorbell_failed", "task": task.value, "job_id": str(job_id)},
            )
            return False
        return True

    def hold(self, queues: list[str]) -> None:
        """Say a drain is working on the models of `queues` and will look for work again
        before it ends: rings there are not needed until it lets go (`release`). Renew it
        within `shared.unanswered_rings.RING_MEMORY_S`."""
        self.unanswered.hold(queues)

    def release(self, queues: list[str]) -> None:
        """Let go of `queues`: the next job committed there rings. The drain must look for
        work once more after this, for jobs whose rings its hold made unneeded."""
        self.unanswered.clear(queues)

    def check(self) -> None:
        """Raise unless the broker accepts a connection."""
        with self.app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
