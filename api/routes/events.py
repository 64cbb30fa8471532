"""`/v1/jobs/{id}/events`: a job's progress, results and end as Server-Sent Events."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from api.deps import DatabaseDep, SettingsDep, TenantDep, WaiterDep
from api.events import RESULT_BATCH_ROWS, Position, Snapshot, stream_events
from api.responses import API_KEY_SCHEMES, KEYED, problems
from api.results import result_entries
from api.routes.jobs import queue_of
from api.submit import parse_job_id
from shared.db import Database
from shared.jobs import reads
from shared.jobs.presenting import present_job
from shared.states import TERMINAL_JOB_STATUSES, JobStatus

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=API_KEY_SCHEMES)

EVENTS_DOC = """`text/event-stream`. Events, each with an `id`:

- `progress`: `{"job_id", "status", "progress", "queue"}`, the figures of the job's own body
  (`queue.estimated_finish_at` is the ETA while it runs), sent when they change;
- `result` (with `results=true`): `{"items": [...]}`, the texts finished since the last one,
  in input order, as in a results page;
- `finished`: the same body as `progress`, with the final status; then the stream ends.

A comment line (`: keep-alive`) is sent on an idle stream every 15 s. Send the last id
received as `Last-Event-ID` (or `last_event_id`) to resume without repeats; resuming after
`finished` is answered 204, which tells EventSource to stop reconnecting."""


# One event of the stream (OpenAPI 3.1: a text/event-stream `schema` describes each event).
EVENT_SCHEMA = {
    "type": "object",
    "required": ["event", "id", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["progress", "result", "finished"]},
        "id": {"type": "string", "pattern": r"^(-?\d+\.){5}[a-z]+$"},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "retry": {"type": "integer"},
    },
}


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": EVENT_SCHEMA}},
            "description": "The job's events until it ends.",
        },
        204: {"description": "The `Last-Event-ID` is the `finished` event's: nothing follows."},
        **problems(*KEYED, 400, 404, 422),
    },
    description=EVENTS_DOC,
)
async def job_events(
    job_id: str,
    db: DatabaseDep,
    settings: SettingsDep,
    tenant_id: TenantDep,
    waiter: WaiterDep,
    results: bool = Query(
        default=False, description="Send `result` events with the texts as they finish."
    ),
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    last_event_id: str | None = Query(
        default=None, description="The id of the last event received, where a header cannot be set."
    ),
) -> Response:
    """Stream a job's progress (and results) as Server-Sent Events until it ends."""
    parsed = parse_job_id(job_id)
    resume = last_event_id_header or last_event_id
    start = Position.parse(resume) if resume else Position()

    def read(after: int, with_results: bool) -> Snapshot:
        return _snapshot(db, tenant_id, parsed, after, with_results, settings.sweep_interval_s)

    first = await run_in_threadpool(read, start.last_index, results)
    if start.ended:
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    async def events():  # type: ignore[no-untyped-def]
        with waiter.watch(parsed) as watch:
            async for chunk in stream_events(
                read, watch, start=start, results=results, first=first
            ):
                yield chunk

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _snapshot(
    db: Database,
    tenant_id: str,
    job_id: uuid.UUID,
    after: int,
    with_results: bool,
    sweep_interval_s: float,
) -> Snapshot:
    """Read the job's figures and, if asked, its texts finished after index `after`."""
    with db.read() as session:
        job = reads.get_job(session, tenant_id=tenant_id, job_id=job_id)
        running = JobStatus(job.status) not in TERMINAL_JOB_STATUSES
        rows = (
            reads.list_item_outcomes(
                session,
                job_id=job.id,
                after_index=after,
                limit=RESULT_BATCH_ROWS + 1,
                finished_only=running,
            )
            if with_results and JobStatus(job.status) is not JobStatus.EXPIRED
            else []
        )
        batch = rows[:RESULT_BATCH_ROWS]
        entries = result_entries(session, batch)
    shown = present_job(job, "")
    queue = queue_of(db, job, sweep_interval_s) if running else None
    return Snapshot(
        status=JobStatus(job.status),
        done=job.done_items,
        errored=job.error_items,
        chunks_done=job.done_parts,
        chunks_total=job.total_parts,
        progress={
            "job_id": str(job.id),
            "status": job.status,
            "progress": shown.progress.model_dump(mode="json"),
            "queue": queue.model_dump(mode="json") if queue is not None else None,
        },
        results=[entry.model_dump(mode="json") for entry in entries],
        last_index=batch[-1].index if batch else after,
        more_results=len(rows) > RESULT_BATCH_ROWS,
    )
