"""The comparison of a default's results with its shadow candidate's, as pure functions."""

import pytest

from shared.shadow.compare import compare, compare_sentiment, compare_summaries
from shared.shadow.sampling import is_shadowed
from shared.states import Task


def sentiment(label: str, positive: float) -> dict:
    scores = {"NEGATIVE": 1 - positive, "POSITIVE": positive}
    return {"label": label, "score": scores[label], "scores": scores}


def test_sentiment_agreement_confusion_and_score_differences():
    pairs = [
        (sentiment("POSITIVE", 0.9), sentiment("POSITIVE", 0.8)),  # agree, |Δ| 0.1
        (sentiment("POSITIVE", 0.6), sentiment("NEGATIVE", 0.3)),  # differ, |Δ| 0.3
        (sentiment("NEGATIVE", 0.2), sentiment("NEGATIVE", 0.2)),  # agree, |Δ| 0
        (sentiment("NEGATIVE", 0.4), sentiment("NEGATIVE", 0.1)),  # agree, |Δ| 0.3
    ]
    found = compare(Task.SENTIMENT, pairs)
    assert found.items == 4
    assert found.label_agreement == 0.75
    assert found.labels == ["NEGATIVE", "POSITIVE"]
    # rows: the default's label; columns: the candidate's
    assert found.confusion == [[2, 0], [1, 1]]
    assert found.mean_abs_delta_score == pytest.approx((0.1 + 0.3 + 0 + 0.3) / 4)
    assert found.max_abs_delta_score == pytest.approx(0.3)
    assert found.mean_rouge_l_f is None and found.mean_length_ratio is None


def test_a_label_the_candidate_lacks_scores_zero_and_joins_the_matrix():
    default = sentiment("POSITIVE", 0.7)
    candidate = {"label": "neutral", "score": 0.5, "scores": {"neutral": 0.5, "positive": 0.5}}
    found = compare_sentiment([(default, candidate)])
    assert found.label_agreement == 0
    assert found.labels == ["POSITIVE", "neutral"]
    assert found.confusion == [[0, 1], [0, 0]]
    assert found.max_abs_delta_score == pytest.approx(0.7)


def test_summaries_rouge_l_and_length_ratio_on_known_strings():
    pairs = [
        # LCS "the cat on the mat": 5 of 6 words each way, F = 5/6; ratio 6/6
        ({"summary": "The cat sat on the mat."}, {"summary": "the cat lay on the mat"}),
        # LCS "a c": precision 2/2, recall 2/4, F = 2/3; ratio 2/4
        ({"summary": "a b c d"}, {"summary": "a c"}),
        # nothing in common: F = 0; ratio 1/1
        ({"summary": "alpha"}, {"summary": "omega"}),
    ]
    found = compare(Task.SUMMARIZE, pairs)
    assert found.items == 3
    assert found.mean_rouge_l_f == pytest.approx((5 / 6 + 2 / 3 + 0) / 3)
    assert found.mean_length_ratio == pytest.approx((1 + 0.5 + 1) / 3)
    assert found.label_agreement is None and found.confusion is None


def test_identical_summaries_score_one_and_an_empty_default_has_no_ratio():
    same = compare_summaries([({"summary": "x y z"}, {"summary": "x y z"})])
    assert (same.mean_rouge_l_f, same.mean_length_ratio) == (pytest.approx(1.0), 1.0)
    empty = compare_summaries([({"summary": ""}, {"summary": "words"})])
    assert empty.mean_length_ratio is None


def test_no_pairs_compare_to_nothing():
    for task in Task:
        assert compare(task, []).items == 0


def test_the_shadowed_share_is_fixed_by_the_item_id_and_close_to_the_fraction():
    ids = range(1, 20001)
    picked = [i for i in ids if is_shadowed(i, 0.1)]
    assert picked == [i for i in ids if is_shadowed(i, 0.1)]
    assert 0.09 < len(picked) / len(ids) < 0.11
    assert set(picked) <= {i for i in ids if is_shadowed(i, 0.5)}
    assert all(is_shadowed(i, 1.0) for i in ids)
