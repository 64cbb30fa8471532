"""What a long text's chunks add up to: a document label, or the text for the next round."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Beyond this many reduce rounds a summary stops splitting and runs truncated; with chunk
# summaries a quarter of a window or less, even 10 M tokens need only 6 rounds.
MAX_REDUCE_ROUNDS = 8


@dataclass(frozen=True)
class FinishedPart:
    """A chunk that has run: where it sits in its text, its size, and its outcome."""

    index: int
    start: int
    end: int
    tokens: int
    result: dict[str, Any] | None
    error: str | None


def first_failure(parts: Sequence[FinishedPart]) -> str | None:
    """Return the message for a text whose chunk failed, or None if every chunk succeeded."""
    for part in parts:
        if part.error is not None or part.result is None:
            return (
                f"chunk {part.index + 1} of {len(parts)} (characters {part.start}-{part.end}) "
                f"failed: {part.error or 'no result'}"
            )
    return None


def document_sentiment(parts: Sequence[FinishedPart]) -> dict[str, Any]:
    """Return a text's label from its chunks: their probabilities averaged, weighted by tokens."""
    weights = [max(part.tokens, 1) for part in parts]
    total = sum(weights)
    scores: dict[str, float] = {}
    for part, weight in zip(parts, weights, strict=True):
        for label, probability in (part.result or {})["scores"].items():
            scores[label] = scores.get(label, 0.0) + probability * weight / total
    label = max(scores, key=scores.__getitem__)
    return {"label": label, "score": scores[label], "scores": scores}


def joined_summaries(parts: Sequence[FinishedPart]) -> str:
    """Return the chunks' summaries in order, as the text the next round summarizes."""
    return "\n".join(str((part.result or {})["summary_text"]).strip() for part in parts)
