"""Long texts through the worker's own code: split, batched chunks, reduce, within length."""

import itertools
from pathlib import Path

from sqlalchemy import select

from shared.jobs.reads import list_first_round_chunks, list_item_outcomes
from shared.models import Job, JobItem
from shared.states import ItemStatus, JobStatus, Task
from tests.factories import make_job
from worker.tasks import drain_queue

BOOKS = Path(__file__).parents[1] / "data" / "long_documents"


def words(count: int) -> str:
    """Return the first `count` words of the test books, with their line breaks."""
    text = (BOOKS / "gutenberg_1952_the_yellow_wallpaper.txt").read_text()
    cut = 0
    for _ in range(count):
        cut = text.index(" ", cut + 1)
    return text[:cut]


def outcome(db, job_id):
    """Return the job, its first text's outcome, and that text's first-round chunks."""
    with db.read() as session:
        job = session.get(Job, job_id)
        row = list_item_outcomes(session, job_id=job_id, after_index=-1, limit=2)[0]
        chunks = list_first_round_chunks(session, [row.item_id])
    return job, row, chunks


def test_a_long_summary_runs_chunks_then_reduces_within_the_requested_length(runtime, db, settings):
    document = words(2000)
    job = make_job(
        db,
        texts=[document],
        task=Task.SUMMARIZE,
        model=settings.summarization_model,
        options={"max_length": 16, "min_length": 5},
    )
    drain_queue(runtime, Task.SUMMARIZE)

    finished, row, chunks = outcome(db, job.id)
    assert finished.status == JobStatus.SUCCEEDED, row.error
    assert len(chunks) >= 4
    assert chunks[0].start == 0 and chunks[-1].end == len(document)
    assert all(a.end == b.start for a, b in itertools.pairwise(chunks))
    assert all(c.status == ItemStatus.DONE and c.result["summary_text"] for c in chunks)
    assert (finished.total_parts, finished.done_parts) == (len(chunks), len(chunks))
    runner = runtime.runners[Task.SUMMARIZE]
    assert all(c.tokens <= runner.chunk_tokens for c in chunks)
    summary_ids = runner.loaded.tokenizer(row.result["summary_text"])["input_ids"]
    assert 0 < len(summary_ids) <= 16 + 1  # decoder start token is not decoded


def test_a_long_texts_sentiment_is_one_label_from_its_chunks(runtime, db, settings):
    document = words(1500)
    job = make_job(db, texts=[document, "short and sweet"], model=settings.sentiment_model)
    drain_queue(runtime, Task.SENTIMENT)

    finished, row, chunks = outcome(db, job.id)
    assert finished.status == JobStatus.SUCCEEDED
    assert len(chunks) >= 3
    weights = [c.tokens for c in chunks]
    for label in row.result["scores"]:
        expected = sum(c.result["scores"][label] * w for c, w in zip(chunks, weights, strict=True))
        assert abs(row.result["scores"][label] - expected / sum(weights)) < 1e-6
    assert sum(finished.label_counts.values()) == 2


def test_a_summary_too_long_for_one_window_after_a_round_is_reduced_again(runtime, db, settings):
    runner = runtime.runners[Task.SUMMARIZE]
    # Chunks of ~40 tokens summarized to up to 10: the joined summaries need another round.
    runner.loaded.max_input_tokens = 42
    job = make_job(db, texts=[words(900)], task=Task.SUMMARIZE, model=settings.summarization_model)
    # A drain ends at its time slice with work left (it rings the doorbell again): on a
    # loaded machine three rounds of summaries can outlast one slice, so drain as the
    # doorbell would, until the text ends.
    for _ in range(10):
        drain_queue(runtime, Task.SUMMARIZE)
        with db.read() as session:
            text = session.scalar(
                select(JobItem).where(JobItem.job_id == job.id, JobItem.parent_id.is_(None))
            )
            levels = set(session.scalars(select(JobItem.level).where(JobItem.parent_id == text.id)))
        if text.status not in (ItemStatus.PENDING, ItemStatus.WAITING):
            break
    assert text.status == ItemStatus.DONE
    assert text.level >= 2 and levels >= {0, 1}
