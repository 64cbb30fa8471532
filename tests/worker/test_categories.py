"""Categories from the real all-MiniLM-L6-v2 encoder, through the runner and a worker's drain."""

import uuid

import pytest
import torch

from shared.config import Settings
from shared.jobs.insights import Summarizer
from shared.jobs.work import ClaimedItem
from shared.models import Job, JobItem
from shared.states import ItemStatus, JobStatus, Task
from tests.factories import make_job
from worker.categories import CategoryEncoder, best_category
from worker.engine import BatchLimits, SentimentRunner
from worker.runtime import WorkerRuntime
from worker.tasks import drain_queue

CATEGORIES = ["billing", "shipping", "quality"]
UNMISTAKABLE = {
    "I was charged twice on my invoice": "billing",
    "The price on my bill was wrong": "billing",
    "the parcel arrived two weeks late": "shipping",
    "the courier lost my package": "shipping",
    "the product quality is terrible": "quality",
    "poor build quality, it broke": "quality",
}
CPU = torch.device("cpu")


def encoder_for(model_dir, tmp_path):
    settings = Settings(data_dir=tmp_path, embedding_model=str(model_dir))
    return CategoryEncoder(settings, device=CPU, dtype=torch.float32)


def test_each_text_gets_the_category_a_reader_would_pick(model_dirs, tmp_path):
    encoder = encoder_for(model_dirs.embedding, tmp_path)
    texts = list(UNMISTAKABLE)
    similarities = encoder.similarities(texts, CATEGORIES)
    assert [best_category(CATEGORIES, row)[0] for row in similarities] == list(
        UNMISTAKABLE.values()
    )
    assert all(-1 <= value <= 1 for row in similarities for value in row)
    # Alone or in a batch of others (padding), a text is as near to each category.
    alone = encoder.similarities(texts[:1], CATEGORIES)
    assert alone[0] == pytest.approx(similarities[0], abs=1e-5)


def claimed(texts, options, *, chunk=False):
    job = uuid.uuid4()
    return [
        ClaimedItem(
            id=n, job_id=job, index=n, text=t, options=options, parent_id=99 if chunk else None
        )
        for n, t in enumerate(texts)
    ]


def run_all(runner, items):
    return {o.item_id: o for batch in runner.run(items) for o in batch}


def sentiment_runner(model_dirs, encoder):
    from tests.worker.test_engine import load

    loaded = load(model_dirs.sentiment, Task.SENTIMENT)
    return SentimentRunner(loaded, BatchLimits(max_tokens=4096, max_size=4), encoder)


def test_the_runner_adds_a_category_only_to_jobs_that_asked(model_dirs, tmp_path):
    runner = sentiment_runner(model_dirs, encoder_for(model_dirs.embedding, tmp_path))
    texts = list(UNMISTAKABLE)
    with_categories = run_all(runner, claimed(texts, {"categories": CATEGORIES}))
    for n, expected in enumerate(UNMISTAKABLE.values()):
        result = with_categories[n].result
        assert result["category"] == expected
        assert 0 < result["category_score"] <= 1
        assert "category_scores" not in result and result["label"] in ("POSITIVE", "NEGATIVE")
    plain = run_all(runner, claimed(texts[:2], {}))
    assert all(set(o.result) == {"label", "score", "scores"} for o in plain.values())
    chunks = run_all(runner, claimed(texts[:2], {"categories": CATEGORIES}, chunk=True))
    assert set(chunks[0].result["category_scores"]) == set(CATEGORIES)
    assert chunks[0].result["category_scores"]["billing"] == chunks[0].result["category_score"]


def test_without_its_encoder_only_the_texts_with_categories_fail(model_dirs, tmp_path):
    missing = tmp_path / "no-such-encoder"
    runner = sentiment_runner(model_dirs, encoder_for(missing, tmp_path))
    items = [
        *claimed(["charged twice"], {"categories": CATEGORIES}),
        ClaimedItem(id=7, job_id=uuid.uuid4(), index=0, text="love it", options={}),
    ]
    outcomes = run_all(runner, items)
    assert outcomes[0].result is None
    assert outcomes[0].error.startswith("cannot assign categories: embedding model directory")
    assert "TEXTQ_EMBEDDING_MODEL" in outcomes[0].error
    assert outcomes[7].error is None and outcomes[7].result["label"]


@pytest.fixture
def feedback_runtime(settings, feedback_model_dir):
    """A worker serving a classifier that tells complaints from praise."""
    started = WorkerRuntime.start(
        settings.model_copy(update={"sentiment_model": str(feedback_model_dir)})
    )
    yield started
    started.stop()


def test_a_worker_categorizes_rows_counts_them_and_summarizes_the_complaints(
    feedback_runtime, db, settings
):
    texts = [*UNMISTAKABLE, "Excellent build quality, feels solid."]
    job = make_job(
        db,
        texts=texts,
        model=feedback_runtime.settings.sentiment_model,
        options={"categories": CATEGORIES, "insights": True},
        summarizer=Summarizer(model=settings.summarization_model, max_chars=20_000),
    )
    assert drain_queue(feedback_runtime, Task.SENTIMENT) == len(texts)
    with db.read() as session:
        waiting = session.get(Job, job.id)
        results = [
            row.result
            for row in session.query(JobItem).filter_by(job_id=job.id).order_by(JobItem.idx)
        ]
    assert [r["category"] for r in results[:-1]] == list(UNMISTAKABLE.values())
    assert results[-1]["category"] == "quality"
    assert waiting.status == JobStatus.RUNNING
    assert waiting.insights["status"] == "summarizing"
    counted = [
        (c, label, n)
        for c, labels in waiting.insights["counts"].items()
        for label, n in labels.items()
    ]
    assert sum(n for _, _, n in counted) == len(texts)
    for category, label, count in counted:
        assert count == sum(r["category"] == category and r["label"] == label for r in results)

    assert drain_queue(feedback_runtime, Task.SUMMARIZE) >= 1
    with db.read() as session:
        finished = session.get(Job, job.id)
        child = session.get(Job, uuid.UUID(finished.insights["summary_job_id"]))
        child_items = session.query(JobItem).filter_by(job_id=child.id).all()
    assert finished.status == JobStatus.SUCCEEDED and child.status == JobStatus.SUCCEEDED
    assert {i.status for i in child_items} == {ItemStatus.DONE}
    for category, entry in finished.insights["negative"].items():
        if entry["count"]:
            assert isinstance(entry["summary"], str) and entry["summary"], category
        else:
            assert entry["summary"] is None
    assert any(entry["count"] for entry in finished.insights["negative"].values())


def test_a_cached_result_is_reused_only_for_the_same_categories(runtime, db, settings):
    def run(options):
        job = make_job(
            db,
            texts=["I was charged twice on my invoice"],
            model=settings.sentiment_model,
            options=options,
            summarizer=Summarizer(model=settings.summarization_model, max_chars=1000),
        )
        drain_queue(runtime, Task.SENTIMENT)
        with db.read() as session:
            found = session.get(Job, job.id)
            [item] = session.query(JobItem).filter_by(job_id=job.id).all()
        return found.cached_items, item.result

    assert run({})[0] == 0
    cached, result = run({"categories": CATEGORIES})
    assert cached == 0 and result["category"] == "billing"
    # Insights change the job, not a text's result: the same answer comes from the cache.
    cached, again = run({"categories": CATEGORIES, "insights": True})
    assert cached == 1 and again == result
    assert run({"categories": ["shipping", "billing"]})[0] == 0
