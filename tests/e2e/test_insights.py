"""Feedback insights through real processes: categories, counts, summaries of the complaints.

The worker here serves a classifier that tells complaints from praise (the tiny random one
calls every text POSITIVE), the real all-MiniLM-L6-v2 encoder for categories, and the tiny
random summarizer: its summaries are gibberish, so only their presence is checked.
"""

import csv
import dataclasses
import io
import json
import os
import subprocess
import sys
import time
from collections import Counter

import pytest

from tests import reference
from tests.e2e.polling import all_results, wait_for_job
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.e2e

CATEGORIES = ["billing", "shipping", "quality"]
FEEDBACK = [
    "I was charged twice on my invoice",
    "The price on my bill was wrong",
    "My refund never showed up on my credit card",
    "They billed me for a subscription I cancelled",
    "The invoice had hidden fees I never agreed to",
    "Billing was easy and the price was fair",
    "I got a refund within a day, great service",
    "The payment went through without any trouble",
    "Overcharged again, this is the third month",
    "Clear invoice, fair price",
    "The parcel arrived two weeks late",
    "The courier lost my package",
    "Shipping took forever",
    "The box was crushed when it arrived",
    "Delivery was fast, it arrived a day early",
    "Tracking never updated and the parcel never came",
    "Free shipping and quick delivery, thank you",
    "The delivery driver left the box in the rain",
    "Arrived on time and well packed",
    "Shipped to the wrong address",
    "The product quality is terrible",
    "Poor build quality, it broke after a week",
    "The material feels cheap and flimsy",
    "Excellent build quality, feels solid",
    "The stitching came apart after one wash",
    "Great quality for the price",
    "The screen cracked on the first day",
    "Sturdy and well made",
    "It stopped working after two days",
    "Beautiful finish and very durable",
]


@pytest.fixture(scope="module")
def model_dirs(model_dirs, feedback_model_dir):
    """This module's service classifies with the fitted model."""
    return dataclasses.replace(model_dirs, sentiment=feedback_model_dir)


def feedback_csv():
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["ticket", "comment"])
    writer.writerows((f"T-{n:02d}", text) for n, text in enumerate(FEEDBACK))
    return buffer.getvalue().encode()


def wait_for_delivered(http, job_id, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events = http.get(f"/v1/jobs/{job_id}/webhooks").json()
        if events and all(e["status"] == "delivered" for e in events):
            return events
        time.sleep(0.2)
    raise AssertionError(f"webhook events of {job_id} not delivered: {events}")


def test_a_feedback_file_gets_categories_counts_and_summaries_of_its_complaints(http):
    receiver = Receiver().start()
    try:
        response = http.post(
            "/v1/batches",
            files={"file": ("feedback.csv", feedback_csv())},
            data={
                "task": "sentiment",
                "text_column": "comment",
                "id_column": "ticket",
                "options": json.dumps({"categories": CATEGORIES, "insights": True}),
                "webhook_url": receiver.url,
            },
        )
        assert response.status_code == 202, response.text
        assert response.json()["insights"]["status"] == "counting"
        job = wait_for_job(http, response.json()["id"], timeout_s=300)
        events = wait_for_delivered(http, job["id"])
    finally:
        receiver.stop()

    assert job["status"] == "succeeded", job
    insights = job["insights"]
    assert insights["status"] == "done" and insights["categories"] == CATEGORIES
    results = all_results(http, job["id"])
    assert len(results) == len(FEEDBACK) == job["progress"]["done"]
    assert all(r["category"] in CATEGORIES and -1 <= r["category_score"] <= 1 for r in results)
    assert Counter(r["category"] for r in results[:10])["billing"] >= 7
    assert Counter(r["category"] for r in results[10:20])["shipping"] >= 7
    assert Counter(r["category"] for r in results[20:])["quality"] >= 7
    from_results = Counter((r["category"], r["label"]) for r in results)
    from_counts = Counter(
        {(c, label): n for c, labels in insights["counts"].items() for label, n in labels.items()}
    )
    assert from_counts == from_results
    assert sum(from_counts.values()) == job["progress"]["done"]
    assert sum(job["labels"].values()) == job["progress"]["done"]

    negative = insights["negative"]
    assert set(negative) == set(CATEGORIES)
    assert sum(e["count"] for e in negative.values()) == job["labels"].get("NEGATIVE", 0) > 0
    for category, entry in negative.items():
        assert entry["count"] == insights["counts"][category].get("NEGATIVE", 0)
        assert entry["error"] is None
        if entry["count"]:
            assert isinstance(entry["summary"], str) and entry["summary"].strip(), category
        else:
            assert entry["summary"] is None

    child_id = insights["summary_job_id"]
    child = http.get(f"/v1/jobs/{child_id}").json()
    assert child["task"] == "summarize" and child["status"] == "succeeded"
    assert child["progress"]["total"] == sum(1 for e in negative.values() if e["count"])
    listed = http.get("/v1/jobs", params={"limit": 1000}).json()["items"]
    assert job["id"] in {j["id"] for j in listed} and child_id not in {j["id"] for j in listed}

    # One event for the job, once everything, summaries included, was done.
    assert [e["type"] for e in events] == ["job.completed"]
    [delivered] = receiver.received
    sent = json.loads(delivered.body)["data"]
    assert sent["status"] == "succeeded" and sent["insights"] == insights
    assert http.get(f"/v1/jobs/{child_id}/webhooks").json() == []

    table = http.get(f"/v1/jobs/{job['id']}/results", params={"format": "csv"}).text
    rows = list(csv.DictReader(io.StringIO(table)))
    assert [row["category"] for row in rows] == [r["category"] for r in results]


PRAISE = ["I love it", "Excellent build quality, feels solid", "Arrived on time and well packed"]


def test_insights_with_nothing_negative_finish_without_summaries(http, model_dirs):
    labels = [max(s, key=s.get) for s in reference.sentiment(model_dirs.sentiment, PRAISE)]
    assert labels == ["POSITIVE"] * len(PRAISE)
    response = http.post(
        "/v1/jobs",
        json={"task": "sentiment", "input": {"texts": PRAISE}, "options": {"insights": True}},
    )
    job = wait_for_job(http, response.json()["id"])
    assert job["status"] == "succeeded"
    assert job["insights"] == {
        "status": "done",
        "categories": ["all"],
        "counts": {"all": {"POSITIVE": len(PRAISE)}},
        "negative": {"all": {"count": 0, "summary": None, "error": None}},
        "summary_job_id": None,
    }


def test_textq_bulk_shows_the_counts_and_the_complaints_at_the_end(http, service, tmp_path):
    feedback = tmp_path / "feedback.csv"
    feedback.write_bytes(feedback_csv())
    key = service.headers["Authorization"].removeprefix("Bearer ")
    done = subprocess.run(
        [sys.executable, "-m", "textq", "bulk", str(feedback), "--column", "comment"]
        + [arg for category in CATEGORIES for arg in ("--category", category)]
        + ["--insights", "--wait"],
        env={**os.environ, "TEXTQ_URL": service.base_url, "TEXTQ_API_KEY": key},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    job = http.get(f"/v1/jobs/{done.stdout.split()[0]}").json()
    assert job["options"] == {"categories": CATEGORIES, "insights": True}
    assert job["insights"]["status"] == "done"
    assert "labels per category" in done.stderr and "negative feedback" in done.stderr
    assert all(category in done.stderr for category in CATEGORIES)
