"""The worker's Celery app: the drain task, and the shutdown signal that ends a drain early."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_shutting_down

from shared.broker import create_celery
from shared.config import get_settings
from worker import runtime as worker_runtime
from worker.tasks import add_drain_task

app = create_celery(get_settings())
add_drain_task(app)


@worker_shutting_down.connect
def _finish_current_batch(**_: Any) -> None:
    worker_runtime.SHUTTING_DOWN.set()
