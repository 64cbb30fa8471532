"""`/v1/jobs`: submit a job, read it, list jobs, page through its results."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from api import cursors, exports, idempotency
from api.body import read_job_submission, request_body_doc
from api.deps import DatabaseDep, SettingsDep, TenantDep, WaiterDep
from api.responses import API_KEY_SCHEMES, IDEMPOTENCY_KEY, KEYED, SUBMITTED, problems
from api.results import read_page
from api.submit import SubmitterDep, checked_webhook, parse_job_id, present, read_previews
from shared import worker_registry
from shared.db import Database
from shared.errors import InvalidRequest, JobExpired, JobNotFinished
from shared.jobs import cancel, reads
from shared.jobs.queue import queue_place
from shared.jobs.reads import job_waited_for
from shared.models import Job, utcnow
from shared.result_schemas import ResultPage
from shared.schemas import JobCreate, JobPage, JobRead, QueueRead
from shared.states import TERMINAL_JOB_STATUSES, JobStatus, Task

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=API_KEY_SCHEMES)

MAX_PAGE = 1000
MAX_WAIT_S = 60


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobRead,
    responses={
        **SUBMITTED,
        **problems(*KEYED, 400, 413, 415, 422),
    },
    openapi_extra=request_body_doc(JobCreate, plain_text_document=True) | IDEMPOTENCY_KEY,
)
def create_job(
    body: Annotated[JobCreate, Depends(read_job_submission)],
    request: Request,
    response: Response,
    submitter: SubmitterDep,
) -> JobRead:
    """Submit a job; it runs in the background. Poll the `Location` it returns.

    A long document may also be sent as the raw body with `Content-Type: text/plain` and
    `?task=summarize` (options as a JSON string in `?options=`). With an `Idempotency-Key`
    header, a retry of the same request within 24 h answers `200` with the job the first
    try created; the same key with a different request is a `422`.
    """
    submitted = submitter.submit(
        body.task,
        body.input.all_texts(),
        body.options,
        kind=body.input.kind,
        deadline=body.deadline,
        idempotency=idempotency.for_request(request, body.model_dump(mode="json")),
        webhook=checked_webhook(body.webhook(), submitter.settings),
        priority=body.effective_priority(),
        expires_after_s=body.expires_after_s,
        model_name=body.model,
    )
    read = present(submitted.job, request, submitted.previews)
    response.headers["Location"] = read.links.self
    if not submitted.created:
        response.status_code = status.HTTP_200_OK
    return read


@router.get("", response_model=JobPage, responses=problems(*KEYED, 400, 422))
def list_jobs(
    request: Request,
    db: DatabaseDep,
    tenant_id: TenantDep,
    status: JobStatus | None = None,
    task: str | None = Query(default=None, description="sentiment or summarize"),
    limit: int = Query(default=50, ge=1, le=MAX_PAGE),
    cursor: str | None = None,
) -> JobPage:
    """List jobs newest first, optionally only those with a status or task."""
    task_filter = _parse_task(task)
    after = cursors.read_job_cursor(cursor) if cursor else None
    with db.read() as session:
        jobs = reads.list_jobs(
            session,
            tenant_id=tenant_id,
            limit=limit + 1,
            after=after,
            status=status,
            task=task_filter,
        )
        page, more = jobs[:limit], len(jobs) > limit
        previews = read_previews(session, page)
    return JobPage(
        items=[present(job, request, previews) for job in page],
        next_cursor=cursors.job_cursor(page[-1].created_at, page[-1].id) if more else None,
    )


@router.get("/{job_id}", response_model=JobRead, responses=problems(*KEYED, 404, 422))
async def get_job(
    job_id: str,
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    waiter: WaiterDep,
    tenant_id: TenantDep,
    wait_s: float = Query(
        default=0,
        ge=0,
        le=MAX_WAIT_S,
        description="Hold the answer until the job finishes or this many seconds pass.",
    ),
) -> JobRead:
    """Return a job's status, progress, timings and model (optionally waiting for its end)."""
    parsed = parse_job_id(job_id)

    def read() -> tuple[Job, dict[uuid.UUID, str]]:
        # One session, one connection: the job and (for an old job) its first text.
        with db.read() as session:
            job = reads.get_job(session, tenant_id=tenant_id, job_id=parsed)
            return job, read_previews(session, [job])

    if wait_s > 0:
        # The waiter's first read comes after it listens, so an end in between is not
        # missed; the last read is the answer, finished or not.
        latest: list[tuple[Job, dict[uuid.UUID, str]]] = []

        def check() -> tuple[Job, dict[uuid.UUID, str]] | None:
            latest[:] = [read()]
            return _if_finished(latest[0])

        await waiter.wait(parsed, check, wait_s)
        job, previews = latest[0]
    else:
        job, previews = await run_in_threadpool(read)
    presented = present(job, request, previews)
    if JobStatus(job.status) not in TERMINAL_JOB_STATUSES:
        presented.queue = await run_in_threadpool(queue_of, db, job, settings.sweep_interval_s)
    return presented


