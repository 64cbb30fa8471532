"""TEXTQ_MAX_ITEM_TOKENS: a text over it fails alone, counted by the model's own tokenizer."""

from collections.abc import Iterator

import pytest

from shared.config import Settings
from shared.jobs.reads import list_first_round_chunks, list_item_outcomes
from shared.models import Job
from shared.states import JobStatus, Task
from tests.factories import make_job
from worker.runtime import WorkerRuntime
from worker.tasks import drain_queue

MAX_ITEM_TOKENS = 1500


@pytest.fixture
def limited(settings: Settings) -> Iterator[WorkerRuntime]:
    started = WorkerRuntime.start(settings.model_copy(update={"max_item_tokens": MAX_ITEM_TOKENS}))
    yield started
    started.stop()


def outcomes(db, job_id):
    with db.read() as session:
        job = session.get(Job, job_id)
        rows = list_item_outcomes(session, job_id=job_id, after_index=-1, limit=10)
    return job, rows


@pytest.mark.parametrize(
    ("task", "model"),
    [(Task.SENTIMENT, "sentiment_model"), (Task.SUMMARIZE, "summarization_model")],
)
def test_a_text_over_the_token_limit_fails_alone(limited, db, settings, task, model):
    tokenizer = limited.runners[task].loaded.tokenizer
    too_long = "word " * 2000
    tokens = len(tokenizer(too_long)["input_ids"])
    assert tokens > MAX_ITEM_TOKENS
    # Over the model's window but under the limit: split into chunks as ever.
    long_but_allowed = "fine " * 900
    texts = ["I love it", too_long, long_but_allowed, "meh"]
    job = make_job(db, texts=texts, task=task, model=getattr(settings, model))

    drain_queue(limited, task)

    finished, rows = outcomes(db, job.id)
    assert finished.status == JobStatus.PARTIAL
    assert rows[1].result is None
    assert rows[1].error == (
        f"The text is {tokens:,} tokens long; the limit is {MAX_ITEM_TOKENS:,} tokens a text "
        "(TEXTQ_MAX_ITEM_TOKENS)."
    )
    assert [row.error for row in rows if row.index != 1] == [None, None, None]
    assert all(row.result for row in rows if row.index != 1)
    assert finished.total_parts > 0, "the long but allowed text ran as chunks"
    with db.read() as session:
        assert list_first_round_chunks(session, [rows[1].item_id]) == []

    # The worker goes on with the next job.
    later = make_job(db, texts=["great"], task=task, model=getattr(settings, model))
    assert drain_queue(limited, task) == 1
    assert outcomes(db, later.id)[0].status == JobStatus.SUCCEEDED
