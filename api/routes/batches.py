"""`/v1/batches`: submit a bulk file (CSV or JSONL, uploaded or fetched from a URL) as one job,
streamed into the database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, cast

from fastapi import APIRouter, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from api import batch_fields, idempotency, uploads
from api.body import media_type_of, parse_body, parse_json, read_json
from api.deps import SettingsDep, TenantDep
from api.errors import invalid_request
from api.fetch_input import check_input_url, fetch_input
from api.responses import API_KEY_SCHEMES, IDEMPOTENCY_KEY, KEYED, SUBMITTED, problems
from api.submit import (
    Submitted,
    Submitter,
    SubmitterDep,
    checked_webhook,
    choose_model,
    present,
    summarizer_of_insights,
)
from shared.config import Settings
from shared.errors import InvalidRequest, RequestTooLarge
from shared.job_options import parse_deadline, unknown_field_message, validate_options
from shared.jobs.files import create_file_job
from shared.jobs.output_delivery import add_output_delivery
from shared.jobs.submit import Webhook
from shared.models import Job
from shared.schemas import DEADLINE_DOC, FILE_PRIORITY, BatchCreate, JobRead, WebhookSettings
from shared.states import TASK_ALIASES, Task

router = APIRouter(prefix="/v1/batches", tags=["batches"], dependencies=API_KEY_SCHEMES)

FORM_FIELDS = {
    "file": "The CSV or JSONL file (may be gzip-compressed); or give `input_url` instead.",
    "input_url": "An http(s) URL to fetch the file from instead of uploading it (presigned "
    "GET URLs of S3, GCS and Azure work).",
    "task": "sentiment or summarize.",
    "text_column": "CSV: the column with the text (default `text`); JSONL: the key.",
    "id_column": "CSV: the column with each row's id; JSONL: the key (default `custom_id`).",
    "model": "The catalogue name of the model to run (default: the task's default; "
    "`GET /v1/models` lists them).",
    "options": "The task's options as a JSON object string.",
    "format": "csv or jsonl, when the file name does not say.",
    "encoding": "The file's text encoding when it is not UTF-8 or UTF-16 with a BOM.",
    "webhook_url": "Where to send the job's signed events.",
    "webhook_events": "Comma-separated: completed, failed, progress (default completed,failed).",
    "priority": "0 to 9, higher runs first (default 2: files wait for interactive work).",
    "output_url": "Where to PUT the results as JSON Lines once the job ends (presigned PUT "
    "URLs work).",
    "output_gzip": "true: PUT the results gzip-compressed (default false).",
    "expires_after_s": "Delete the job's results this many seconds after it ends (at most "
    "the tenant's retention).",
    "deadline": DEADLINE_DOC,
}
FORM_VALUES: dict[str, dict[str, Any]] = {
    "file": {"format": "binary"},
    "input_url": {"pattern": "^[Hh][Tt][Tt][Pp][Ss]?://"},
    "output_url": {"pattern": "^[Hh][Tt][Tt][Pp][Ss]?://"},
    "task": {"enum": sorted([t.value for t in Task] + list(TASK_ALIASES))},
    "format": {"enum": sorted(uploads.FORMATS)},
    "priority": {"pattern": "^[0-9]$"},
    "output_gzip": {"enum": ["true", "false"]},
    "expires_after_s": {"pattern": "^[1-9][0-9]{0,9}$"},
    "deadline": {"format": "date-time"},
}
FORM_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["task"],
                    "additionalProperties": False,
                    "properties": {
                        name: {"type": "string", "description": doc} | FORM_VALUES.get(name, {})
                        for name, doc in FORM_FIELDS.items()
                    },
                },
                "example": {"file": "id,text\n1,I love it\n2,meh\n", "task": "sentiment"},
            },
            "application/json": {"schema": {"$ref": "#/components/schemas/BatchCreate"}},
        },
    }
}
# A form without a file part (input_url) may come url-encoded, as `curl -d` sends it.
FORM_MEDIA_TYPES = {"multipart/form-data", "application/x-www-form-urlencoded"}


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobRead,
    responses={
        **SUBMITTED,
        **problems(
            *KEYED,
            400,
            413,
            415,
            422,
            s400="The form is malformed or has too many fields, or `options` is not JSON.",
            s413="The file (uploaded or fetched) is over TEXTQ_MAX_UPLOAD_BYTES.",
            s415="The file is not text this server reads (a spreadsheet, an image, ...).",
            s422="A field is invalid, a URL points where textq may not go, or fetching "
            "`input_url` failed (its host and the reason are named).",
        ),
    },
    openapi_extra=FORM_DOC | IDEMPOTENCY_KEY,
)
async def create_batch(
    request: Request,
    response: Response,
    submitter: SubmitterDep,
    settings: SettingsDep,
    tenant_id: TenantDep,
) -> JobRead:
    """Submit a file of texts as one job; each row's outcome is a line of its results.

    The file is uploaded (multipart `file`) or fetched from `input_url` (a form field, or
    a JSON body). With `output_url` the results are PUT there as JSON Lines once the job
    ends. An `Idempotency-Key` header makes a retried submission of the same file and
    fields within 24 h answer `200` with the job the first try created.
    """
    media_type = media_type_of(request)
    if media_type == "application/json" or media_type.endswith("+json"):
        data = await read_json(request, max_bytes=settings.max_request_bytes)
        if isinstance(data, dict) and "input_url" not in data:
            raise InvalidRequest(
                "A JSON body fetches the file from `input_url` "
                '({"task": "sentiment", "input_url": "https://..."}); to upload the file, '
                "send multipart/form-data (curl -F file=@feedback.csv -F task=sentiment).",
                errors=[{"field": "input_url", "message": "required"}],
            )
        fields = parse_body(BatchCreate, data, settings=settings).form_fields()
        submitted = await _submit(request, submitter, settings, tenant_id, fields, None)
    else:
        _refuse_before_reading(request, settings)
        # The file part is spooled to a temporary file, never held in memory.
        async with request.form(max_files=1, max_fields=len(FORM_FIELDS)) as form:
            upload = form.get("file")
            fields = {name: value for name, value in form.items() if isinstance(value, str)}
            file = upload if isinstance(upload, UploadFile) else None
            batch_fields.input_url(fields, file)  # a missing file first: the likeliest mistake
            _refuse_unknown_fields(list(form.keys()))
            submitted = await _submit(request, submitter, settings, tenant_id, fields, file)
    read = present(submitted.job, request, submitted.previews)
    response.headers["Location"] = read.links.self
    if not submitted.created:
        response.status_code = status.HTTP_200_OK
    return read


async def _submit(
    request: Request,
    submitter: Submitter,
    settings: Settings,
    tenant_id: str,
    fields: dict[str, str],
    upload: UploadFile | None,
) -> Submitted:
    """Check the fields, get the file (uploaded or fetched), and store it as one job."""
    input_url = batch_fields.input_url(fields, upload)
    task, options = _task_and_options(fields)
    if upload is not None:
        _refuse_too_large_file(upload, settings)
    webhook = await run_in_threadpool(_webhook, fields, settings)
    output = await run_in_threadpool(batch_fields.output, fields, settings)
    priority = _priority(fields)
    expires_after_s = batch_fields.expires_after_s(fields)
    deadline = _deadline(fields)
    if input_url is not None:
        await run_in_threadpool(check_input_url, input_url, settings)
        fetched = await run_in_threadpool(fetch_input, input_url, settings)
        source = Source(cast(BinaryIO, fetched.file), fetched.filename, {"url_host": fetched.host})
    else:
        assert upload is not None
        source = Source(upload.file, upload.filename, {})

    def ingest(session: Session) -> Job:
        job = _store_file_job(
            session,
            source,
            fields,
            settings,
            tenant_id=tenant_id,
            task=task,
            options=options,
            webhook=webhook,
            priority=priority,
            expires_after_s=expires_after_s,
        )
        if output is not None:
            add_output_delivery(session, job, url=output[0], gzip=output[1])
        job.deadline = deadline
        return job

    def submit() -> Submitted:
        # A fetched file is named by its URL: fetched again, the same URL is the same request.
        key = idempotency.for_request(
            request,
            sorted(fields.items()),
            source.filename,
            file=source.file if input_url is None else None,
        )
        return submitter.submit_with(task, ingest, key)

    try:
        return await run_in_threadpool(submit)
    finally:
        if input_url is not None:
            source.file.close()


@dataclass(frozen=True)
class Source:
    """Where a batch's bytes are read from: an upload's spool, or a fetched URL's."""

    file: BinaryIO
    filename: str | None
    meta: dict[str, Any]


