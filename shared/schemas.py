"""Request and response bodies of the public API, and the rules that validate them."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shared.blank import blank_problem, is_blank
from shared.job_options import (
    MAX_LENGTH_FIELD,
    MIN_LENGTH_FIELD,
    Strict,
    SummarizeOptions,
    check_length_range,
    parse_deadline,
    validate_options,
)
from shared.states import TASK_ALIASES, JobStatus, Task


@dataclass(frozen=True)
class InputLimits:
    """Size limits a submission is checked against (from the settings)."""

    max_text_chars: int
    max_items_per_job: int
    max_document_chars: int


def _limits(info: ValidationInfo) -> InputLimits | None:
    return (info.context or {}).get("limits")


def _parse_task(value: Any) -> Task:
    if isinstance(value, Task):
        return value
    if not isinstance(value, str):
        raise ValueError("task must be a string")
    try:
        return Task.parse(value)
    except ValueError:
        known = ", ".join([t.value for t in Task] + sorted(TASK_ALIASES))
        raise ValueError(f"unknown task {value!r}; expected one of: {known}") from None


TaskName = Annotated[Task, BeforeValidator(_parse_task)]


def check_text(text: str, info: ValidationInfo, *, document: bool = False) -> str:
    """Reject an empty text, one over the configured size, or one no database can store."""
    if is_blank(text):
        raise ValueError(blank_problem("text", text))
    if "\x00" in text:
        raise ValueError(f"text contains a NUL character at position {text.index(chr(0))}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"text contains an unpaired surrogate ({text[error.start]!a}) at position {error.start}"
        ) from None
    limits = _limits(info)
    if limits is None:
        return text
    limit, setting = (
        (limits.max_document_chars, "TEXTQ_MAX_DOCUMENT_CHARS")
        if document
        else (limits.max_text_chars, "TEXTQ_MAX_TEXT_CHARS")
    )
    if len(text) > limit:
        what = "document" if document else "text"
        hint = "" if document else "; send a long text as input.document"
        raise ValueError(
            f"{what} is {len(text)} characters; the limit is {limit} ({setting}){hint}"
        )
    return text


class JobInput(Strict):
    """The texts of a job: `texts` (a list), `text` (one) or `document` (one long text)."""

    texts: list[str] | None = None
    text: str | None = None
    document: str | None = Field(
        default=None,
        description="A text of any length up to TEXTQ_MAX_DOCUMENT_CHARS; split into chunks "
        "that fit the model, summarized (or labelled) chunk by chunk, then combined.",
    )

    @field_validator("texts")
    @classmethod
    def _check_texts(cls, texts: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if texts is None:
            return None
        if not texts:
            raise ValueError("texts must contain at least one text")
        limits = _limits(info)
        if limits and len(texts) > limits.max_items_per_job:
            raise ValueError(
                f"{len(texts)} texts; the limit per job is {limits.max_items_per_job} "
                "(TEXTQ_MAX_ITEMS_PER_JOB)"
            )
        for position, text in enumerate(texts):
            try:
                check_text(text, info)
            except ValueError as error:
                raise ValueError(f"texts[{position}]: {error}") from None
        return texts

    @field_validator("text")
    @classmethod
    def _check_text(cls, text: str | None, info: ValidationInfo) -> str | None:
        return None if text is None else check_text(text, info)

    @field_validator("document")
    @classmethod
    def _check_document(cls, document: str | None, info: ValidationInfo) -> str | None:
        return None if document is None else check_text(document, info, document=True)

    @model_validator(mode="after")
    def _exactly_one(self) -> JobInput:
        given = [self.texts, self.text, self.document]
        if sum(value is not None for value in given) != 1:
            raise ValueError(
                "input needs exactly one of `texts` (a list), `text` (a string) "
                "or `document` (a long string)"
            )
        return self

    @property
    def kind(self) -> str:
        return "document" if self.document is not None else "texts"

    def all_texts(self) -> list[str]:
        """Return the texts in submission order."""
        if self.texts is not None:
            return self.texts
        return [self.text if self.text is not None else self.document or ""]


WebhookEventKind = Literal["completed", "failed", "progress"]
DEFAULT_WEBHOOK_EVENTS: list[WebhookEventKind] = ["completed", "failed"]


class WebhookSettings(Strict):
    """Where a job's signed events go; `events` defaults to completed and failed."""

    url: str = Field(max_length=2048)
    events: list[WebhookEventKind] = Field(default_factory=lambda: list(DEFAULT_WEBHOOK_EVENTS))


