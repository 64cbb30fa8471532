"""The worker's Celery app: the drain task, the sweeper, and warm models per pool process."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from typing import Any

from celery.signals import worker_process_init, worker_process_shutdown, worker_shutting_down

from shared.celery_app import create_celery
from shared.config import get_settings
from worker import runtime as worker_runtime
from worker.models import ModelUnavailable
from worker.sweeper import SweeperStep
from worker.tasks import register

log = logging.getLogger(__name__)

app = create_celery(get_settings())
app.steps["worker"].add(SweeperStep)
register(app)


@worker_process_init.connect
def _load_models(**_: Any) -> None:
    """Load the models once per pool process, before it takes its first message."""
    try:
        worker_runtime.install(worker_runtime.WorkerRuntime.start(get_settings()))
    except ModelUnavailable as error:
        # Respawning a pool process that cannot load its model would loop forever:
        # stop the whole worker with the reason instead.
        log.error("%s", error)
        os.kill(os.getppid(), signal.SIGTERM)
        raise


@worker_process_shutdown.connect
def _close(**_: Any) -> None:
    with contextlib.suppress(RuntimeError):
        worker_runtime.current().stop()


@worker_shutting_down.connect
def _finish_current_batch(**_: Any) -> None:
    worker_runtime.SHUTTING_DOWN.set()
