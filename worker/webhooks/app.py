"""The webhooks process's Celery app: only the delivery task, consumed by a thread pool."""

from __future__ import annotations

from shared.broker import create_celery
from shared.config import get_settings
from worker.webhooks.delivery import add_delivery_task
from worker.webhooks.output import add_output_task

app = create_celery(get_settings())
add_delivery_task(app)
add_output_task(app)
