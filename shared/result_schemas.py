"""Response bodies of a job's results: an entry per text (or why it has none), a page of them."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

from shared.states import JobStatus, Task


class _WithoutNulls(BaseModel):
    """A result entry: fields that do not apply (no custom id, no chunks) are left out."""

    @model_serializer(mode="wrap")
    def _drop_nulls(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class ChunkResult(_WithoutNulls):
    """One chunk of a long text: its characters [start, end) in the text, and its outcome."""

    index: int
    start: int
    end: int
    tokens: int
    label: str | None = None
    score: float | None = None
    scores: dict[str, float] | None = None
    category: str | None = None
    category_score: float | None = None
    summary_text: str | None = None
    error: str | None = None


class SentimentResult(_WithoutNulls):
    index: int
    custom_id: str | None = None
    text: str | None = Field(
        default=None, description="With `include_text=true`: the text as submitted."
    )
    label: str
    score: float
    scores: dict[str, float]
    category: str | None = Field(
        default=None, description="Jobs with `categories`: the one nearest the text in meaning."
    )
    category_score: float | None = Field(
        default=None, description="The cosine similarity of the text and its category."
    )
    chunks: list[ChunkResult] | None = None


class SummaryResult(_WithoutNulls):
    index: int
    custom_id: str | None = None
    text: str | None = Field(
        default=None, description="With `include_text=true`: the text as submitted."
    )
    summary_text: str
    chunks: list[ChunkResult] | None = None
    reduce_parts: int | None = Field(
        default=None,
        description="With `include_chunks`: parts run to summarize the chunks' summaries "
        "(round after round) into `summary_text`.",
    )


class ItemFailure(_WithoutNulls):
    index: int
    custom_id: str | None = None
    text: str | None = Field(
        default=None, description="With `include_text=true`: the text as submitted."
    )
    error: str
    chunks: list[ChunkResult] | None = Field(
        default=None,
        description="With `include_chunks`: the chunks of a long text that failed or was "
        "cancelled, with the outcome of each that finished.",
    )


ResultItem = SentimentResult | SummaryResult | ItemFailure


class ResultPage(BaseModel):
    """A page of results in input order; pass `next_cursor` as `cursor` for the next page."""

    job_id: uuid.UUID
    task: Task
    status: JobStatus
    partial: bool = Field(
        default=False,
        description="True while the job is queued or running: `items` are the texts finished "
        "so far, up to the first one not finished, and `next_cursor` is always set; read it "
        "again for the rest.",
    )
    items: list[ResultItem]
    next_cursor: str | None
