"""`/v1/batches`: submit a bulk file (CSV or JSONL) as one job, streamed into the database."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import FormData, UploadFile

from api import idempotency, uploads
from api.body import parse_json
from api.deps import SettingsDep, TenantDep
from api.errors import invalid_request
from api.responses import API_KEY_SCHEMES, IDEMPOTENCY_KEY, KEYED, SUBMITTED, problems
from api.submit import Submitted, SubmitterDep, checked_webhook, present, summarizer_of_insights
from shared.config import Settings
from shared.errors import InvalidRequest, RequestTooLarge
from shared.job_options import parse_deadline, unknown_field_message, validate_options
from shared.jobs.files import create_file_job
from shared.jobs.submit import Webhook
from shared.models import Job
from shared.schemas import DEADLINE_DOC, FILE_PRIORITY, JobRead, WebhookSettings
from shared.states import TASK_ALIASES, Task

router = APIRouter(prefix="/v1/batches", tags=["batches"], dependencies=API_KEY_SCHEMES)

FORM_FIELDS = {
    "file": "The CSV or JSONL file (may be gzip-compressed).",
    "task": "sentiment or summarize.",
    "text_column": "CSV: the column with the text (default `text`); JSONL: the key.",
    "id_column": "CSV: the column with each row's id; JSONL: the key (default `custom_id`).",
    "options": "The task's options as a JSON object string.",
    "format": "csv or jsonl, when the file name does not say.",
    "encoding": "The file's text encoding when it is not UTF-8 or UTF-16 with a BOM.",
    "webhook_url": "Where to send the job's signed events.",
    "webhook_events": "Comma-separated: completed, failed, progress (default completed,failed).",
    "priority": "0 to 9, higher runs first (default 2: files wait for interactive work).",
    "deadline": DEADLINE_DOC,
}
FORM_VALUES: dict[str, dict[str, Any]] = {
    "file": {"format": "binary"},
    "task": {"enum": sorted([t.value for t in Task] + list(TASK_ALIASES))},
    "format": {"enum": sorted(uploads.FORMATS)},
    "priority": {"pattern": "^[0-9]$"},
    "deadline": {"format": "date-time"},
}
FORM_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "task"],
                    "additionalProperties": False,
                    "properties": {
                        name: {"type": "string", "description": doc} | FORM_VALUES.get(name, {})
                        for name, doc in FORM_FIELDS.items()
                    },
                },
                "example": {"file": "id,text\n1,I love it\n2,meh\n", "task": "sentiment"},
            }
        },
    }
}


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
            s415="The file is not text this server reads (a spreadsheet, an image, ...).",
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

    An `Idempotency-Key` header makes a retried upload of the same file and fields within
    24 h answer `200` with the job the first try created.
    """
    _refuse_before_reading(request, settings)
    # The file part is spooled to a temporary file, never held in memory.
    async with request.form(max_files=1, max_fields=len(FORM_FIELDS)) as form:
        upload = _file_of(form)
        fields = {name: value for name, value in form.items() if isinstance(value, str)}
        _refuse_unknown_fields(list(form.keys()))
        task, options = _task_and_options(fields)
        _refuse_too_large_file(upload, settings)
        webhook = await run_in_threadpool(_webhook, fields, settings)
        priority = _priority(fields)
        deadline = _deadline(fields)

        def ingest(session: Session) -> Job:
            job = _store_file_job(
                session,
                upload,
                fields,
                settings,
                tenant_id=tenant_id,
                task=task,
                options=options,
                webhook=webhook,
                priority=priority,
            )
            job.deadline = deadline
            return job

        def submit() -> Submitted:
            key = idempotency.for_request(
                request, sorted(fields.items()), upload.filename, file=upload.file
            )
            return submitter.submit_with(task, ingest, key)

        submitted = await run_in_threadpool(submit)
    read = present(submitted.job, request, submitted.previews)
    response.headers["Location"] = read.links.self
    if not submitted.created:
        response.status_code = status.HTTP_200_OK
    return read


def _refuse_before_reading(request: Request, settings: Settings) -> None:
    """Refuse, from its headers alone, an upload declared too large or not a multipart form."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > settings.max_upload_bytes:
        raise RequestTooLarge(
            f"The upload is {declared} bytes; the limit is {settings.max_upload_bytes} "
            "(TEXTQ_MAX_UPLOAD_BYTES)."
        )
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest(
            "Send the file as multipart/form-data with fields `file` and `task` "
            "(curl -F file=@feedback.csv -F task=sentiment)."
        )


def _file_of(form: FormData) -> UploadFile:
    """Return the form's file, or refuse a form without one."""
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidRequest(
            "The form has no file in field `file`.",
            errors=[{"field": "file", "message": "required"}],
        )
    return upload


def _refuse_too_large_file(upload: UploadFile, settings: Settings) -> None:
    if upload.size is not None and upload.size > settings.max_upload_bytes:
        raise RequestTooLarge(
            f"The file is {upload.size} bytes; the limit is {settings.max_upload_bytes} "
            "(TEXTQ_MAX_UPLOAD_BYTES)."
        )


def _store_file_job(
    session: Session,
    upload: UploadFile,
    fields: dict[str, str],
    settings: Settings,
    *,
    tenant_id: str,
    task: Task,
    options: dict[str, Any],
    webhook: Webhook | None,
    priority: int,
) -> Job:
    """Open the uploaded file as a stream of rows and store it as one job."""
    file_format, rows = uploads.open_upload(
        upload.file,
        filename=upload.filename,
        declared_format=fields.get("format") or None,
        text_column=fields.get("text_column") or None,
        id_column=fields.get("id_column") or None,
        encoding=fields.get("encoding") or None,
        max_text_chars=settings.max_text_chars,
        max_decompressed_bytes=settings.max_upload_bytes,
    )
    meta = {
        "filename": upload.filename,
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
        model=settings.model_for(task),
        options=options,
        input_meta=meta,
        rows=rows,
        max_rows=settings.max_upload_rows,
        check_duplicate_ids=_has_own_ids(file_format.kind, fields),
        webhook=webhook,
        priority=priority,
        summarizer=summarizer_of_insights(settings),
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
