"""Start a worker: load its models, start its sweeper, then consume its queues.

The worker runs Celery's solo pool: one process owns the device and runs every drain itself.
A prefork pool would fork a child after the parent opened database connections and broker
channels (a SQLite write lock held at fork time stays held in the child forever; a child
killed while holding billiard's shared read lock hangs its successors) and CUDA must not be
initialised before a fork. One process per device, restarted by its supervisor (`textq up`,
Docker, Kubernetes) if it dies, has none of these traps; leases and the sweeper recover the
items it held.
"""

from __future__ import annotations

import logging

from shared import worker_registry
from shared.broker import run_worker
from shared.config import Settings
from shared.metrics import UNANSWERED_DRAINS, serve_metrics
from shared.tracing import setup_tracing
from worker import runtime as worker_runtime
from worker.model_registry import ResolvedModel
from worker.sweeper import SweeperThread
from worker.unanswered import UnansweredDrains

log = logging.getLogger(__name__)


def serve(settings: Settings, resolved: dict[str, ResolvedModel]) -> None:
    """Run the worker until it is told to stop (`resolved`: each served model's files, by
    catalogue name)."""
    setup_tracing(settings, "textq-worker")
    runtime = worker_runtime.WorkerRuntime.start(settings, resolved)
    serve_metrics(settings.worker_metrics_port, settings.metrics_host, "worker")
    worker_runtime.install(runtime)
    list_this_worker(runtime)
    unanswered = UnansweredDrains()
    for task in runtime.tasks():  # at 0 from the start, like every counter a panel reads
        UNANSWERED_DRAINS.labels(task=task.value)
    sweeper = SweeperThread(
        settings,
        served=[served.entry for served in runtime.served.values()],
        worker_name=runtime.name,
        on_unanswered=unanswered,
    )
    sweeper.start()
    from worker.celery_app import app

    try:
        status = run_worker(
            app,
            [
                "worker",
                f"--loglevel={settings.log_level}",
                "--pool=solo",
                f"--queues={','.join(runtime.queues())}",
                f"--hostname={worker_runtime.celery_node_name(settings)}",
                "--without-gossip",
                "--without-mingle",
            ],
        )
    finally:
        # However Celery ended (a crash too), a drain the sweeper started stops after its batch.
        worker_runtime.SHUTTING_DOWN.set()
        sweeper.stop()
        unanswered.stop()
        try:
            with runtime.db.write() as session:
                worker_registry.forget_worker(session, runtime.name)
        except Exception as error:  # the row ages out; a stop must not fail on it
            log.warning("could not unlist this worker: %s", error, extra={"action": "unlist"})
        runtime.stop()
    if status:  # a crash must not look like a clean stop to `textq up`, Docker or Kubernetes
        raise SystemExit(status)


def list_this_worker(runtime: worker_runtime.WorkerRuntime) -> None:
    """List this worker, what it serves and each loaded model's limits."""
    runtime.list_in_registry()
