"""Drift counts grow as a batch's outcomes are recorded: one row per model, tenant, hour,
feature and bin, on both backends."""

from collections import Counter
from datetime import timedelta

from sqlalchemy import select, update

from shared.drift import hour_of
from shared.jobs.drift_counts import count_drift
from shared.jobs.outcomes import record_outcomes
from shared.jobs.work import NewChunk, Outcome
from shared.models import DriftCount, Job, utcnow
from shared.states import Task
from tests.factories import claim, make_job


def stored(db):
    with db.read() as session:
        return {
            (row.model, row.tenant_id, row.feature, row.bin): row.item_count
            for row in session.scalars(select(DriftCount))
        }


def sentiment(item_id, label, score):
    return Outcome(item_id, result={"label": label, "score": score, "scores": {label: score}})


def test_recording_a_sentiment_batch_counts_labels_and_confidence(db):
    make_job(db, texts=["a", "b", "c", "d"], model="sst2")
    held = claim(db, model="sst2")
    ids = [item.id for item in held.items]
    outcomes = [
        sentiment(ids[0], "POSITIVE", 0.97),
        sentiment(ids[1], "POSITIVE", 0.91),
        sentiment(ids[2], "NEGATIVE", 0.55),
        Outcome(ids[3], error="boom"),
    ]
    with db.write() as session:
        assert record_outcomes(session, claim_token=held.token, outcomes=outcomes) == 4

    assert stored(db) == {
        ("sst2", "default", "label", "POSITIVE"): 2,
        ("sst2", "default", "label", "NEGATIVE"): 1,
        ("sst2", "default", "confidence", "0.9-1.0"): 2,
        ("sst2", "default", "confidence", "0.5-0.6"): 1,
    }


def test_a_second_batch_in_the_same_hour_adds_to_the_same_rows(db):
    make_job(db, texts=["a", "b"], model="sst2")
    make_job(db, texts=["c"], model="sst2")
    first, second = claim(db, model="sst2", max_items=2), claim(db, model="sst2")
    for held in (first, second):
        outcomes = [sentiment(item.id, "POSITIVE", 0.95) for item in held.items]
        with db.write() as session:
            record_outcomes(session, claim_token=held.token, outcomes=outcomes)

    assert stored(db) == {
        ("sst2", "default", "label", "POSITIVE"): 3,
        ("sst2", "default", "confidence", "0.9-1.0"): 3,
    }
    with db.read() as session:
        hours = set(session.scalars(select(DriftCount.hour)))
    assert hours <= {hour_of(utcnow()), hour_of(utcnow() - timedelta(hours=1))}


def test_summaries_count_input_tokens_when_run_or_split_and_compression_when_done(db):
    make_job(db, texts=["x" * 400, "y" * 100, "z" * 9000], task=Task.SUMMARIZE, model="bart")
    held = claim(db, task=Task.SUMMARIZE, model="bart")
    one, two, long = held.items
    outcomes = [
        Outcome(one.id, result={"summary_text": "s" * 30}, input_tokens=100, input_chars=400),
        Outcome(two.id, result={"summary_text": "s" * 60}, input_tokens=20, input_chars=100),
        Outcome(
            long.id,
            chunks=[NewChunk(0, 4500, 1000, "z" * 4500), NewChunk(4500, 9000, 1000, "z" * 4500)],
            input_tokens=2000,
            input_chars=9000,
        ),
    ]
    with db.write() as session:
        record_outcomes(session, claim_token=held.token, outcomes=outcomes)

    assert stored(db) == {
        ("bart", "default", "input_tokens", "64-128"): 1,
        ("bart", "default", "input_tokens", "16-32"): 1,
        ("bart", "default", "input_tokens", "1024-2048"): 1,
        ("bart", "default", "compression", "0.05-0.1"): 1,  # 30 / 400
        ("bart", "default", "compression", "0.5-0.75"): 1,  # 60 / 100
    }


def test_counts_are_kept_per_model_and_tenant(db):
    from shared import api_keys

    with db.write() as session:
        api_keys.create_key(session, tenant_id="acme")
    a = make_job(db, texts=["a"], model="sst2")
    b = make_job(db, texts=["b"], model="sst2", tenant_id="acme")
    c = make_job(db, texts=["c"], model="twitter", tenant_id="acme")
    with db.write() as session:
        count_drift(
            session,
            [(job.id, sentiment(0, "POSITIVE", 0.95)) for job in (a, b, c)],
            now=utcnow(),
        )
    counted = Counter({(m, t): n for (m, t, f, _), n in stored(db).items() if f == "label"})
    assert counted == {("sst2", "default"): 1, ("sst2", "acme"): 1, ("twitter", "acme"): 1}


def test_a_shadow_jobs_texts_are_not_counted_as_the_candidates_traffic(db):
    ours = make_job(db, texts=["a"], model="sst2", model_name="sst2")
    shadow = make_job(db, texts=["a"], model="twitter", model_name="twitter")
    with db.write() as session:
        session.execute(update(Job).where(Job.id == shadow.id).values(shadow=True))
    measured = [(job.id, sentiment(0, "POSITIVE", 0.97)) for job in (ours, shadow)]
    with db.write() as session:
        count_drift(session, measured, now=utcnow())
    assert stored(db) == {
        ("sst2", "default", "label", "POSITIVE"): 1,
        ("sst2", "default", "confidence", "0.9-1.0"): 1,
    }
