"""Prometheus metrics of this API process, and the queue as the database has it."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from shared.drift import pinned_reference
from shared.jobs.drift_metrics import DriftCollector
from shared.jobs.queue import QueueCollector
from shared.metrics import process_registry

router = APIRouter(tags=["health"])


def _queue_registry(request: Request) -> CollectorRegistry:
    """The app's own registry for the database's collectors (tests build many apps per process)."""
    registry: CollectorRegistry | None = getattr(request.app.state, "queue_registry", None)
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(QueueCollector(request.app.state.db))
        settings = request.app.state.settings
        pinned = pinned_reference(settings.drift_reference_start, settings.drift_reference_end)
        registry.register(DriftCollector(request.app.state.db, pinned=pinned))
        request.app.state.queue_registry = registry
    return registry


@router.get(
    "/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}}
)
async def metrics(request: Request) -> Response:
    """Return the metrics in Prometheus' text format (no key: scrape it from inside)."""
    registry = _queue_registry(request)
    # With `textq api --workers N`, the counts of all N processes, whichever one answers.
    own = process_registry()
    body = await run_in_threadpool(lambda: generate_latest(own) + generate_latest(registry))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
