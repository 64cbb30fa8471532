"""What a long text's chunks add up to: a document label, or the text for the next round."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Beyond this many reduce rounds a summary stops splitting and runs truncated; with chunk
# summaries a quarter of a window or less, even 10 M tokens need only 6 rounds.
MAX_REDUCE_ROUNDS = 8


@dataclass(frozen=True)
class FinishedChunk:
    """A chunk that has run: where it sits in its text, its size, and its outcome."""

    index: int
    start: int
    end: int
    tokens: int
    result: dict[str, Any] | None
    error: str | None


def first_failure(parts: Sequence[FinishedChunk]) -> str | None:
    """Return the message for a text whose chunk failed, or None if every chunk succeeded.

    The chunk is named by its `index`, as the results' `chunks` list it (from 0).
    """
    for part in parts:
        if part.error is not None or part.result is None:
            return (
                f"chunk index {part.index} (of {len(parts)} chunks; characters "
                f"{part.start}-{part.end}) failed: {part.error or 'no result'}"
            )
    return None


def document_sentiment(parts: Sequence[FinishedChunk]) -> dict[str, Any]:
    """Return a text's label from its chunks: their probabilities averaged, weighted by tokens.

    Chunks of a job with categories carry their similarity to each category: the text's
    category is the one with the highest average, weighted the same way.
    """
    results = [part.result or {} for part in parts]
    weights = [max(part.tokens, 1) for part in parts]
    scores = _weighted_mean([result["scores"] for result in results], weights)
    label = max(scores, key=scores.__getitem__)
    document: dict[str, Any] = {"label": label, "score": scores[label], "scores": scores}
    if results and all("category_scores" in result for result in results):
        similarities = _weighted_mean([r["category_scores"] for r in results], weights)
        category = max(similarities, key=similarities.__getitem__)
        document |= {"category": category, "category_score": similarities[category]}
    return document


def _weighted_mean(values: Sequence[dict[str, float]], weights: Sequence[int]) -> dict[str, float]:
    """Return the mean of each key over dicts of numbers, weighted."""
    total = sum(weights)
    mean: dict[str, float] = {}
    for entry, weight in zip(values, weights, strict=True):
        for key, value in entry.items():
            mean[key] = mean.get(key, 0.0) + value * weight / total
    return mean


def joined_summaries(parts: Sequence[FinishedChunk]) -> str:
    """Return the chunks' summaries in order, as the text the next round summarizes."""
    return "\n".join(str((part.result or {})["summary_text"]).strip() for part in parts)
