"""`GET /v1/models/{name}/drift` and the `textq_drift_psi` gauge, over counts the recorder made."""

import math
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from shared import api_keys
from shared.jobs.drift_counts import count_drift
from shared.jobs.work import Outcome
from shared.models import utcnow
from shared.states import Task
from tests.factories import make_job


def count(db, job, labels, *, days_ago=0.0):
    """Record one sentiment outcome per label for `job`, as the worker's recorder counts them."""
    outcomes = [
        (job.id, Outcome(0, result={"label": label, "score": 0.95, "scores": {}}))
        for label in labels
    ]
    with db.write() as session:
        count_drift(session, outcomes, now=utcnow() - timedelta(days=days_ago))


def default_of(settings, task=Task.SENTIMENT):
    return settings.catalogue.default(task)


@pytest.fixture
def sentiment_job(db, settings):
    model = default_of(settings)
    return make_job(db, texts=["a"], model=model.source, model_name=model.name)


def feature(body, name):
    return next(f for f in body["features"] if f["feature"] == name)


def test_an_unknown_model_is_a_404_naming_the_models_there_are(client):
    response = client.get("/v1/models/nope/drift")
    assert response.status_code == 404
    problem = response.json()
    assert problem["type"] == "/problems/model-not-found"
    assert "'nope'" in problem["detail"]
    default = client.app.state.settings.catalogue.default(Task.SENTIMENT)
    assert repr(default.name) in problem["detail"]


def test_without_traffic_there_is_no_psi_and_the_answer_says_why(client):
    body = client.get("/v1/models/summarize/drift").json()
    assert body["task"] == "summarize" and body["reference"] is None
    assert [f["feature"] for f in body["features"]] == ["input_tokens", "compression"]
    assert all(f["psi"] is None and "no traffic" in f["reason"] for f in body["features"])


def test_a_young_model_has_no_psi_until_its_first_week_is_over(client, db, sentiment_job):
    count(db, sentiment_job, ["POSITIVE"] * 150, days_ago=1)
    count(db, sentiment_job, ["POSITIVE"] * 150)
    label = feature(client.get("/v1/models/sentiment/drift").json(), "label")
    assert label["psi"] is None and "reference window ends" in label["reason"]
    assert label["current"] == {"POSITIVE": 1.0}


def test_psi_compares_the_last_day_with_the_first_week(client, db, settings, sentiment_job):
    count(db, sentiment_job, ["POSITIVE"] * 80 + ["NEGATIVE"] * 20, days_ago=9)
    count(db, sentiment_job, ["POSITIVE"] * 50 + ["NEGATIVE"] * 50)
    count(db, sentiment_job, ["POSITIVE"] * 1000, days_ago=1.5)  # in neither window

    name = default_of(settings).name
    response = client.get(f"/v1/models/{name}/drift")
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == name and body["tenant"] == "default"
    assert body["source"] == settings.sentiment_model
    assert body["reference_pinned"] is False
    label = feature(body, "label")
    by_hand = (0.5 - 0.8) * math.log(0.5 / 0.8) + (0.5 - 0.2) * math.log(0.5 / 0.2)
    assert label["psi"] == pytest.approx(by_hand, abs=1e-6)
    assert (label["reference_items"], label["current_items"]) == (100, 100)
    assert label["reference"] == {"NEGATIVE": 0.2, "POSITIVE": 0.8}
    assert label["current"] == {"NEGATIVE": 0.5, "POSITIVE": 0.5}
    assert feature(body, "confidence")["psi"] == 0  # every score in 0.9-1.0 both times

    samples = {
        (s.labels["model"], s.labels["tenant"], s.labels["feature"]): s.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for s in family.samples
        if s.name == "textq_drift_psi"
    }
    assert samples[(name, "default", "label")] == pytest.approx(by_hand)
    assert samples[(name, "default", "confidence")] == 0


def test_a_pinned_reference_window_replaces_the_first_week(db, settings, sentiment_job):
    count(db, sentiment_job, ["NEGATIVE"] * 100, days_ago=20)
    count(db, sentiment_job, ["POSITIVE"] * 100, days_ago=3)
    count(db, sentiment_job, ["POSITIVE"] * 100)
    pinned = settings.model_copy(
        update={
            "drift_reference_start": utcnow() - timedelta(days=4),
            "drift_reference_end": utcnow() - timedelta(days=2),
        }
    )
    with TestClient(create_app(pinned), base_url="http://127.0.0.1") as client:
        body = client.get("/v1/models/sentiment/drift").json()
    assert body["reference_pinned"] is True
    assert feature(body, "label")["psi"] == 0


def test_each_tenant_sees_its_own_traffic_only(api_settings, db, settings):
    with db.write() as session:
        key = api_keys.create_key(session, tenant_id="acme").key
    model = default_of(settings)
    theirs = make_job(db, texts=["a"], model=model.source, model_name=model.name, tenant_id="acme")
    ours = make_job(db, texts=["a"], model=model.source, model_name=model.name)
    count(db, theirs, ["NEGATIVE"] * 7)
    count(db, ours, ["POSITIVE"] * 3)
    secured = api_settings.model_copy(update={"auth": "required"})
    with TestClient(create_app(secured), base_url="http://127.0.0.1") as client:
        assert client.get("/v1/models/sentiment/drift").status_code == 401
        body = client.get(
            "/v1/models/sentiment/drift", headers={"Authorization": f"Bearer {key}"}
        ).json()
    assert body["tenant"] == "acme"
    assert feature(body, "label")["current"] == {"NEGATIVE": 1.0}
    assert feature(body, "label")["current_items"] == 7


def test_summaries_report_their_own_features(client, db, settings):
    model = default_of(settings, Task.SUMMARIZE)
    job = make_job(db, texts=["a"], task=Task.SUMMARIZE, model=model.source, model_name=model.name)
    outcome = Outcome(0, result={"summary_text": "s" * 10}, input_tokens=50, input_chars=100)
    with db.write() as session:
        count_drift(session, [(job.id, outcome)], now=utcnow())
    body = client.get("/v1/models/summarize/drift").json()
    assert feature(body, "input_tokens")["current"] == {"32-64": 1.0}
    assert feature(body, "compression")["current"] == {"0.1-0.15": 1.0}
