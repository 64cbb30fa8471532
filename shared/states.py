"""Tasks, job and item states, and the only legal transitions between them."""

from __future__ import annotations

from enum import StrEnum


class Task(StrEnum):
    """What a job asks the models to do."""

    SENTIMENT = "sentiment"
    """Label each text POSITIVE/NEGATIVE (or the model's own labels) with probabilities."""
    SUMMARIZE = "summarize"
    """Write an abstractive summary of each text."""

    @classmethod
    def parse(cls, value: str) -> Task:
        """Return the task named by `value`, accepting the pipeline-style alias `summarization`."""
        return cls(TASK_ALIASES.get(value, value))


TASK_ALIASES = {"summarization": Task.SUMMARIZE.value, "sentiment-analysis": Task.SENTIMENT.value}


class JobStatus(StrEnum):
    """Where a job is in its life; the last five never change, except finished -> expired."""

    QUEUED = "queued"
    """Accepted and stored; no item has been picked up yet."""
    RUNNING = "running"
    """A worker has claimed at least one item."""
    SUCCEEDED = "succeeded"
    """Every item has a result."""
    FAILED = "failed"
    """Every item ended in an error."""
    PARTIAL = "partial"
    """Some items have results and some ended in an error."""
    CANCELLED = "cancelled"
    """Stopped on request; results computed before that stay readable."""
    EXPIRED = "expired"
    """Finished longer ago than the retention period: its inputs and results were purged."""


FINISHED_JOB_STATUSES = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.PARTIAL, JobStatus.CANCELLED}
)
TERMINAL_JOB_STATUSES = FINISHED_JOB_STATUSES | {JobStatus.EXPIRED}
ACTIVE_JOB_STATUSES = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})

JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, *FINISHED_JOB_STATUSES}),
    JobStatus.RUNNING: FINISHED_JOB_STATUSES,
    # The one change after the end: retention purges the data, the status says so.
    **{status: frozenset({JobStatus.EXPIRED}) for status in FINISHED_JOB_STATUSES},
    JobStatus.EXPIRED: frozenset(),
}


class ItemStatus(StrEnum):
    """Where one text of a job is; `done`, `error` and `cancelled` never change once reached."""

    PENDING = "pending"
    """Waiting for a worker to claim it."""
    RUNNING = "running"
    """Claimed by a worker under a lease; re-pended if the lease expires."""
    WAITING = "waiting"
    """Longer than the model's window: split into chunks, waits for them to finish."""
    DONE = "done"
    """Has its result."""
    ERROR = "error"
    """Ended with an error message instead of a result."""
    CANCELLED = "cancelled"
    """Its job was cancelled before a worker claimed it."""


TERMINAL_ITEM_STATUSES = frozenset({ItemStatus.DONE, ItemStatus.ERROR, ItemStatus.CANCELLED})

ITEM_TRANSITIONS: dict[ItemStatus, frozenset[ItemStatus]] = {
    ItemStatus.PENDING: frozenset({ItemStatus.RUNNING, ItemStatus.CANCELLED, ItemStatus.ERROR}),
    # RUNNING -> PENDING is the lease expiring or a worker handing its claim back.
    ItemStatus.RUNNING: frozenset(
        {ItemStatus.PENDING, ItemStatus.WAITING, ItemStatus.DONE, ItemStatus.ERROR}
    ),
    # WAITING -> PENDING is a summary's next reduce round over its chunks' summaries.
    ItemStatus.WAITING: frozenset(
        {ItemStatus.PENDING, ItemStatus.DONE, ItemStatus.ERROR, ItemStatus.CANCELLED}
    ),
    **{status: frozenset() for status in TERMINAL_ITEM_STATUSES},
}


# The one way back from an end besides expiry: a retry (shared/jobs/retry.py) runs the
# failed items of a partial or failed job again, `error` -> `pending` (or a text back to
# `waiting` for its failed chunks), and the job -> `running`.
RETRYABLE_JOB_STATUSES = frozenset({JobStatus.PARTIAL, JobStatus.FAILED})


def job_sources(target: JobStatus) -> frozenset[JobStatus]:
    """Return the job states from which `target` may be entered."""
    return frozenset(s for s, allowed in JOB_TRANSITIONS.items() if target in allowed)


def item_sources(target: ItemStatus) -> frozenset[ItemStatus]:
    """Return the item states from which `target` may be entered."""
    return frozenset(s for s, allowed in ITEM_TRANSITIONS.items() if target in allowed)


def outcome_status(*, done: int, errored: int) -> JobStatus:
    """Return the terminal status of a job whose items all finished with these counts."""
    if errored == 0:
        return JobStatus.SUCCEEDED
    if done == 0:
        return JobStatus.FAILED
    return JobStatus.PARTIAL
