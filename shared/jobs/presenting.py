"""A job as clients see it, for the API's answers and for webhook bodies alike."""

from __future__ import annotations

from datetime import timedelta

from shared.jobs import insights
from shared.models import Job
from shared.schemas import (
    ChunkProgress,
    JobLinks,
    JobRead,
    OutputRead,
    Progress,
    WebhookSettings,
)
from shared.states import JobStatus, Task


def present_job(job: Job, base_url: str) -> JobRead:
    """Return the job's status object, its links under `base_url` (no trailing slash)."""
    link = f"{base_url}/v1/jobs/{job.id}"
    return JobRead(
        id=job.id,
        task=Task(job.task),
        status=JobStatus(job.status),
        progress=Progress(
            total=job.total_items,
            done=job.done_items,
            errored=job.error_items,
            cached=job.cached_items,
            chunks=ChunkProgress(total=job.total_parts, done=job.done_parts),
        ),
        model=job.model,
        model_name=job.model_name,
        model_revision=job.model_revision,
        options=job.options or {},
        input={"kind": job.input_kind, **(job.input_meta or {})},
        labels=job.label_counts if job.task == Task.SENTIMENT.value else None,
        insights=insights.present(job.insights) if job.insights is not None else None,
        webhook=(
            WebhookSettings.model_validate(
                {"url": job.webhook_url, "events": job.webhook_events or []}
            )
            if job.webhook_url
            else None
        ),
        priority=job.priority,
        output=OutputRead.model_validate(job.output) if job.output else None,
        expires_after_s=job.expires_after_s,
        expires_at=(
            job.finished_at + timedelta(seconds=job.expires_after_s)
            if job.expires_after_s and job.finished_at
            else None
        ),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        deadline=job.deadline,
        links=JobLinks(self=link, results=f"{link}/results"),
    )
