"""The bookkeeping of a job's insights: counts, negative feedback, summaries."""

import uuid

from shared.jobs import insights
from shared.jobs.documents import FinishedChunk, document_sentiment
from shared.jobs.insights import SummaryOutcome

SUMMARIZER = insights.Summarizer(model="bart", max_chars=100)


def result(label, category=None):
    found = {"label": label, "score": 0.9, "scores": {label: 0.9}}
    return found | ({"category": category} if category else {})


def test_no_insights_unless_asked():
    assert insights.initial_state({"categories": ["billing"]}, SUMMARIZER) is None


def test_counts_grow_per_category_and_label():
    state = insights.initial_state(
        {"categories": ["billing", "quality"], "insights": True}, SUMMARIZER
    )
    assert state["status"] == "counting" and state["counts"] == {"billing": {}, "quality": {}}
    state = insights.with_counts(
        state, [result("NEGATIVE", "billing"), result("POSITIVE", "billing")]
    )
    state = insights.with_counts(state, [result("NEGATIVE", "billing")])
    assert state["counts"] == {"billing": {"NEGATIVE": 2, "POSITIVE": 1}, "quality": {}}
    assert insights.negative_counts(state) == {"billing": 2, "quality": 0}


def test_without_categories_everything_is_in_all():
    state = insights.initial_state({"insights": True}, SUMMARIZER)
    state = insights.with_counts(state, [result("LABEL_neg"), result("positive")])
    assert state["categories"] == ["all"]
    assert state["counts"] == {"all": {"LABEL_neg": 1, "positive": 1}}
    assert insights.negative_counts(state) == {"all": 1}


def test_summaries_are_settled_per_category_and_shown_without_the_summarizer():
    state = insights.initial_state(
        {"categories": ["billing", "quality", "shipping"], "insights": True}, SUMMARIZER
    )
    state = insights.with_counts(
        state,
        [
            result("NEGATIVE", "billing"),
            result("NEGATIVE", "quality"),
            result("POSITIVE", "shipping"),
        ],
    )
    child = str(uuid.uuid4())
    waiting = insights.summarizing(state, summary_job_id=child)
    assert waiting["status"] == "summarizing"
    assert waiting["negative"]["billing"] == {"count": 1, "summary": None, "error": None}
    done = insights.settled(
        waiting,
        {"billing": SummaryOutcome("overcharged", None)},
        missing="cancelled before it was summarized",
    )
    shown = insights.present(done).model_dump(mode="json")
    assert shown == {
        "status": "done",
        "categories": ["billing", "quality", "shipping"],
        "counts": {
            "billing": {"NEGATIVE": 1},
            "quality": {"NEGATIVE": 1},
            "shipping": {"POSITIVE": 1},
        },
        "negative": {
            "billing": {"count": 1, "summary": "overcharged", "error": None},
            "quality": {"count": 1, "summary": None, "error": "cancelled before it was summarized"},
            "shipping": {"count": 0, "summary": None, "error": None},
        },
        "summary_job_id": child,
    }
    assert insights.without_summaries(done)["negative"]["billing"]["summary"] is None


def test_feedback_is_one_text_a_line_cut_at_the_limit():
    joined = insights.joined_feedback(["charged  twice\non my card", "", "no refund"], 100)
    assert joined == "charged twice on my card\nno refund"
    assert insights.joined_feedback(["x" * 80, "y" * 80], 100) == "x" * 80 + "\n" + "y" * 19


def part(index, tokens, positive, cosines=None):
    scores = {"POSITIVE": positive, "NEGATIVE": 1 - positive}
    found = {"label": max(scores, key=scores.get), "score": max(scores.values()), "scores": scores}
    if cosines is not None:
        found["category_scores"] = cosines
    return FinishedChunk(index, index * 10, index * 10 + 10, tokens, found, None)


def test_a_long_texts_category_is_its_chunks_similarities_weighted_by_tokens():
    parts = [
        part(0, 300, 0.2, {"billing": 0.5, "shipping": 0.1}),
        part(1, 100, 0.8, {"billing": 0.1, "shipping": 0.9}),
    ]
    document = document_sentiment(parts)
    assert document["category"] == "billing"
    assert abs(document["category_score"] - (0.5 * 300 + 0.1 * 100) / 400) < 1e-9
    assert "category_scores" not in document
    # Fewer tokens of billing: shipping wins.
    parts[0] = part(0, 50, 0.2, {"billing": 0.5, "shipping": 0.1})
    assert document_sentiment(parts)["category"] == "shipping"


def test_a_long_text_without_categories_has_none():
    assert "category" not in document_sentiment([part(0, 10, 0.9), part(1, 10, 0.8)])
