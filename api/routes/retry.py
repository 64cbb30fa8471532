"""`POST /v1/jobs/{id}/retry`: run a finished job's failed texts again."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from api.body import json_body
from api.deps import DatabaseDep, TenantDep
from api.responses import API_KEY_SCHEMES, KEYED, problems
from api.submit import parse_job_id, present, read_previews
from shared.jobs.retry import retry_job
from shared.schemas import JobRead, JobRetry

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=API_KEY_SCHEMES)

BODY_DOC = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": JobRetry.model_json_schema()}},
    }
}


async def read_retry(request: Request) -> JobRetry:
    """Return the retry's options: the JSON body's, or the defaults for an empty body."""
    if not (await request.body()).strip():
        return JobRetry()
    return await json_body(JobRetry)(request)


@router.post(
    "/{job_id}/retry",
    response_model=JobRead,
    responses=problems(
        *KEYED,
        400,
        404,
        409,
        413,
        415,
        422,
        s409="Nothing to retry: the job is not partial or failed (the problem says why), "
        "has insights, or its deadline passed and no new one was given.",
    ),
    openapi_extra=BODY_DOC,
)
def retry(
    job_id: str,
    request: Request,
    db: DatabaseDep,
    tenant_id: TenantDep,
    body: Annotated[JobRetry, Depends(read_retry)],
) -> JobRead:
    """Run a partial or failed job's failed texts again; the job is `running` again.

    Deadline-expired texts are retried too; `{"deadline": ...}` gives the job a new
    deadline (without one, the job keeps its own, which must not have passed). A long
    text retries only its failed chunks. When the texts finish the job ends again, and its
    webhook gets a new finished event.
    """
    with db.write() as session:
        job = retry_job(
            session, tenant_id=tenant_id, job_id=parse_job_id(job_id), deadline=body.deadline
        )
        previews = read_previews(session, [job])
    return present(job, request, previews)
