"""Drift of a model's traffic: the features counted per item, their bins, and the PSI.

Pure: no database. Each finished text adds one to a bin of each feature of its task
(shared/jobs/drift_counts.py keeps the hourly counts); a window's counts make a
distribution, and the population stability index compares the last 24 hours with a
reference window.

PSI = sum of (a_i - e_i) * ln(a_i / e_i) over the bins i, where e_i and a_i are the shares of
the reference ("expected") and current ("actual") items in bin i (N. Siddiqi, *Credit Risk
Scorecards*, Wiley 2006, ch. 8). A share of 0 counts as `EMPTY_SHARE` (0.0001), as
Evidently's `psi_stat_test` does, so a bin empty in one window adds a large but finite
term. The rule of thumb: below 0.1 the population has not changed much, 0.1 to 0.2 is a
moderate shift worth watching, above 0.2 a significant one (Siddiqi puts the last line at
0.25; many monitoring tools, and textq's alert `TextqDriftHigh`, use 0.2).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.jobs.work import Outcome
from shared.states import Task

EMPTY_SHARE = 1e-4
# Fewer items than this in either window give no PSI: the shares would be mostly noise.
MIN_WINDOW_ITEMS = 100
REFERENCE_DAYS = 7
CURRENT_HOURS = 24
PSI_HIGH = 0.2

FEATURES: dict[Task, tuple[str, ...]] = {
    Task.SENTIMENT: ("label", "confidence"),
    Task.SUMMARIZE: ("input_tokens", "compression"),
}
# Fixed bins, so windows months apart compare bin for bin. Input tokens on a log-2 scale
# (a text of 16-31 tokens, 32-63, ...); compression is summary characters / input characters.
CONFIDENCE_BINS = 10
TOKEN_EDGES = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
COMPRESSION_EDGES = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0)
MAX_BIN_CHARS = 64


def _edge_bins(edges: Sequence[float]) -> list[str]:
    names = [f"<{edges[0]:g}"]
    names += [f"{low:g}-{high:g}" for low, high in itertools.pairwise(edges)]
    return [*names, f">={edges[-1]:g}"]


TOKEN_BINS = _edge_bins(TOKEN_EDGES)
COMPRESSION_BINS = _edge_bins(COMPRESSION_EDGES)
CONFIDENCE_BIN_NAMES = [
    f"{n / CONFIDENCE_BINS:.1f}-{(n + 1) / CONFIDENCE_BINS:.1f}" for n in range(CONFIDENCE_BINS)
]
# Where a feature's bins are fixed, their order; labels sort by name.
BIN_ORDER: dict[str, list[str]] = {
    "confidence": CONFIDENCE_BIN_NAMES,
    "input_tokens": TOKEN_BINS,
    "compression": COMPRESSION_BINS,
}


def confidence_bin(score: float) -> str:
    """Return the tenth of [0, 1] a classifier's top score falls in, e.g. `0.9-1.0`."""
    return CONFIDENCE_BIN_NAMES[min(max(int(score * CONFIDENCE_BINS), 0), CONFIDENCE_BINS - 1)]


def token_bin(tokens: int) -> str:
    """Return the log-2 bin of a text's length in tokens, e.g. `64-128` (64 to 127)."""
    return TOKEN_BINS[bisect.bisect_right(TOKEN_EDGES, tokens)]


def compression_bin(ratio: float) -> str:
    """Return the bin of summary characters / input characters, e.g. `0.1-0.15`."""
    return COMPRESSION_BINS[bisect.bisect_right(COMPRESSION_EDGES, ratio)]


def features_of(task: Task, outcome: Outcome) -> list[tuple[str, str]]:
    """Return the (feature, bin) pairs one outcome of a text adds to, or none.

    Sentiment: its label and the bin of its score. Summaries: the bin of the text's tokens
    (also when it was split into chunks) and, once summarized in one pass, the bin of
    summary characters / input characters. An error, or a summary answered from the
    result cache (its text was never tokenized), adds nothing.
    """
    result: dict[str, Any] = outcome.result or {}
    if task is Task.SENTIMENT:
        if "label" not in result or "score" not in result:
            return []
        label = str(result["label"])[:MAX_BIN_CHARS]
        return [("label", label), ("confidence", confidence_bin(float(result["score"])))]
    if outcome.input_tokens is None:
        return []
    pairs = [("input_tokens", token_bin(outcome.input_tokens))]
    if "summary_text" in result and outcome.input_chars:
        ratio = len(str(result["summary_text"])) / outcome.input_chars
        pairs.append(("compression", compression_bin(ratio)))
    return pairs


