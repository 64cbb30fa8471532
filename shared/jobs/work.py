"""The worker's contract with the database: a claimed item in, an outcome out.

Plain types, no SQL: the model engine reads and returns these, and can be tested
without a database."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from shared.states import ItemStatus


@dataclass(frozen=True)
class ClaimedItem:
    id: int
    job_id: uuid.UUID
    index: int
    text: str
    options: dict[str, Any]
    # Set on a chunk of a long text: the text's item id.
    parent_id: int | None = None
    # A text: its reduce round (0: as submitted). A chunk: the round it belongs to.
    level: int = 0

    @property
    def is_chunk(self) -> bool:
        return self.parent_id is not None


@dataclass(frozen=True)
class Claim:
    """Items a worker holds under one lease token until it records their outcomes."""

    token: uuid.UUID
    items: list[ClaimedItem]
    priority: int = 5
    # It took all its budget allowed (items, tokens, or a lost claim's small group): more
    # work is likely waiting.
    full: bool = False
    # Its items ran before, in a claim whose worker was lost (never mixed with fresh ones).
    retried: bool = False
    # Some of its jobs have a deadline: their texts not started by then end with an error.
    deadlines: bool = False


@dataclass(frozen=True)
class NewChunk:
    """A chunk a text too long for the model's window is split into."""

    start: int
    end: int
    tokens: int
    text: str


@dataclass(frozen=True)
class Outcome:
    """The result (or error) of one claimed item, or the chunks it was split into."""

    item_id: int
    result: dict[str, Any] | None = None
    error: str | None = None
    from_cache: bool = False
    chunks: list[NewChunk] | None = None
    # A submitted text the model ran (not a chunk, not a later round): its length in
    # tokens and characters, counted for drift (shared/jobs/drift_counts.py).
    input_tokens: int | None = None
    input_chars: int | None = None

    @property
    def status(self) -> ItemStatus:
        if self.chunks is not None:
            return ItemStatus.WAITING
        return ItemStatus.ERROR if self.error is not None else ItemStatus.DONE
