"""`/v1/jobs`: submit a job, read it, list jobs, page through its results."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from api import cursors, exports, idempotency
from api.body import read_job_submission, request_body_doc
from api.deps import DatabaseDep, SettingsDep, TenantDep, WaiterDep
from api.responses import API_KEY_SCHEMES, IDEMPOTENCY_KEY, KEYED, SUBMITTED, problems
from api.submit import SubmitterDep, checked_webhook, parse_job_id, present, read_previews
from shared import worker_registry
from shared.db import Database
from shared.errors import InvalidRequest, JobExpired, JobNotFinished
from shared.jobs import cancel, reads
from shared.jobs.queue import queue_place
from shared.jobs.reads import (
    StoredChunk,
    StoredOutcome,
    count_reduce_parts,
    item_texts,
    job_waited_for,
    list_first_round_chunks,
    list_item_outcomes,
)
from shared.models import Job, utcnow
from shared.result_schemas import (
    ChunkResult,
    ItemFailure,
    ResultItem,
    ResultPage,
    SentimentResult,
    SummaryResult,
)
from shared.schemas import JobCreate, JobPage, JobRead, QueueRead
from shared.states import TERMINAL_JOB_STATUSES, ItemStatus, JobStatus, Task

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

    job, previews = await run_in_threadpool(read)
    if wait_s > 0 and JobStatus(job.status) not in TERMINAL_JOB_STATUSES:
        finished = await waiter.wait(parsed, lambda: _if_finished(read()), wait_s)
        job, previews = finished if finished is not None else await run_in_threadpool(read)
    presented = present(job, request, previews)
    if JobStatus(job.status) not in TERMINAL_JOB_STATUSES:
        presented.queue = await run_in_threadpool(_queue_of, db, job, settings.sweep_interval_s)
    return presented


def _queue_of(db: Database, job: Job, sweep_interval_s: float) -> QueueRead:
    with db.read() as session:
        waited = job_waited_for(session, job)
        place = queue_place(session, waited)
        workers = worker_registry.live_workers_serving(
            session, task=waited.task, model=waited.model, sweep_interval_s=sweep_interval_s
        )
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
        **problems(*KEYED, 400, 404, 409, 410, 422, s409="The job has not finished yet."),
    },
)
def get_job_results(
    job_id: str,
    db: DatabaseDep,
    tenant_id: TenantDep,
    limit: int = Query(default=100, ge=1, le=MAX_PAGE),
    cursor: str | None = None,
    format: Literal["json", "jsonl", "csv"] = Query(
        default="json",
        description="json: a page (follow next_cursor); jsonl or csv: every result, streamed.",
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
    """Return a finished job's results in input order, a page at a time or all streamed."""
    after = cursors.read_result_cursor(cursor) if cursor else -1
    with db.read() as session:
        job = reads.get_job(session, tenant_id=tenant_id, job_id=parse_job_id(job_id))
        if JobStatus(job.status) is JobStatus.EXPIRED:
            raise JobExpired(
                f"Job {job.id} finished at {job.finished_at:%Y-%m-%d %H:%M} UTC and its inputs "
                "and results were purged after the retention period (TEXTQ_RETENTION_DAYS)."
            )
        if JobStatus(job.status) not in TERMINAL_JOB_STATUSES:
            raise JobNotFinished(
                f"Job {job.id} is {job.status} ({job.done_items + job.error_items} of "
                f"{job.total_items} items finished); results are readable once it finishes."
            )
        if format != "json":
            stream = exports.stream_jsonl if format == "jsonl" else exports.stream_csv
            return StreamingResponse(
                stream(db, job.id, Task(job.task), categories=bool(job.options.get("categories"))),
                media_type=exports.MEDIA_TYPES[format],
                headers={
                    "Content-Disposition": f'attachment; filename="{job.id}-results.{format}"'
                },
            )
        rows = list_item_outcomes(session, job_id=job.id, after_index=after, limit=limit + 1)
        page, more = rows[:limit], len(rows) > limit
        ids = [r.item_id for r in page]
        chunks: dict[int, list[StoredChunk]] = {}
        reduce_parts: dict[int, int] = {}
        if include_chunks:
            for chunk in list_first_round_chunks(session, ids):
                chunks.setdefault(chunk.parent_id, []).append(chunk)
            reduce_parts = count_reduce_parts(session, ids)
        texts = item_texts(session, ids) if include_text else {}
    return ResultPage(
        job_id=job.id,
        task=Task(job.task),
        status=JobStatus(job.status),
        items=[
            item
            for row in page
            if (
                item := _result_item(
                    row,
                    chunks.get(row.item_id) if include_chunks else None,
                    reduce_parts.get(row.item_id, 0) if include_chunks else None,
                    texts.get(row.item_id) or None,
                )
            )
            is not None
        ],
        next_cursor=cursors.result_cursor(page[-1].index) if more else None,
    )


def _result_item(
    row: StoredOutcome, chunks: list[StoredChunk] | None, reduce_parts: int | None, text: str | None
) -> ResultItem | None:
    """Return a text's result entry; `chunks`, `reduce_parts` and `text` when asked for."""
    parts = [_chunk_result(chunk) for chunk in chunks] if chunks is not None else None
    named: dict[str, Any] = {"index": row.index, "custom_id": row.custom_id, "text": text}
    if (outputs := row.outputs) is not None:
        if "summary_text" in outputs:
            return SummaryResult(
                **named, chunks=parts, reduce_parts=reduce_parts if parts else None, **outputs
            )
        return SentimentResult(**named, chunks=parts, **outputs)
    if row.failure is not None:
        return ItemFailure(**named, error=row.failure)
    return None


def _chunk_result(chunk: StoredChunk) -> ChunkResult:
    outputs = chunk.result if chunk.status == ItemStatus.DONE and chunk.result else {}
    return ChunkResult(
        index=chunk.index,
        start=chunk.start,
        end=chunk.end,
        tokens=chunk.tokens,
        error=chunk.error if chunk.status == ItemStatus.ERROR else None,
        **outputs,
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