SYNC_PRIORITY = 8
INTERACTIVE_PRIORITY = 6
BULK_JOB_PRIORITY = 4
FILE_PRIORITY = 2


def _deadline_or_none(raw: Any) -> datetime | None:
    return None if raw is None else parse_deadline(raw)


HTTP_URL_PATTERN = "^[Hh][Tt][Tt][Pp][Ss]?://"


def _http_url(value: str) -> str:
    if not re.match(HTTP_URL_PATTERN, value):
        raise ValueError(
            "must be an http:// or https:// URL (presigned S3, GCS and Azure URLs work)"
        )
    return value


HttpUrlText = Annotated[str, AfterValidator(_http_url)]


def _expiry_seconds(value: int) -> int:
    if value < 1:
        raise ValueError("must be a positive whole number of seconds, at most the retention")
    return value


ExpirySeconds = Annotated[int, AfterValidator(_expiry_seconds)]

DEADLINE_DOC = (
    "An RFC 3339 time with a UTC offset (e.g. 2026-12-01T17:30:00Z): items not started by "
    "then end with the error `not started before the deadline`. Within a priority, earlier "
    "deadlines run first. A time more than a minute past is a 422."
)
Deadline = Annotated[
    datetime | None, BeforeValidator(_deadline_or_none), Field(description=DEADLINE_DOC)
]


MODEL_NAME_DOC = (
    "The catalogue name of the model to run (`GET /v1/models` lists them); omitted: the "
    "task's default. A name the task does not have is a 422 that lists the task's models."
)


def _model_name_field() -> Any:
    return Field(default=None, min_length=1, max_length=100, description=MODEL_NAME_DOC)


class JobRetry(Strict):
    """Body of `POST /v1/jobs/{id}/retry` (optional)."""

    deadline: Deadline = None


class JobCreate(Strict):
    """Body of `POST /v1/jobs`."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"task": "sentiment", "input": {"texts": ["I love it", "meh"]}},
                {
                    "task": "summarize",
                    "input": {"text": "A long news article ..."},
                    "options": {"max_length": 60, "num_beams": 4},
                },
                {
                    "task": "sentiment",
                    "input": {"texts": ["Charged twice this month", "Arrived a week late"]},
                    "options": {"categories": ["billing", "shipping"], "insights": True},
                },
            ]
        },
    )

    task: TaskName
    input: JobInput
    model: str | None = _model_name_field()
    options: dict[str, Any] = Field(default_factory=dict)
    webhook_url: str | None = Field(default=None, max_length=2048)
    webhook_events: list[WebhookEventKind] | None = None
    deadline: Deadline = None
    priority: int | None = Field(
        default=None,
        ge=0,
        le=9,
        description="Higher runs first. Default: 6 for up to 100 texts, 4 for larger jobs and "
        "documents (the classic endpoints use 8, file uploads 2).",
    )
    expires_after_s: ExpirySeconds | None = Field(
        default=None,
        json_schema_extra={"minimum": 1},
        description="Delete the job's results this many seconds after it ends (at most the "
        "tenant's retention).",
    )

    def effective_priority(self) -> int:
        """Return the job's priority: as asked, or by its size (small jobs are interactive)."""
        if self.priority is not None:
            return self.priority
        small = self.input.kind == "texts" and len(self.input.all_texts()) <= 100
        return INTERACTIVE_PRIORITY if small else BULK_JOB_PRIORITY

    @model_validator(mode="after")
    def _events_need_a_url(self) -> JobCreate:
        if self.webhook_events is not None and self.webhook_url is None:
            raise ValueError("webhook_events needs a webhook_url")
        return self

    def webhook(self) -> WebhookSettings | None:
        """Return the job's webhook, if it asked for one."""
        if self.webhook_url is None:
            return None
        return WebhookSettings(
            url=self.webhook_url, events=self.webhook_events or list(DEFAULT_WEBHOOK_EVENTS)
        )

    @model_validator(mode="after")
    def _options_for_task(self) -> JobCreate:
        self.options = validate_options(self.task, self.options)
        return self


class ChunkProgress(BaseModel):
    total: int = Field(
        description="Parts of long texts run or to run so far: each text's chunks and, for "
        "summaries, the parts that summarize their summaries (in a result with "
        "`include_chunks`: `chunks` plus `reduce_parts`)."
    )
    done: int = Field(description="Of those parts, the ones that have finished.")