def queue_of(db: Database, job: Job, sweep_interval_s: float) -> QueueRead:
    """Return where an unfinished job stands in its workers' queue, with its ETA."""
    with db.read() as session:
        waited = job_waited_for(session, job)
        serving = worker_registry.live_workers_of(
            session,
            task=waited.task,
            model=waited.model,
            model_name=waited.model_name,
            sweep_interval_s=sweep_interval_s,
        )
        # The pace is of the workers running now: measured since the last of them started
        # (a worker restarted after a crash has a new row, while its dead one still looks
        # live for a while, so not since the first).
        started = max((worker.started_at for worker in serving), default=None)
        place = queue_place(session, waited, pace_since=started)
    workers = len(serving)
    remaining = place.items_ahead + place.items_left
    # An ETA needs a known pace and a live worker to keep it: a pace measured before the
    # last worker died says nothing about when the job will run.
    eta = (
        utcnow() + timedelta(seconds=remaining / place.items_per_s)
        if place.items_per_s > 0 and workers > 0
        else None
    )
    return QueueRead(
        task=Task(waited.task),
        model=waited.model,
        model_name=waited.model_name,
        workers=workers,
        items_ahead=place.items_ahead,
        items_left=place.items_left,
        items_per_s=round(place.items_per_s, 3),
        estimated_finish_at=eta,
    )


@router.post(
    "/{job_id}/cancel",
    response_model=JobRead,
    responses=problems(*KEYED, 404, 409, 422, s409="The job has already finished."),
)
def cancel_job(job_id: str, request: Request, db: DatabaseDep, tenant_id: TenantDep) -> JobRead:
    """Cancel a job: what has not started never will; a batch already running finishes.

    The job ends `cancelled` at once; results computed before (and by that last batch)
    stay readable. Cancelling a finished job is a 409.
    """
    with db.write() as session:
        job = cancel.cancel_job(session, tenant_id=tenant_id, job_id=parse_job_id(job_id))
        previews = read_previews(session, [job])
    return present(job, request, previews)


@router.delete(
    "/{job_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problems(*KEYED, 404, 422),
)
def delete_job(job_id: str, db: DatabaseDep, tenant_id: TenantDep) -> Response:
    """Delete a job and all its data now (inputs, results, webhook events)."""
    with db.write() as session:
        cancel.delete_job(session, tenant_id=tenant_id, job_id=parse_job_id(job_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _if_finished(read: tuple[Job, dict[uuid.UUID, str]]) -> tuple[Job, dict[uuid.UUID, str]] | None:
    return read if JobStatus(read[0].status) in TERMINAL_JOB_STATUSES else None


@router.get(
    "/{job_id}/results",
    response_model=ResultPage,
    responses={
        200: {
            "content": {
                "application/x-ndjson": {"schema": {"type": "string"}},
                "text/csv": {"schema": {"type": "string"}},
            },
            "description": "A page of results (JSON), or all of them streamed (JSONL, CSV).",
        },
        **problems(
            *KEYED,
            400,
            404,
            409,
            410,
            422,
            s409="The job has not finished yet (an export without `follow=true`).",
        ),
    },
)
async def get_job_results(
    job_id: str,
    db: DatabaseDep,
    tenant_id: TenantDep,
    waiter: WaiterDep,
    limit: int = Query(default=100, ge=1, le=MAX_PAGE),
    cursor: str | None = None,
    format: Literal["json", "jsonl", "csv"] = Query(
        default="json",
        description="json: a page (follow next_cursor); jsonl or csv: every result, streamed.",
    ),
    follow: bool = Query(
        default=False,
        description="jsonl and csv: stream the rows of a queued or running job in input order "
        "as they finish, and end when the job ends.",
    ),
    include_chunks: bool = Query(
        default=False,
        description="For texts split into chunks, add each chunk's span and outcome, and for "
        "summaries how many parts summarized the chunks' summaries (`reduce_parts`).",
    ),
    include_text: bool = Query(
        default=False, description="JSON pages: add each text as submitted (`text`)."
    ),
) -> ResultPage | StreamingResponse:
    """Return a job's results in input order, a page at a time or all streamed.

    While the job is queued or running, a JSON page holds the texts finished so far (up to
    the first one not finished) with `partial: true` and a `next_cursor` to read on from;
    an export needs `follow=true`, and then sends rows as they finish until the job ends.
    """
    after = cursors.read_result_cursor(cursor) if cursor else -1
    parsed = parse_job_id(job_id)

    def read() -> ResultPage | Job:
        with db.read() as session:
            job = reads.get_job(session, tenant_id=tenant_id, job_id=parsed)
            if JobStatus(job.status) is JobStatus.EXPIRED:
                after_what = (
                    f"{job.expires_after_s} s, as its expires_after_s asked"
                    if job.expires_after_s is not None
                    else "the retention period (TEXTQ_RETENTION_DAYS)"
                )
                raise JobExpired(
                    f"Job {job.id} finished at {job.finished_at:%Y-%m-%d %H:%M} UTC and its "
                    f"inputs and results were purged after {after_what}."
                )
            if format != "json":
                return job
            return read_page(
                session,
                job,
                after=after,
                limit=limit,
                include_chunks=include_chunks,
                include_text=include_text,
            )

    answer = await run_in_threadpool(read)
    if isinstance(answer, ResultPage):
        return answer
    job = answer
    if JobStatus(job.status) not in TERMINAL_JOB_STATUSES and not follow:
        raise JobNotFinished(
            f"Job {job.id} is {job.status} ({job.done_items + job.error_items} of "
            f"{job.total_items} items finished); add follow=true to stream its rows as they "
            "finish, or read format=json for those finished so far."
        )
    stream = exports.stream_jsonl if format == "jsonl" else exports.stream_csv
    rows = exports.pages(db, job.id, waiter=waiter if follow else None)
    return StreamingResponse(
        stream(rows, Task(job.task), categories=bool(job.options.get("categories"))),
        media_type=exports.MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{job.id}-results.{format}"'},
    )


def _parse_task(task: str | None) -> Task | None:
    if task is None:
        return None
    try:
        return Task.parse(task)
    except ValueError:
        raise InvalidRequest(
            f"unknown task {task!r}; expected sentiment or summarize",
            errors=[{"field": "task", "message": "unknown task"}],
        ) from None
