"""Create jobs the way the API does, for tests that start below the API."""

from __future__ import annotations

from typing import Any

from shared.db import Database
from shared.jobs.claims import claim_items
from shared.jobs.insights import Summarizer
from shared.jobs.submit import create_job
from shared.models import DEFAULT_TENANT_ID, Job
from shared.states import Task


def make_job(
    db: Database,
    *,
    texts: list[str],
    task: Task = Task.SENTIMENT,
    model: str = "model-a",
    model_name: str | None = None,
    options: dict[str, Any] | None = None,
    tenant_id: str = DEFAULT_TENANT_ID,
    priority: int = 5,
    summarizer: Summarizer = Summarizer(model="summary-model", max_chars=20_000),
) -> Job:
    with db.write() as session:
        return create_job(
            session,
            tenant_id=tenant_id,
            task=task,
            model=model,
            model_name=model_name,
            options=options or {},
            texts=texts,
            priority=priority,
            summarizer=summarizer,
        )


def claim(db: Database, *, task: Task = Task.SENTIMENT, model: str = "model-a", **kwargs: Any):  # type: ignore[no-untyped-def]
    arguments = {
        "model_revision": "rev-1",
        "worker": "test-worker",
        "max_tokens": 10_000,
        "max_items": 100,
        "lease_s": 60.0,
    } | kwargs
    with db.write() as session:
        return claim_items(session, task=task, model=model, **arguments)