class Progress(BaseModel):
    total: int
    done: int
    errored: int
    cached: int = Field(description="Of the done items, those answered from the result cache.")
    chunks: ChunkProgress


class QueueRead(BaseModel):
    """Where an unfinished job stands in its workers' queue.

    A job with insights whose texts are done waits for its summaries: its queue is theirs.
    """

    task: Task = Field(description="The task of the items waited for.")
    model: str = Field(description="The source of the model of the items waited for.")
    model_name: str | None = Field(
        default=None,
        description="Its catalogue name (none for a job from before the catalogue).",
    )
    workers: int = Field(
        description="Live workers serving that task and catalogue model. 0: nothing runs the "
        "job until one starts (`textq worker --models NAME`; `textq models list` shows what "
        "each worker serves)."
    )
    items_ahead: int = Field(
        description="Items of higher priority, or of its priority and submitted earlier."
    )
    items_left: int = Field(description="This job's items (and chunks) not finished yet.")
    items_per_s: float = Field(
        description="Items of this task and model workers finished per second lately, "
        "between the first and last batch of the last minute (0: no pace known yet)."
    )
    estimated_finish_at: datetime | None = Field(
        description="When the job should finish at that pace (null while no pace is known "
        "or no live worker serves it)."
    )


class NegativeFeedback(BaseModel):
    """The negative feedback of one category of an insights job."""

    count: int = Field(description="Texts of this category with a negative label.")
    summary: str | None = Field(
        description="A summary of them (the most negative first, up to "
        "TEXTQ_INSIGHT_MAX_CHARS); null while it runs, or if there are none or it failed."
    )
    error: str | None = Field(description="Why there is no summary, if it failed.")


class JobInsights(BaseModel):
    """What a sentiment job with `insights` found, per category."""

    status: Literal["counting", "summarizing", "done"] = Field(
        description="counting: texts still run (counts grow as they finish); summarizing: "
        "every text is done and the negative feedback is being summarized; done."
    )
    categories: list[str] = Field(description="The job's categories, or [`all`] without any.")
    counts: dict[str, dict[str, int]] = Field(
        description="Per category, how many finished texts got each label (failed texts are "
        "not counted)."
    )
    negative: dict[str, NegativeFeedback] = Field(
        description="Per category, its negative feedback; filled once every text is done."
    )
    summary_job_id: uuid.UUID | None = Field(
        description="The summarization job that writes the summaries (readable by id, not "
        "listed), if there was negative feedback."
    )


class JobLinks(BaseModel):
    self: str
    results: str


class BatchCreate(Strict):
    """JSON body of `POST /v1/batches`: a file fetched from `input_url` instead of uploaded.

    The same fields as the multipart form, typed: `options` an object, `webhook_events` a
    list, `priority` and `expires_after_s` integers.
    """

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "task": "sentiment",
                    "input_url": "https://bucket.s3.amazonaws.com/feedback.csv.gz?X-Amz-Signature=...",
                    "output_url": "https://bucket.s3.amazonaws.com/results.jsonl.gz?X-Amz-Signature=...",
                    "output_gzip": True,
                    "expires_after_s": 86400,
                }
            ]
        },
    )

    task: TaskName
    input_url: HttpUrlText = Field(
        max_length=8192,
        json_schema_extra={"pattern": HTTP_URL_PATTERN},
        description="An http(s) URL of the CSV or JSONL file (gzip too); presigned URLs work.",
    )
    text_column: str | None = Field(default=None, max_length=200)
    id_column: str | None = Field(default=None, max_length=200)
    model: str | None = _model_name_field()
    options: dict[str, Any] = Field(default_factory=dict)
    format: str | None = Field(default=None, max_length=20)
    encoding: str | None = Field(default=None, max_length=40)
    webhook_url: str | None = Field(default=None, max_length=2048)
    webhook_events: list[WebhookEventKind] | None = None
    priority: int | None = Field(default=None, ge=0, le=9)
    output_url: HttpUrlText | None = Field(
        default=None,
        max_length=8192,
        json_schema_extra={"pattern": HTTP_URL_PATTERN},
        description="Where to PUT the results as JSON Lines once the job ends (presigned PUT "
        "URLs work).",
    )
    output_gzip: bool = Field(default=False, description="PUT the results gzip-compressed.")
    expires_after_s: ExpirySeconds | None = Field(
        default=None,
        json_schema_extra={"minimum": 1},
        description="Delete the job's results this many seconds after it ends (at most the "
        "tenant's retention).",
    )
    deadline: Deadline = None

    def form_fields(self) -> dict[str, str]:
        """Return the body as the multipart form's fields (strings), as the route reads them."""
        fields = {
            "task": self.task.value,
            "input_url": self.input_url,
            "text_column": self.text_column,
            "id_column": self.id_column,
            "model": self.model,
            "options": json.dumps(self.options) if self.options else None,
            "format": self.format,
            "encoding": self.encoding,
            "webhook_url": self.webhook_url,
            "webhook_events": ",".join(self.webhook_events) if self.webhook_events else None,
            "priority": None if self.priority is None else str(self.priority),
            "output_url": self.output_url,
            "output_gzip": "true" if self.output_gzip else None,
            "expires_after_s": None if self.expires_after_s is None else str(self.expires_after_s),
            "deadline": None if self.deadline is None else self.deadline.isoformat(),
        }
        return {name: value for name, value in fields.items() if value is not None}


