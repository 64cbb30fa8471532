"""Insights of a sentiment job: counts per category and label, and its negative feedback
summarized per category by a summarization job textq makes for it (its child job).

The state is one JSON object on the job (`jobs.insights`). It moves counting -> summarizing
-> done, each step in the transaction that finishes the job's last text or its child job,
so each happens exactly once. These functions only compute the next state; the queries
that store it are in shared/jobs/feedback.py and shared/jobs/lifecycle.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.schemas import JobInsights

ALL = "all"
"""The one category of a job that asked for insights without categories."""
COUNTING, SUMMARIZING, DONE = "counting", "summarizing", "done"
NEGATIVE_MARK = "neg"


@dataclass(frozen=True)
class Summarizer:
    """The model that summarizes a job's negative feedback, and how much text it gets."""

    model: str
    max_chars: int
    # The catalogue name of `model` (absent from insights recorded before the catalogue).
    name: str | None = None


def initial_state(options: Mapping[str, Any], summarizer: Summarizer) -> dict[str, Any] | None:
    """Return the insights a new sentiment job starts with, or None if it asked for none."""
    if not options.get("insights"):
        return None
    categories = list(options.get("categories") or [ALL])
    return {
        "status": COUNTING,
        "categories": categories,
        "counts": {category: {} for category in categories},
        "negative": {},
        "summary_job_id": None,
        # Chosen when the job is submitted, like its model: not shown to clients.
        "summarizer": {
            "model": summarizer.model,
            "max_chars": summarizer.max_chars,
            "name": summarizer.name,
        },
    }


def summarizer_of(state: Mapping[str, Any]) -> Summarizer:
    """Return the summarizer recorded when the job was submitted."""
    return Summarizer(**state["summarizer"])


def is_negative(label: str) -> bool:
    """Say whether a label is a negative one (NEGATIVE, negative, LABEL_neg ...)."""
    return NEGATIVE_MARK in label.casefold()


def category_of(result: Mapping[str, Any]) -> str:
    """Return the category a text's result is counted in."""
    return str(result.get("category") or ALL)


def with_counts(state: Mapping[str, Any], results: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Return the state with finished texts' results added to the counts."""
    counts = {category: Counter(labels) for category, labels in state["counts"].items()}
    for result in results:
        counts.setdefault(category_of(result), Counter())[str(result["label"])] += 1
    return {
        **state,
        "counts": {category: dict(sorted(labels.items())) for category, labels in counts.items()},
    }


def negative_counts(state: Mapping[str, Any]) -> dict[str, int]:
    """Return, per category, how many texts got a negative label."""
    return {
        category: sum(count for label, count in labels.items() if is_negative(label))
        for category, labels in state["counts"].items()
    }


def joined_feedback(texts: Iterable[str], max_chars: int) -> str:
    """Return texts one per line, in the order given, cut at `max_chars` characters."""
    lines = (" ".join(text.split()) for text in texts)
    return "\n".join(line for line in lines if line)[:max_chars]


def summarizing(state: Mapping[str, Any], *, summary_job_id: str) -> dict[str, Any]:
    """Return the state once a child job summarizes the negative feedback."""
    return {
        **state,
        "status": SUMMARIZING,
        "negative": _negative_entries(state, {}, missing=None),
        "summary_job_id": summary_job_id,
    }


@dataclass(frozen=True)
class SummaryOutcome:
    """What came of one category's summary: its text, or why there is none."""

    summary: str | None
    error: str | None


def settled(
    state: Mapping[str, Any],
    outcomes: Mapping[str, SummaryOutcome],
    *,
    missing: str | None = None,
) -> dict[str, Any]:
    """Return the final state: counts, and each category's summary (or its error).

    A category with negative feedback but no outcome gets `missing` as its error (a job
    cancelled before its summaries ran).
    """
    return {**state, "status": DONE, "negative": _negative_entries(state, outcomes, missing)}


def _negative_entries(
    state: Mapping[str, Any], outcomes: Mapping[str, SummaryOutcome], missing: str | None
) -> dict[str, dict[str, Any]]:
    entries = {}
    for category, count in negative_counts(state).items():
        outcome = outcomes.get(category)
        if outcome is None:
            outcome = SummaryOutcome(summary=None, error=missing if count else None)
        entries[category] = {"count": count, "summary": outcome.summary, "error": outcome.error}
    return entries


def without_summaries(state: Mapping[str, Any]) -> dict[str, Any]:
    """Return the state with the summaries dropped (they quote the texts: retention)."""
    negative = {
        category: {**entry, "summary": None} for category, entry in state["negative"].items()
    }
    return {**state, "negative": negative}


def present(state: Mapping[str, Any]) -> JobInsights:
    """Return the insights as clients see them."""
    return JobInsights.model_validate(
        {
            key: state.get(key)
            for key in ("status", "categories", "counts", "negative", "summary_job_id")
        }
    )
