"""Categories and insights over HTTP: validated options, the job's insights, category columns."""

import csv
import io
import json
import uuid

import pytest

from shared.jobs.outcomes import record_outcomes
from shared.jobs.reads import get_job
from shared.jobs.work import Outcome
from shared.states import Task
from tests.factories import claim

CATEGORIES = ["billing", "shipping"]


def submit(client, options, texts=("charged twice", "late parcel")):
    return client.post(
        "/v1/jobs",
        json={"task": "sentiment", "input": {"texts": list(texts)}, "options": options},
    )


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"categories": ["billing", "Billing"]}, "repeats categories[0]"),
        ({"categories": []}, "1 to 50 names"),
        ({"categories": [" "]}, "must not be empty"),
    ],
)
def test_bad_categories_are_a_422_that_says_why_in_json_and_in_a_file(
    client, stored_rows, options, fragment
):
    before = stored_rows()
    answer = submit(client, options)
    assert answer.status_code == 422 and fragment in answer.text
    uploaded = client.post(
        "/v1/batches",
        files={"file": ("feedback.csv", b"text\ncharged twice\n")},
        data={"task": "sentiment", "options": json.dumps(options)},
    )
    assert uploaded.status_code == 422 and fragment in uploaded.text
    assert stored_rows() == before


def test_a_job_with_insights_shows_them_from_the_start(client, api_settings):
    answer = submit(client, {"categories": CATEGORIES, "insights": True})
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert job["options"] == {"categories": CATEGORIES, "insights": True}
    assert job["insights"] == {
        "status": "counting",
        "categories": CATEGORIES,
        "counts": {"billing": {}, "shipping": {}},
        "negative": {},
        "summary_job_id": None,
    }
    assert submit(client, {"categories": CATEGORIES}).json()["insights"] is None
    with_file = client.post(
        "/v1/batches",
        files={"file": ("feedback.csv", b"text\ncharged twice\n")},
        data={"task": "sentiment", "options": json.dumps({"insights": True})},
    ).json()
    assert with_file["insights"]["categories"] == ["all"]
    db = client.app.state.db
    with db.read() as session:
        stored = get_job(session, tenant_id="default", job_id=uuid.UUID(job["id"])).insights
    assert stored["summarizer"] == {
        "model": api_settings.summarization_model,
        "max_chars": api_settings.insight_max_chars,
        "name": api_settings.catalogue.default(Task.SUMMARIZE).name,
    }


def test_results_and_exports_carry_each_rows_category(client, db, api_settings):
    job = submit(client, {"categories": CATEGORIES}).json()
    held = claim(db, model=api_settings.sentiment_model)
    first, second = held.items
    scored = {"label": "NEGATIVE", "score": 0.9, "scores": {"NEGATIVE": 0.9, "POSITIVE": 0.1}}
    with db.write() as session:
        record_outcomes(
            session,
            claim_token=held.token,
            outcomes=[
                Outcome(first.id, result=scored | {"category": "billing", "category_score": 0.4}),
                Outcome(second.id, error="the model failed"),
            ],
        )
    page = client.get(f"/v1/jobs/{job['id']}/results").json()
    assert page["items"][0]["category"] == "billing"
    assert page["items"][0]["category_score"] == 0.4
    assert "category" not in page["items"][1]
    lines = client.get(f"/v1/jobs/{job['id']}/results", params={"format": "jsonl"}).text
    records = [json.loads(line) for line in lines.splitlines()]
    assert [(r["category"], r["category_score"]) for r in records] == [
        ("billing", 0.4),
        (None, None),
    ]
    table = client.get(f"/v1/jobs/{job['id']}/results", params={"format": "csv"}).text
    rows = list(csv.DictReader(io.StringIO(table)))
    assert list(rows[0]) == [
        "index",
        "custom_id",
        "label",
        "score",
        "category",
        "category_score",
        "error",
    ]
    assert (rows[0]["category"], rows[1]["category"]) == ("billing", "")


def test_exports_of_jobs_without_categories_keep_their_columns(client, db, api_settings):
    job = submit(client, {}).json()
    held = claim(db, model=api_settings.sentiment_model)
    with db.write() as session:
        record_outcomes(
            session,
            claim_token=held.token,
            outcomes=[
                Outcome(i.id, result={"label": "POSITIVE", "score": 1.0}) for i in held.items
            ],
        )
    table = client.get(f"/v1/jobs/{job['id']}/results", params={"format": "csv"}).text
    assert table.splitlines()[0] == "index,custom_id,label,score,error"
    line = client.get(f"/v1/jobs/{job['id']}/results", params={"format": "jsonl"}).text
    assert "category" not in json.loads(line.splitlines()[0])


def test_a_job_waiting_for_its_summaries_shows_their_queue(client, db, api_settings):
    job = submit(client, {"categories": CATEGORIES, "insights": True}).json()
    assert client.get(f"/v1/jobs/{job['id']}").json()["queue"]["task"] == "sentiment"
    held = claim(db, model=api_settings.sentiment_model)
    negative = {"label": "NEGATIVE", "score": 0.9, "scores": {"NEGATIVE": 0.9, "POSITIVE": 0.1}}
    with db.write() as session:
        record_outcomes(
            session,
            claim_token=held.token,
            outcomes=[Outcome(i.id, result=negative | {"category": "billing"}) for i in held.items],
        )
    waiting = client.get(f"/v1/jobs/{job['id']}").json()
    assert waiting["insights"]["status"] == "summarizing"
    assert {key: waiting["queue"][key] for key in ("task", "model", "workers", "items_left")} == {
        "task": "summarize",
        "model": api_settings.summarization_model,
        "workers": 0,
        "items_left": 1,
    }
