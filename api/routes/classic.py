"""The classic synchronous endpoints (`/analyze`, `/summarize`) for clients of the Flask example.

Each submits an ordinary one-text job and waits for it up to TEXTQ_SYNC_TIMEOUT_S; a job
still running then is answered with 202 and its link, like `POST /v1/jobs`. The job's
deadline is the end of that wait (none when it is 0 s): a text no worker started by then is
not run at all, and its job ends `failed` with `not started before the deadline`.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from api.body import json_body, request_body_doc
from api.deps import WaiterDep
from api.responses import API_KEY_SCHEMES, KEYED, LOCATION, Responses, problems
from api.submit import Submitter, SubmitterDep, present
from api.waiting import JobWaiter
from shared.db import Database
from shared.errors import InferenceFailed, InvalidRequest
from shared.jobs.reads import get_job, list_item_outcomes
from shared.model_limits import UNFIT_OPTIONS
from shared.models import Job, utcnow
from shared.schemas import (
    ClassicLabel,
    ClassicSummarizeRequest,
    ClassicSummary,
    ClassicTextRequest,
    JobRead,
)
from shared.states import TERMINAL_JOB_STATUSES, JobStatus, Task

router = APIRouter(tags=["classic"], dependencies=API_KEY_SCHEMES)

RESPONSES: Responses = {
    202: {
        "model": JobRead,
        "description": "Still running after the timeout: the job, to poll.",
        "headers": LOCATION,
    },
    **problems(*KEYED, 400, 413, 415, 422, 500),
}


async def analyze(
    body: Annotated[ClassicTextRequest, Depends(json_body(ClassicTextRequest))],
    request: Request,
    submitter: SubmitterDep,
    waiter: WaiterDep,
) -> Any:
    """Label one text and answer `[{"label": ..., "score": ...}]`, as the pipeline did."""
    return await _run_and_wait(
        request, submitter, waiter, Task.SENTIMENT, body.text, {}, model_name=body.model
    )


async def summarize(
    body: Annotated[ClassicSummarizeRequest, Depends(json_body(ClassicSummarizeRequest))],
    request: Request,
    submitter: SubmitterDep,
    waiter: WaiterDep,
) -> Any:
    """Summarize one text and answer `[{"summary_text": ...}]`, as the pipeline did."""
    return await _run_and_wait(
        request, submitter, waiter, Task.SUMMARIZE, body.text, body.options(), model_name=body.model
    )


for _endpoint, _name, _answer, _body in (
    (analyze, "analyze", ClassicLabel, ClassicTextRequest),
    (summarize, "summarize", ClassicSummary, ClassicSummarizeRequest),
):
    for _prefix in ("", "/v1"):
        router.add_api_route(
            f"{_prefix}/{_name}",
            _endpoint,
            methods=["POST"],
            response_model=list[_answer],  # type: ignore[valid-type]
            responses=RESPONSES,
            openapi_extra=request_body_doc(_body),
        )


async def _run_and_wait(
    request: Request,
    submitter: Submitter,
    waiter: JobWaiter,
    task: Task,
    text: str,
    options: dict[str, Any],
    *,
    model_name: str | None,
) -> Any:
    # Past the wait, a caller of the pipeline era has given up on its answer: a text not
    # started by then is not run. With no wait at all (0 s), every caller is told to poll.
    timeout_s = submitter.settings.sync_timeout_s
    deadline = utcnow() + timedelta(seconds=timeout_s) if timeout_s > 0 else None
    submitted = await run_in_threadpool(
        partial(submitter.submit, options_at="", deadline=deadline, model_name=model_name),
        task,
        [text],
        options,
    )
    job = submitted.job
    finished = await waiter.wait(
        job.id,
        lambda: _outcome_if_finished(submitter.db, submitter.tenant_id, job.id),
        submitter.settings.sync_timeout_s,
    )
    if finished is None:
        read = present(job, request, submitted.previews)
        return JSONResponse(
            read.model_dump(mode="json"), status_code=202, headers={"Location": read.links.self}
        )
    result, error = finished
    if result is None:
        if error and error.startswith(UNFIT_OPTIONS):  # the client's parameter, not a failure
            raise InvalidRequest(error, job_id=str(job.id))
        raise InferenceFailed(error or None, job_id=str(job.id))
    if task is Task.SENTIMENT:
        return [{"label": result["label"], "score": result["score"]}]
    return [{"summary_text": result["summary_text"]}]


def _outcome_if_finished(
    db: Database, tenant_id: str, job_id: uuid.UUID
) -> tuple[dict[str, Any] | None, str | None] | None:
    with db.read() as session:
        job: Job = get_job(session, tenant_id=tenant_id, job_id=job_id)
        if JobStatus(job.status) not in TERMINAL_JOB_STATUSES:
            return None
        rows = list_item_outcomes(session, job_id=job_id, after_index=-1, limit=1)
    return rows[0].result, rows[0].error
