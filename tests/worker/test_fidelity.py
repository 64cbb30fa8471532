"""A speedup that changes answers does not count: every precision mode against fp32.

The model has realistic margins: the real MiniLM encoder with a classification head fitted
on labelled review sentences (a random head gives near-tied logits and proves nothing).
"""

import random
import uuid

import pytest
import torch

from shared.jobs.work import ClaimedItem
from shared.states import Task
from tests import reference
from tests.model_factory import build_fitted_sentiment_model, labelled_feedback
from worker import model_registry
from worker.engine import BatchLimits, SentimentRunner

MIN_LABEL_AGREEMENT = 0.99
MAX_SCORE_DELTA = 0.01


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    rows = labelled_feedback()
    random.Random(0).shuffle(rows)
    directory = build_fitted_sentiment_model(tmp_path_factory.mktemp("fitted"), rows[:600])
    held_out = [text for text, _ in rows[600:]]
    return directory, held_out, reference.sentiment(directory, held_out)


def textq_scores(directory, texts, dtype):
    resolved = model_registry.ResolvedModel(
        task=Task.SENTIMENT, source=str(directory), path=directory, revision="test"
    )
    loaded = model_registry.load(resolved, device=torch.device("cpu"), dtype=dtype)
    runner = SentimentRunner(loaded, BatchLimits(max_tokens=8192, max_size=64))
    job = uuid.uuid4()
    items = [
        ClaimedItem(id=n, job_id=job, index=n, text=t, options={}) for n, t in enumerate(texts)
    ]
    by_id = {o.item_id: o.result for batch in runner.run(items) for o in batch}
    return [by_id[n]["scores"] for n in range(len(texts))]


def test_the_fitted_model_has_real_margins(fitted):
    _, _, expected = fitted
    margins = [abs(s["POSITIVE"] - 0.5) for s in expected]
    assert sum(margins) / len(margins) > 0.1
    assert sum(m > 0.25 for m in margins) > len(margins) / 5


@pytest.mark.parametrize(
    ("dtype", "agreement", "delta"),
    [
        (torch.float32, 1.0, 1e-4),  # the exact mode: batching and padding change nothing
        (torch.bfloat16, MIN_LABEL_AGREEMENT, MAX_SCORE_DELTA),
        (torch.float16, MIN_LABEL_AGREEMENT, MAX_SCORE_DELTA),
    ],
    ids=["float32", "bfloat16", "float16"],
)
def test_each_precision_keeps_the_answers(fitted, dtype, agreement, delta):
    directory, texts, expected = fitted
    got = textq_scores(directory, texts, dtype)
    flipped = [
        e for g, e in zip(got, expected, strict=True) if max(g, key=g.get) != max(e, key=e.get)
    ]
    worst = max(abs(g[label] - e[label]) for g, e in zip(got, expected, strict=True) for label in e)
    assert worst <= delta
    # Only texts fp32 itself nearly ties on may change label, and few of them.
    assert all(abs(e["POSITIVE"] - e["NEGATIVE"]) <= 2 * delta for e in flipped), flipped
    assert 1 - len(flipped) / len(texts) >= agreement