class OutputRead(BaseModel):
    """Where a job's results are PUT once it ends (`output_url`), and how that went."""

    url_host: str = Field(description="The output URL's host; the URL itself is never shown.")
    gzip: bool
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_error: str | None = None
    delivered_at: datetime | None = None


class JobRead(BaseModel):
    """A job as clients see it."""

    id: uuid.UUID
    task: Task
    status: JobStatus
    progress: Progress
    model: str = Field(description="The source of the model: a hub id or a directory.")
    model_name: str | None = Field(
        default=None,
        description="The catalogue name of the model (none on jobs from before the catalogue).",
    )
    model_revision: str | None = Field(
        description="The exact revision the job ran on (none until a worker started it)."
    )
    options: dict[str, Any]
    input: dict[str, Any] = Field(
        description="What was submitted: `kind` (texts, document or file), and for a file its "
        "name, format and the columns read, and `preview`: the start of its first text (none "
        "in a webhook's body)."
    )
    labels: dict[str, int] | None = Field(
        default=None, description="Sentiment jobs: how many finished items got each label."
    )
    insights: JobInsights | None = Field(
        default=None, description="Sentiment jobs submitted with `insights`: what they found."
    )
    webhook: WebhookSettings | None = None
    priority: int
    queue: QueueRead | None = Field(
        default=None, description="For a queued or running job read by id: its place in line."
    )
    output: OutputRead | None = Field(
        default=None, description="Jobs with an `output_url`: the delivery of their results."
    )
    expires_after_s: int | None = Field(
        default=None, description="Seconds after the end when the job's results are deleted."
    )
    expires_at: datetime | None = Field(
        default=None,
        description="Once a job with `expires_after_s` has ended: when its results are deleted.",
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    deadline: datetime | None = Field(
        default=None,
        description="Items not started by then end with `not started before the deadline`.",
    )
    links: JobLinks


class JobPage(BaseModel):
    """A page of jobs, newest first; pass `next_cursor` as `cursor` for the next page."""

    items: list[JobRead]
    next_cursor: str | None


class ClassicTextRequest(Strict):
    """Body of the classic `/analyze` endpoint."""

    text: str
    model: str | None = _model_name_field()

    @field_validator("text")
    @classmethod
    def _check(cls, text: str, info: ValidationInfo) -> str:
        return check_text(text, info)


class ClassicSummarizeRequest(ClassicTextRequest):
    """Body of the classic `/summarize` endpoint, with the pipeline's optional length knobs."""

    max_length: int | None = MAX_LENGTH_FIELD
    min_length: int | None = MIN_LENGTH_FIELD
    do_sample: bool = False

    @model_validator(mode="after")
    def _min_not_above_max(self) -> ClassicSummarizeRequest:
        check_length_range(self.min_length, self.max_length)
        return self

    def options(self) -> dict[str, Any]:
        """Return these knobs as summarization job options."""
        return SummarizeOptions(
            max_length=self.max_length, min_length=self.min_length, do_sample=self.do_sample
        ).model_dump(exclude_defaults=True)


class ClassicLabel(BaseModel):
    label: str
    score: float


class ClassicSummary(BaseModel):
    summary_text: str
