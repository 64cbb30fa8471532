"""`/v1/jobs/{id}/highlights`: a sentiment job's score histogram and most extreme texts."""

from __future__ import annotations

from fastapi import APIRouter, Query

from api.deps import DatabaseDep, TenantDep
from api.responses import API_KEY_SCHEMES, KEYED, problems
from api.submit import parse_job_id
from shared.errors import InvalidRequest
from shared.jobs.highlights import Highlights, job_highlights
from shared.jobs.reads import get_job
from shared.states import Task

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=API_KEY_SCHEMES)


@router.get(
    "/{job_id}/highlights",
    response_model=Highlights,
    responses=problems(*KEYED, 404, 422),
)
def get_job_highlights(
    job_id: str,
    db: DatabaseDep,
    tenant_id: TenantDep,
    bins: int = Query(default=10, ge=2, le=50, description="Equal bins over scores 0 to 1."),
    top: int = Query(default=5, ge=1, le=50, description="How many extremes of each kind."),
) -> Highlights:
    """Return a sentiment job's score histogram and most negative and most positive texts.

    Readable while the job runs (over the texts finished so far) and after it ends.
    """
    with db.read() as session:
        job = get_job(session, tenant_id=tenant_id, job_id=parse_job_id(job_id))
        if job.task != Task.SENTIMENT.value:
            raise InvalidRequest(
                f"Job {job.id} is a {job.task} job; highlights are for sentiment jobs."
            )
        return job_highlights(session, job.id, bins=bins, top=top)
