"""Prometheus metrics: what each textq process counts (queue gauges: shared/jobs/queue.py).

The API serves them at /metrics; a worker and the webhooks process serve theirs on a port
of their own (TEXTQ_WORKER_METRICS_PORT, TEXTQ_WEBHOOKS_METRICS_PORT). Every name starts
with `textq_`; deploy/ dashboards and alerts use these names.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)

log = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600)

JOBS_SUBMITTED = Counter(
    "textq_jobs_submitted_total", "Jobs the API accepted.", ["task", "input_kind"]
)
JOBS_FINISHED = Counter(
    "textq_jobs_finished_total", "Jobs that reached a final status.", ["task", "status"]
)
JOB_SECONDS = Histogram(
    "textq_job_seconds",
    "Seconds a finished job spent: waiting for a worker, running, and in all.",
    ["task", "phase"],
    buckets=LATENCY_BUCKETS_S,
)
UNANSWERED_DRAINS = Counter(
    "textq_unanswered_drains_total",
    "Drains a worker started itself because its task's work waited through the doorbells.",
    ["task"],
)
ITEMS_PROCESSED = Counter(
    "textq_items_processed_total", "Texts and chunks a worker ran, by outcome.", ["task", "outcome"]
)
TOKENS_PROCESSED = Counter(
    "textq_tokens_processed_total", "Tokens of the texts a worker ran through its model.", ["task"]
)
BATCH_SIZE = Histogram(
    "textq_batch_size",
    "Texts per model batch.",
    ["task"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
BATCH_PADDING = Histogram(
    "textq_batch_padding_ratio",
    "Share of a batch's token slots that are padding.",
    ["task"],
    buckets=(0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0),
)
BATCH_SECONDS = Histogram(
    "textq_batch_seconds", "Seconds one model batch took.", ["task"], buckets=LATENCY_BUCKETS_S
)
MODEL_LOAD_SECONDS = Gauge(
    "textq_model_load_seconds", "Seconds the worker took to load a model.", ["task", "model"]
)
MODEL_LOADS = Counter(
    "textq_model_loads_total",
    "Models a worker loaded, by catalogue name (a reload after an eviction counts again).",
    ["model"],
)
MODEL_EVICTIONS = Counter(
    "textq_model_evictions_total",
    "Models a worker unloaded to keep under its memory budget, by catalogue name.",
    ["model"],
)
MODELS_LOADED_BYTES = Gauge(
    "textq_models_loaded_bytes",
    "Bytes of parameters and buffers of the models a worker holds loaded.",
)
WEBHOOK_ATTEMPTS = Counter(
    "textq_webhook_attempts_total",
    "Webhook delivery attempts, by what came of them.",
    ["outcome"],
)


# prometheus_client's multiprocess mode: each process keeps its values in files in this folder.
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def share_between_processes(processes: int) -> None:
    """Make the `processes` API processes about to start count into one shared folder.

    Each process of `textq api --workers N` would keep counters of its own, and a scrape
    reaches one of them: Prometheus would see the count jump between processes and read each
    drop as a counter reset. The processes read the folder from the environment when they
    import prometheus_client, so call this before they start. One process, or a folder
    already set: nothing to do. The folder goes when this process exits.
    """
    if processes <= 1 or os.environ.get(MULTIPROCESS_DIR_ENV):
        return
    folder = tempfile.mkdtemp(prefix="textq-metrics-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ[MULTIPROCESS_DIR_ENV] = folder


def process_registry() -> CollectorRegistry:
    """Return what this process's metrics page shows: its own metrics, or its siblings' too."""
    if not os.environ.get(MULTIPROCESS_DIR_ENV):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # sums every process's files at each scrape
    return registry


def serve_metrics(port: int, host: str, what: str) -> None:
    """Serve this process's metrics on `host:port` (0: not at all); never stop the process."""
    if port == 0:
        return
    try:
        start_http_server(port, addr=host)
    except OSError as error:  # e.g. two workers on one box left on the same port
        log.error(
            "%s metrics not served on %s:%d: %s (set another port)",
            what,
            host,
            port,
            error,
            extra={"action": "metrics"},
        )
        return
    log.info("%s metrics on http://%s:%d/metrics", what, host, port)
