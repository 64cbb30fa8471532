"""`GET /v1/jobs/{id}/highlights`: the histogram and extremes, computed in the database."""

from shared.jobs.outcomes import record_outcomes
from shared.jobs.work import Outcome
from tests.factories import claim

# (text, probability of POSITIVE) for each finished row; one more row stays unfinished.
SCORED = [("awful", 0.02), ("bad", 0.28), ("good", 0.91), ("great", 0.91)]


def sentiment(positive: float) -> dict:
    label = "POSITIVE" if positive >= 0.5 else "NEGATIVE"
    scores = {"NEGATIVE": 1 - positive, "POSITIVE": positive}
    return {"label": label, "score": scores[label], "scores": scores}


def test_highlights_bin_the_positive_score_and_name_the_extremes(client, db):
    texts = [text for text, _ in SCORED] + ["not yet"]
    job = client.post("/v1/jobs", json={"task": "sentiment", "input": {"texts": texts}}).json()
    held = claim(db, model=client.app.state.settings.sentiment_model, max_items=len(SCORED))
    positive_of = dict(SCORED)
    with db.write() as session:
        record_outcomes(
            session,
            claim_token=held.token,
            outcomes=[
                Outcome(item.id, result=sentiment(positive_of[item.text])) for item in held.items
            ],
        )

    answer = client.get(f"/v1/jobs/{job['id']}/highlights", params={"bins": 5, "top": 2})

    assert answer.status_code == 200
    highlights = answer.json()
    assert highlights["measure"] == "POSITIVE"
    assert highlights["scored"] == len(SCORED), "the unfinished row is not counted"
    assert [b["count"] for b in highlights["histogram"]] == [1, 1, 0, 0, 2]
    assert highlights["histogram"][0] == {"start": 0.0, "end": 0.2, "count": 1}
    assert [i["text"] for i in highlights["most_negative"]] == ["awful", "bad"]
    assert [i["label"] for i in highlights["most_negative"]] == ["NEGATIVE", "NEGATIVE"]
    # A tie goes to the earlier row.
    assert [(i["index"], i["score"]) for i in highlights["most_positive"]] == [(2, 0.91), (3, 0.91)]


def test_highlights_of_a_job_with_nothing_finished_are_empty(client):
    job = client.post("/v1/jobs", json={"task": "sentiment", "input": {"text": "a"}}).json()
    highlights = client.get(f"/v1/jobs/{job['id']}/highlights").json()
    assert highlights["scored"] == 0
    assert sum(b["count"] for b in highlights["histogram"]) == 0
    assert highlights["most_negative"] == highlights["most_positive"] == []


def test_highlights_are_for_sentiment_jobs_and_the_callers_jobs(client):
    summary = client.post("/v1/jobs", json={"task": "summarize", "input": {"text": "a"}}).json()
    refused = client.get(f"/v1/jobs/{summary['id']}/highlights")
    assert refused.status_code == 422
    assert "highlights are for sentiment jobs" in refused.json()["detail"]
    missing = client.get("/v1/jobs/00000000-0000-0000-0000-000000000000/highlights")
    assert missing.status_code == 404
    assert client.get(f"/v1/jobs/{summary['id']}/highlights?bins=1").status_code == 422
