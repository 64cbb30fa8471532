"""The FastAPI application: routes, error mapping, and one database engine per process."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from api.body_limit import BodyLimit
from api.errors import install_error_handlers
from api.key_cache import VerifiedKeys
from api.log_scope import RequestLogScope
from api.ratelimit import RateLimiter
from api.routes import (
    batches,
    classic,
    drift,
    events,
    health,
    highlights,
    jobs,
    metrics,
    models,
    problems,
    retry,
    shadow,
    ui,
    webhooks,
)
from api.waiting import JobWaiter
from shared.broker import Doorbell, create_celery
from shared.config import Settings, get_settings
from shared.db import Database
from shared.jobs.after_commit import use_doorbell
from shared.logs import configure_logging
from shared.schemas import BatchCreate, ClassicSummarizeRequest, ClassicTextRequest, JobCreate
from shared.tracing import instrument_api, setup_tracing

# Bodies read by api.body.json_body, which FastAPI does not see as body parameters.
DOCUMENTED_BODIES: list[type[BaseModel]] = [
    JobCreate,
    BatchCreate,
    ClassicTextRequest,
    ClassicSummarizeRequest,
]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for these settings (the environment's by default)."""
    settings = settings or get_settings()
    if not logging.getLogger().handlers:  # a process uvicorn spawned for --workers
        configure_logging(settings.log_level, settings.log_format)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.db = Database(
            settings.resolved_database_url,
            application_name="textq-api",
            pool_size=settings.api_db_pool,
        )
        app.state.doorbell = Doorbell(create_celery(settings), settings)
        use_doorbell(app.state.db.session_info, app.state.doorbell)
        app.state.rate_limiter = _rate_limiter(settings)
        app.state.waiter = JobWaiter(app.state.db)
        app.state.waiter.start()
        yield
        app.state.waiter.stop()
        if app.state.rate_limiter is not None:
            await app.state.rate_limiter.close()
        app.state.db.dispose()

    app = FastAPI(
        title="textq",
        summary="Sentiment and summarization with Hugging Face models as durable jobs.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.verified_keys = VerifiedKeys(settings.api_key_cache_s)
    install_error_handlers(app)
    app.add_middleware(RequestLogScope)
    app.add_middleware(
        BodyLimit,
        max_request_bytes=settings.max_request_bytes,
        max_upload_bytes=settings.max_upload_bytes,
    )
    app.include_router(jobs.router)
    app.include_router(retry.router)
    app.include_router(events.router)
    app.include_router(highlights.router)
    app.include_router(drift.router)
    app.include_router(batches.router)
    app.include_router(models.router)
    app.include_router(shadow.router)
    app.include_router(webhooks.router)
    app.include_router(classic.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(problems.router)
    ui.mount(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    if setup_tracing(settings, "textq-api"):
        instrument_api(app)
    return app


def _rate_limiter(settings: Settings) -> RateLimiter | None:
    """Return the per-key limiter (in Redis when the broker is Redis), or None when off."""
    if not settings.requires_api_key or settings.rate_limit_per_s <= 0:
        return None
    broker = settings.resolved_broker_url
    return RateLimiter(
        rate_per_s=settings.rate_limit_per_s,
        burst=settings.rate_limit_burst,
        redis_url=broker if broker.startswith(("redis://", "rediss://")) else None,
        prefix=settings.queue_prefix,
    )


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in DOCUMENTED_BODIES:
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components[model.__name__] = body
        app.openapi_schema = schema
    return app.openapi_schema
