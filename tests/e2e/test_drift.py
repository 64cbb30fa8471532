"""A real worker counts what it finishes for drift: the hourly counts match the results."""

import uuid
from collections import Counter

import pytest
from sqlalchemy import func, select
from transformers import AutoTokenizer

from shared.db import Database
from shared.drift import compression_bin, confidence_bin, token_bin
from shared.models import DriftCount
from tests.e2e.conftest import E2E_TENANT
from tests.e2e.polling import wait_for_job

pytestmark = pytest.mark.e2e


def counts(service) -> Counter[tuple[str, str, str]]:
    env = service.env
    url = env.get("TEXTQ_DATABASE_URL") or f"sqlite:///{env['TEXTQ_DATA_DIR']}/textq.db"
    db = Database(url, application_name="textq-tests")
    try:
        with db.read() as session:
            rows = session.execute(
                select(DriftCount.model, DriftCount.feature, DriftCount.bin)
                .add_columns(func.sum(DriftCount.item_count))
                .where(DriftCount.tenant_id == E2E_TENANT)
                .group_by(DriftCount.model, DriftCount.feature, DriftCount.bin)
            )
            return Counter({(m, f, b): int(n) for m, f, b, n in rows})
    finally:
        db.dispose()


def results(http, job_id):
    return http.get(f"/v1/jobs/{job_id}/results", params={"limit": 100}).json()["items"]


def test_the_hourly_counts_match_what_the_worker_finished(service, http, model_dirs):
    before = counts(service)
    run = uuid.uuid4().hex  # texts no earlier test sent: none comes from the result cache
    feedback = [f"great value {run}", f"broke on day two {run}", f"fine {run}", f"meh {run}"]
    articles = [
        f"The council met on Tuesday {run}. " * 3,
        f"Rain is expected all week across the north {run}. " * 8,
    ]
    sentiment = http.post("/v1/jobs", json={"task": "sentiment", "input": {"texts": feedback}})
    summaries = http.post("/v1/jobs", json={"task": "summarize", "input": {"texts": articles}})
    assert wait_for_job(http, sentiment.json()["id"])["status"] == "succeeded"
    assert wait_for_job(http, summaries.json()["id"])["status"] == "succeeded"

    # Counted under each model's catalogue name, which each job records.
    sentiment_model = sentiment.json()["model_name"]
    summary_model = summaries.json()["model_name"]
    tokenizer = AutoTokenizer.from_pretrained(str(model_dirs.summarization))
    expected: Counter[tuple[str, str, str]] = Counter()
    for item in results(http, sentiment.json()["id"]):
        expected[(sentiment_model, "label", item["label"])] += 1
        expected[(sentiment_model, "confidence", confidence_bin(item["score"]))] += 1
    for text, item in zip(articles, results(http, summaries.json()["id"]), strict=True):
        tokens = len(tokenizer(text)["input_ids"])
        ratio = len(item["summary_text"]) / len(text)
        expected[(summary_model, "input_tokens", token_bin(tokens))] += 1
        expected[(summary_model, "compression", compression_bin(ratio))] += 1

    assert counts(service) - before == expected

    drift = http.get(f"/v1/models/{sentiment_model}/drift").json()
    label = next(f for f in drift["features"] if f["feature"] == "label")
    assert label["psi"] is None and "reference window ends" in label["reason"]
    assert label["current_items"] == sum(
        n for (m, f, _), n in counts(service).items() if (m, f) == (sentiment_model, "label")
    )
