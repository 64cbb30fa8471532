"""Compare a default model's results with its shadow candidate's on the same texts (pure)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from shared.states import Task

# (the default's result, the candidate's result) of one text, as stored on its item.
Pair = tuple[dict[str, Any], dict[str, Any]]


@dataclass(frozen=True)
class Comparison:
    """How a candidate's results compare with the default's over `items` texts.

    Sentiment: the share of texts given the same label, the confusion matrix (rows: the
    default's label, columns: the candidate's, both in the order of `labels`), and the mean
    and max absolute difference in the score of the default's label (a label the candidate
    lacks scores 0 there). Summaries: the mean ROUGE-L F-measure of the candidate's summary
    against the default's, and the mean ratio of their lengths in words (candidate over
    default; texts whose default summary is empty are left out of it). None where there is
    nothing to average.
    """

    items: int
    label_agreement: float | None = None
    labels: list[str] | None = None
    confusion: list[list[int]] | None = None
    mean_abs_delta_score: float | None = None
    max_abs_delta_score: float | None = None
    mean_rouge_l_f: float | None = None
    mean_length_ratio: float | None = None


def compare(task: Task, pairs: Sequence[Pair]) -> Comparison:
    """Return the comparison of `pairs` of `task` results (see `Comparison`)."""
    if task is Task.SENTIMENT:
        return compare_sentiment(pairs)
    return compare_summaries(pairs)


def compare_sentiment(pairs: Sequence[Pair]) -> Comparison:
    """Compare labels and scores of sentiment results ({"label", "score", "scores"})."""
    if not pairs:
        return Comparison(items=0)
    cells = Counter((str(d["label"]), str(c["label"])) for d, c in pairs)
    labels = sorted({label for cell in cells for label in cell})
    deltas = [
        abs(float(d["score"]) - float((c.get("scores") or {}).get(d["label"], 0.0)))
        for d, c in pairs
    ]
    return Comparison(
        items=len(pairs),
        label_agreement=sum(n for (d, c), n in cells.items() if d == c) / len(pairs),
        labels=labels,
        confusion=[[cells[(row, column)] for column in labels] for row in labels],
        mean_abs_delta_score=sum(deltas) / len(deltas),
        max_abs_delta_score=max(deltas),
    )


def compare_summaries(pairs: Sequence[Pair]) -> Comparison:
    """Compare summaries ({"summary"}) by ROUGE-L F and length in words."""
    if not pairs:
        return Comparison(items=0)
    scorer = _rouge_l()
    scores = [
        scorer.score(str(d["summary"]), str(c["summary"]))["rougeL"].fmeasure for d, c in pairs
    ]
    ratios = [
        len(str(c["summary"]).split()) / len(str(d["summary"]).split())
        for d, c in pairs
        if str(d["summary"]).split()
    ]
    return Comparison(
        items=len(pairs),
        mean_rouge_l_f=sum(scores) / len(scores),
        mean_length_ratio=sum(ratios) / len(ratios) if ratios else None,
    )


@lru_cache(maxsize=1)
def _rouge_l() -> Any:
    # Imported on first use: only reports on summaries need it, and it brings in nltk.
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
