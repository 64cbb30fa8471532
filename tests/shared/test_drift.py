"""The drift features' bins, the windows and the PSI, checked against values worked by hand."""

import math
from datetime import UTC, datetime, timedelta

import pytest

from shared.drift import (
    EMPTY_SHARE,
    MIN_WINDOW_ITEMS,
    Window,
    compare,
    compression_bin,
    confidence_bin,
    current_window,
    features_of,
    psi,
    reference_window,
    token_bin,
)
from shared.jobs.work import NewChunk, Outcome
from shared.states import Task

NOW = datetime(2026, 3, 10, 14, 25, tzinfo=UTC)


def test_psi_of_a_synthetic_shift_is_the_sum_worked_by_hand():
    reference = {"NEGATIVE": 50, "NEUTRAL": 30, "POSITIVE": 20}
    current = {"NEGATIVE": 30, "NEUTRAL": 30, "POSITIVE": 40}
    # Shares 0.5/0.3/0.2 became 0.3/0.3/0.4: the middle bin adds nothing.
    by_hand = (0.3 - 0.5) * math.log(0.3 / 0.5) + (0.4 - 0.2) * math.log(0.4 / 0.2)
    assert psi(reference, current) == pytest.approx(by_hand, abs=1e-12)
    assert psi(reference, current) == pytest.approx(0.2407946, abs=1e-7)


def test_a_bin_empty_in_one_window_counts_as_a_share_of_one_in_ten_thousand():
    by_hand = (0.9 - 1.0) * math.log(0.9 / 1.0) + (0.1 - EMPTY_SHARE) * math.log(0.1 / EMPTY_SHARE)
    assert psi({"a": 100}, {"a": 90, "b": 10}) == pytest.approx(by_hand, abs=1e-12)


def test_the_same_distribution_has_no_drift_and_psi_is_symmetric():
    assert psi({"a": 10, "b": 30}, {"a": 100, "b": 300}) == 0
    assert psi({"a": 1, "b": 3}, {"a": 3, "b": 1}) == pytest.approx(
        psi({"a": 3, "b": 1}, {"a": 1, "b": 3})
    )
    with pytest.raises(ValueError):
        psi({}, {"a": 1})


def test_sentiment_counts_the_label_and_the_tenth_its_score_falls_in():
    outcome = Outcome(1, result={"label": "POSITIVE", "score": 0.93, "scores": {}})
    assert features_of(Task.SENTIMENT, outcome) == [
        ("label", "POSITIVE"),
        ("confidence", "0.9-1.0"),
    ]
    assert [confidence_bin(s) for s in (0.0, 0.5, 0.99, 1.0)] == [
        "0.0-0.1",
        "0.5-0.6",
        "0.9-1.0",
        "0.9-1.0",
    ]
    assert features_of(Task.SENTIMENT, Outcome(1, error="boom")) == []


def test_summaries_count_input_tokens_on_a_log_scale_and_compression():
    summary = Outcome(1, result={"summary_text": "x" * 30}, input_tokens=100, input_chars=400)
    assert features_of(Task.SUMMARIZE, summary) == [
        ("input_tokens", "64-128"),
        ("compression", "0.05-0.1"),  # 30 / 400 characters = 0.075
    ]
    split = Outcome(1, chunks=[NewChunk(0, 5, 2, "hello")], input_tokens=5000, input_chars=9)
    assert features_of(Task.SUMMARIZE, split) == [("input_tokens", "4096-8192")]
    cached = Outcome(1, result={"summary_text": "short"}, from_cache=True)
    assert features_of(Task.SUMMARIZE, cached) == []


def test_the_reference_is_the_first_week_unless_pinned_and_the_current_the_last_day():
    first = datetime(2026, 3, 1, 9, tzinfo=UTC)
    assert reference_window(first, None) == Window(first, first + timedelta(days=7))
    pinned = Window(first, first + timedelta(days=2))
    assert reference_window(first, pinned) == pinned
    assert reference_window(None, None) is None
    end = datetime(2026, 3, 10, 15, tzinfo=UTC)
    assert current_window(NOW) == Window(end - timedelta(hours=24), end)


def test_compare_says_why_there_is_no_psi():
    current = current_window(NOW)
    old = Window(NOW - timedelta(days=9), NOW - timedelta(days=2))
    enough = {"a": MIN_WINDOW_ITEMS}
    assert "no traffic" in (compare("label", {}, {}, reference=None, current=current).reason or "")
    recent = Window(NOW - timedelta(days=2), NOW + timedelta(days=5))
    assert "reference window ends" in (
        compare("label", enough, enough, reference=recent, current=current).reason or ""
    )
    few = compare("label", {"a": 3}, enough, reference=old, current=current)
    assert few.psi is None and "3 items in the reference window" in (few.reason or "")
    measured = compare("confidence", enough, {"0.9-1.0": 200}, reference=old, current=current)
    assert measured.reason is None and measured.psi is not None and measured.psi > 0.2
    assert measured.reference == {"0.9-1.0": 0.0, "a": 1.0}
    assert measured.current == {"0.9-1.0": 1.0, "a": 0.0}


def test_token_and_compression_bins_include_their_lower_edge():
    assert [token_bin(n) for n in (1, 15, 16, 31, 32, 8191, 8192, 10**6)] == [
        "<16",
        "<16",
        "16-32",
        "16-32",
        "32-64",
        "4096-8192",
        ">=8192",
        ">=8192",
    ]
    assert [compression_bin(r) for r in (0.0, 0.05, 0.99, 1.0, 3.0)] == [
        "<0.05",
        "0.05-0.1",
        "0.75-1",
        ">=1",
        ">=1",
    ]