def hour_of(moment: datetime) -> datetime:
    """Return the start of the hour a moment falls in (the counts' time bucket)."""
    return moment.replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Window:
    """Hours [start, end) of counts, in UTC."""

    start: datetime
    end: datetime


def current_window(now: datetime) -> Window:
    """Return the last 24 hours: this hour so far and the 23 before it."""
    end = hour_of(now) + timedelta(hours=1)
    return Window(end - timedelta(hours=CURRENT_HOURS), end)


def reference_window(first_hour: datetime | None, pinned: Window | None) -> Window | None:
    """Return the window the operator pinned, else the first 7 days of traffic (None: none yet)."""
    if pinned is not None:
        return pinned
    if first_hour is None:
        return None
    return Window(first_hour, first_hour + timedelta(days=REFERENCE_DAYS))


def pinned_reference(start: datetime | None, end: datetime | None) -> Window | None:
    """Return the reference window the operator pinned (TEXTQ_DRIFT_REFERENCE_*), if any."""
    return Window(start, end) if start is not None and end is not None else None


def shares(counts: Mapping[str, int], bins: Sequence[str]) -> dict[str, float]:
    """Return each bin's share of the items (0 for a bin with none; {} for no items)."""
    total = sum(counts.values())
    if not total:
        return {}
    return {name: counts.get(name, 0) / total for name in bins}


def psi(expected: Mapping[str, int], actual: Mapping[str, int]) -> float:
    """Return the population stability index of `actual` counts against `expected` ones.

    Bins are the names either has; shares of 0 count as EMPTY_SHARE. Raises ValueError
    when either has no items.
    """
    if not sum(expected.values()) or not sum(actual.values()):
        raise ValueError("PSI needs items in both distributions")
    bins = sorted(set(expected) | set(actual))
    e, a = shares(expected, bins), shares(actual, bins)
    total = 0.0
    for name in bins:
        e_i, a_i = max(e[name], EMPTY_SHARE), max(a[name], EMPTY_SHARE)
        total += (a_i - e_i) * math.log(a_i / e_i)
    return total


def ordered_bins(feature: str, *counts: Mapping[str, int]) -> list[str]:
    """Return a feature's bins in their natural order: fixed bins, or labels by name."""
    seen = set().union(*counts)
    fixed = BIN_ORDER.get(feature)
    if fixed is None:
        return sorted(seen)
    return [name for name in fixed if name in seen] + sorted(seen - set(fixed))


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's PSI between two windows (None with the reason when there is none)."""

    feature: str
    psi: float | None
    reason: str | None
    reference_items: int
    current_items: int
    reference: dict[str, float]
    current: dict[str, float]


def compare(
    feature: str,
    reference_counts: Mapping[str, int],
    current_counts: Mapping[str, int],
    *,
    reference: Window | None,
    current: Window,
) -> FeatureDrift:
    """Return a feature's drift, or why it cannot be measured yet."""
    bins = ordered_bins(feature, reference_counts, current_counts)
    ref_items, cur_items = sum(reference_counts.values()), sum(current_counts.values())
    reason = None
    if reference is None:
        reason = "no traffic counted for this model yet"
    elif current.start < reference.end:
        reason = (
            f"the reference window ends at {reference.end.isoformat()}; drift is measured "
            "once the last 24 hours lie after it"
        )
    elif ref_items < MIN_WINDOW_ITEMS:
        reason = f"{ref_items} items in the reference window; PSI needs {MIN_WINDOW_ITEMS}"
    elif cur_items < MIN_WINDOW_ITEMS:
        reason = f"{cur_items} items in the last 24 hours; PSI needs {MIN_WINDOW_ITEMS}"
    return FeatureDrift(
        feature=feature,
        psi=None if reason else round(psi(reference_counts, current_counts), 6),
        reason=reason,
        reference_items=ref_items,
        current_items=cur_items,
        reference=shares(reference_counts, bins),
        current=shares(current_counts, bins),
    )
