"""Start the webhooks process: a dispatcher of due events and output deliveries, and a Celery
pool delivering them.

Deliveries wait on receivers (up to TEXTQ_WEBHOOK_TIMEOUT_S each), so they run in a process
of their own with a thread pool, never on a model worker or in an API request.
"""

from __future__ import annotations

import os
import socket

from shared.broker import WEBHOOK_TASK, run_worker
from shared.config import Settings
from shared.db import Database
from shared.metrics import serve_metrics
from worker.webhooks import output
from worker.webhooks.delivery import Dispatcher, WebhookSender, install


def serve_webhooks(settings: Settings) -> None:
    """Run the webhooks process until it is told to stop."""
    from worker.webhooks.app import app

    db = Database(settings.resolved_database_url, application_name="textq-webhooks")
    install(WebhookSender(settings=settings, db=db))
    output.install(output.OutputSender(settings=settings, db=db))

    def publish(event_id: str) -> None:
        app.send_task(WEBHOOK_TASK, args=[event_id], queue=settings.webhook_queue)

    def publish_output(job_id: str) -> None:
        app.send_task(output.OUTPUT_TASK, args=[job_id], queue=settings.webhook_queue)

    serve_metrics(settings.webhooks_metrics_port, settings.metrics_host, "webhooks")
    dispatcher = Dispatcher(settings, db, publish, publish_output)
    dispatcher.start()
    try:
        status = run_worker(
            app,
            [
                "worker",
                f"--loglevel={settings.log_level}",
                "--pool=threads",
                f"--concurrency={settings.webhook_concurrency}",
                f"--queues={settings.webhook_queue}",
                # The pid: unique where two share a host (see worker.runtime.celery_node_name).
                f"--hostname=textq-webhooks-{os.getpid()}@{socket.gethostname()}",
                "--without-gossip",
                "--without-mingle",
            ],
        )
    finally:
        dispatcher.stop()
        db.dispose()
    if status:  # a crash must not look like a clean stop to `textq up`, Docker or Kubernetes
        raise SystemExit(status)