def _refuse_before_reading(request: Request, settings: Settings) -> None:
    """Refuse, from its headers alone, an upload declared too large or not a multipart form."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > settings.max_upload_bytes:
        raise RequestTooLarge(
            f"The upload is {declared} bytes; the limit is {settings.max_upload_bytes} "
            "(TEXTQ_MAX_UPLOAD_BYTES)."
        )
    if media_type_of(request) not in FORM_MEDIA_TYPES:
        raise InvalidRequest(
            "Send the file as multipart/form-data with fields `file` and `task` "
            "(curl -F file=@feedback.csv -F task=sentiment), or a JSON body with "
            '`task` and `input_url` ({"task": "sentiment", "input_url": "https://..."}).'
        )


def _refuse_too_large_file(upload: UploadFile, settings: Settings) -> None:
    if upload.size is not None and upload.size > settings.max_upload_bytes:
        raise RequestTooLarge(
            f"The file is {upload.size} bytes; the limit is {settings.max_upload_bytes} "
            "(TEXTQ_MAX_UPLOAD_BYTES)."
        )


def _store_file_job(
    session: Session,
    source: Source,
    fields: dict[str, str],
    settings: Settings,
    *,
    tenant_id: str,
    task: Task,
    options: dict[str, Any],
    webhook: Webhook | None,
    priority: int,
    expires_after_s: int | None,
) -> Job:
    """Open the file (uploaded or fetched) as a stream of rows and store it as one job."""
    chosen = choose_model(settings, task, fields.get("model") or None)
    file_format, rows = uploads.open_upload(
        source.file,
        filename=source.filename,
        declared_format=fields.get("format") or None,
        text_column=fields.get("text_column") or None,
        id_column=fields.get("id_column") or None,
        encoding=fields.get("encoding") or None,
        max_text_chars=settings.max_text_chars,
        max_decompressed_bytes=settings.max_upload_bytes,
    )
    meta = source.meta | {
        "filename": source.filename,
        "format": file_format.kind,
        "encoding": file_format.encoding,
        "compressed": file_format.compressed,
        # The columns actually read: JSONL rows take their ids from `custom_id`
        # unless the form names another key.
        "text_column": fields.get("text_column") or "text",
        "id_column": fields.get("id_column")
        or ("custom_id" if file_format.kind == "jsonl" else None),
    }
    return create_file_job(
        session,
        tenant_id=tenant_id,
        task=task,
        model=chosen.source,
        model_name=chosen.name,
        options=options,
        input_meta=meta,
        rows=rows,
        max_rows=settings.max_upload_rows,
        check_duplicate_ids=_has_own_ids(file_format.kind, fields),
        webhook=webhook,
        priority=priority,
        summarizer=summarizer_of_insights(settings),
        expires_after_s=expires_after_s,
    )


def _refuse_unknown_fields(names: list[str]) -> None:
    """Refuse a form field this route does not read: a misspelt one would be ignored."""
    errors = [
        {
            "field": name,
            "message": unknown_field_message(name, list(FORM_FIELDS), what="form field"),
        }
        for name in dict.fromkeys(names)
        if name not in FORM_FIELDS
    ]
    if errors:
        raise InvalidRequest(
            "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors
        )


def _webhook(fields: dict[str, str], settings: Settings) -> Webhook | None:
    url, raw_events = fields.get("webhook_url") or None, fields.get("webhook_events") or None
    if url is None:
        if raw_events is not None:
            raise InvalidRequest(
                "webhook_events needs a webhook_url",
                errors=[{"field": "webhook_events", "message": "needs a webhook_url"}],
            )
        return None
    events = [e.strip() for e in raw_events.split(",") if e.strip()] if raw_events else None
    try:
        webhook = WebhookSettings.model_validate(
            {"url": url} | ({"events": events} if events else {})
        )
    except ValidationError as error:
        # Name the form's fields, not the model's: `webhook_events`, not `events.0`.
        problem = invalid_request(error)
        for entry in problem.extra.get("errors", []):
            entry["field"] = "webhook_" + entry["field"].split(".")[0]
        raise InvalidRequest(
            "; ".join(f"{e['field']}: {e['message']}" for e in problem.extra["errors"]),
            errors=problem.extra["errors"],
        ) from None
    return checked_webhook(webhook, settings)


def _priority(fields: dict[str, str]) -> int:
    raw = fields.get("priority")
    if not raw:
        return FILE_PRIORITY
    if not raw.isdigit() or int(raw) > 9:
        raise InvalidRequest(
            f"priority must be an integer from 0 to 9, not {raw!r}",
            errors=[{"field": "priority", "message": "0 to 9"}],
        )
    return int(raw)


def _deadline(fields: dict[str, str]) -> datetime | None:
    raw = fields.get("deadline")
    if not raw:
        return None
    try:
        return parse_deadline(raw)
    except ValueError as error:
        raise InvalidRequest(
            str(error), errors=[{"field": "deadline", "message": str(error)}]
        ) from None


def _has_own_ids(kind: str, fields: dict[str, str]) -> bool:
    """Return whether rows carry ids of their own (else their row numbers, never repeated)."""
    return bool(fields.get("id_column")) or kind == "jsonl"


def _task_and_options(fields: dict[str, str]) -> tuple[Task, dict[str, Any]]:
    raw_task = fields.get("task")
    if not raw_task:
        raise InvalidRequest(
            "The form has no `task` field (sentiment or summarize).",
            errors=[{"field": "task", "message": "required"}],
        )
    try:
        task = Task.parse(raw_task)
    except ValueError:
        raise InvalidRequest(
            f"unknown task {raw_task!r}; expected sentiment or summarize",
            errors=[{"field": "task", "message": "unknown task"}],
        ) from None
    raw_options = fields.get("options") or "{}"
    options = parse_json(raw_options, what="The options field")
    try:
        return task, validate_options(task, options)
    except ValidationError as error:
        raise invalid_request(error) from None
