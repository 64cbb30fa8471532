import copy
import os
import threading
import uuid

import pytest
import torch
from transformers import DistilBertForSequenceClassification

from shared.jobs.work import ClaimedItem
from shared.states import Task
from tests import reference
from worker import model_registry
from worker.engine import BatchLimits, SentimentRunner, SummarizeRunner
from worker.model_registry import LoadedModel, ResolvedModel

TEXTS = [
    "I love it",
    "meh",
    "The delivery was late and the box was crushed, but support refunded me quickly.",
    "Terrible. Would not buy again.",
    "ok " * 300,  # longer than the model window: truncated like the pipeline does
]


def items(texts, options=None):
    job = uuid.uuid4()
    return [
        ClaimedItem(id=n, job_id=job, index=n, text=t, options=options or {})
        for n, t in enumerate(texts)
    ]


def load(path, task):
    resolved = ResolvedModel(task=task, source=str(path), path=path, revision="test")
    return model_registry.load(resolved, device=torch.device("cpu"), dtype=torch.float32)


def run_all(runner, claimed):
    return {o.item_id: o for batch in runner.run(claimed) for o in batch}


def test_sentiment_matches_the_model_run_one_text_at_a_time(model_dirs):
    loaded = load(model_dirs.sentiment, Task.SENTIMENT)
    runner = SentimentRunner(loaded, BatchLimits(max_tokens=2048, max_size=3))
    outcomes = run_all(runner, items(TEXTS))
    for n, expected in enumerate(reference.sentiment(model_dirs.sentiment, TEXTS)):
        result = outcomes[n].result
        assert result["scores"] == pytest.approx(expected, abs=1e-4)
        assert result["label"] == max(expected, key=expected.get)
        assert result["score"] == max(result["scores"].values())


def test_summaries_match_the_model_generating_one_text_at_a_time(model_dirs):
    loaded = load(model_dirs.summarization, Task.SUMMARIZE)
    runner = SummarizeRunner(loaded, BatchLimits(max_tokens=4096, max_size=4))
    outcomes = run_all(runner, items(TEXTS[:4]))
    for n, expected in enumerate(reference.summaries(model_dirs.summarization, TEXTS[:4])):
        assert outcomes[n].result == {"summary_text": expected}


def test_job_options_override_the_models_decoding(model_dirs):
    loaded = load(model_dirs.summarization, Task.SUMMARIZE)
    runner = SummarizeRunner(loaded, BatchLimits(max_tokens=4096, max_size=4))
    config = runner.generation_config({"max_length": 6, "num_beams": 1})
    assert (config.max_length, config.num_beams, config.do_sample) == (6, 1, False)
    assert config.min_length <= 6
    assert config.no_repeat_ngram_size == 3  # untouched settings stay the model's own
    outcome = run_all(runner, items(["a long text about many things"], {"max_length": 6}))[0]
    tokens = loaded.tokenizer(outcome.result["summary_text"], add_special_tokens=False)
    assert len(tokens["input_ids"]) <= 6


POISON = "banana"


class PoisonClassifier(DistilBertForSequenceClassification):
    """A real classifier that fails on one word, as a model can on one odd input."""

    poison_id: int

    def forward(self, input_ids=None, **kwargs):
        if (input_ids == self.poison_id).any():
            raise RuntimeError("cannot process this input")
        return super().forward(input_ids=input_ids, **kwargs)


def test_one_bad_text_fails_alone_and_its_batch_mates_succeed(model_dirs):
    loaded = load(model_dirs.sentiment, Task.SENTIMENT)
    poisoned = PoisonClassifier.from_pretrained(model_dirs.sentiment).eval()
    poisoned.poison_id = loaded.tokenizer.convert_tokens_to_ids(POISON)
    assert poisoned.poison_id != loaded.tokenizer.unk_token_id
    loaded = LoadedModel(**{**loaded.__dict__, "model": poisoned})
    runner = SentimentRunner(loaded, BatchLimits(max_tokens=4096, max_size=8))
    texts = ["fine", f"a {POISON} here", "also fine", "good"]
    outcomes = run_all(runner, items(texts))
    assert outcomes[1].error == "RuntimeError: cannot process this input"
    assert outcomes[1].result is None
    assert all(outcomes[n].result and outcomes[n].error is None for n in (0, 2, 3))


class PoisonTokenizer:
    """The real tokenizer, except that it cannot tokenize one text (called as a whole, not
    through a fast tokenizer's backend)."""

    is_fast = False

    def __init__(self, real, poison: str) -> None:
        self.real, self.poison = real, poison

    def __call__(self, texts, **kwargs):
        if self.poison in texts:
            raise ValueError("cannot tokenize this text")
        return self.real(texts, **kwargs)

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __deepcopy__(self, memo):
        return PoisonTokenizer(copy.deepcopy(self.real, memo), self.poison)


def test_a_text_the_tokenizer_rejects_fails_alone(model_dirs):
    loaded = load(model_dirs.sentiment, Task.SENTIMENT)
    loaded = LoadedModel(**{**loaded.__dict__, "tokenizer": PoisonTokenizer(loaded.tokenizer, "x")})
    runner = SentimentRunner(loaded, BatchLimits(max_tokens=4096, max_size=8))
    outcomes = run_all(runner, items(["fine", "x", "good"]))
    assert outcomes[1].error == "ValueError: cannot tokenize this text"
    assert outcomes[0].result and outcomes[2].result


ODD_TEXTS = [
    "",
    " ",
    "Great!!! 😀😀 would buy again",
    "配送が遅かった。でも品質は良い。",
    "naïve café — “quoted” text\twith a tab\nand a line break",
    "[CLS] looks like a special token [SEP] [PAD]",
    "word " * 700,
]


@pytest.mark.parametrize("task", [Task.SENTIMENT, Task.SUMMARIZE])
def test_preparing_tokenizes_as_the_tokenizer_itself_does(model_dirs, task):
    from benchmarks import data

    path = model_dirs.sentiment if task is Task.SENTIMENT else model_dirs.summarization
    loaded = load(path, task)
    runner = SentimentRunner(loaded, BatchLimits(max_tokens=4096, max_size=8))
    texts = data.feedback(300) + ODD_TEXTS
    expected = loaded.tokenizer(texts, truncation=False, padding=False, verbose=False)
    assert runner._encode(texts) == [list(ids) for ids in expected["input_ids"]]
    assert runner.preparing_tokenizer is not loaded.tokenizer


def runner_with_tokenizer(model_dirs, **settings):
    """A sentiment runner whose tokenizer is a copy of the model's with `settings` set."""
    loaded = load(model_dirs.sentiment, Task.SENTIMENT)
    tokenizer = copy.deepcopy(loaded.tokenizer)
    for name, value in settings.items():
        setattr(tokenizer, name, value)
    return SentimentRunner(
        LoadedModel(**{**loaded.__dict__, "tokenizer": tokenizer}),
        BatchLimits(max_tokens=4096, max_size=8),
    )


@pytest.mark.parametrize("side", ["right", "left"])
def test_batches_are_padded_as_the_tokenizers_pad_does(model_dirs, side):
    runner = runner_with_tokenizer(model_dirs, padding_side=side)
    tokenizer = runner.loaded.tokenizer
    encoded = runner._encode(TEXTS)
    padded = tokenizer.pad({"input_ids": encoded}, padding=True, return_tensors="pt")
    tensors = runner._host_tensors(encoded)
    assert set(tensors) == {"input_ids", "attention_mask"}
    for key, value in tensors.items():
        assert value.dtype == padded[key].dtype
        assert torch.equal(value, padded[key])


def threads_started_by(call) -> int:
    """Run `call` on a fresh thread; return how many threads the process started meanwhile
    (counted before that thread ends: an OpenMP team it started would go with it)."""
    started = []

    def counting() -> None:
        before = set(os.listdir("/proc/self/task"))
        call()
        started.append(len(set(os.listdir("/proc/self/task")) - before))

    thread = threading.Thread(target=counting)
    thread.start()
    thread.join()
    return started[0]


def test_a_claim_made_ready_on_another_thread_starts_no_openmp_team(model_dirs):
    # A claim taken ahead is made ready on a thread of its own. A parallel torch operation
    # there starts an OpenMP team for it, and with more OpenMP threads than cores the
    # forwards' own team spins only briefly between operations (see `_host_tensors`).
    ids = torch.zeros(512, 512, dtype=torch.long)
    if threads_started_by(lambda: ids.__setitem__(ids == 0, 1)) == 0:
        pytest.skip("torch runs one thread a team here (one core): no team to start")
    runner = SentimentRunner(
        load(model_dirs.sentiment, Task.SENTIMENT), BatchLimits(max_tokens=65536, max_size=512)
    )
    prepared = []
    assert threads_started_by(lambda: prepared.append(runner.prepare(items(TEXTS * 100)))) == 0
    assert all(batch.tensors is not None for batch in prepared[0].batches)


def test_a_prepared_claim_skips_the_items_of_a_job_ended_since(model_dirs):
    loaded = load(model_dirs.sentiment, Task.SENTIMENT)
    runner = SentimentRunner(loaded, BatchLimits(max_tokens=4096, max_size=8))
    kept, ended = items(TEXTS[:4]), items(TEXTS[:4])
    ended = [ClaimedItem(**{**item.__dict__, "id": item.id + 10}) for item in ended]
    prepared = runner.prepare(kept + ended)
    both = {kept[0].job_id, ended[0].job_id}
    assert any({item.job_id for item in batch.items} == both for batch in prepared.batches)
    outcomes = {
        o.item_id: o
        for batch in runner.run_prepared(prepared, skip=lambda item: item.job_id == ended[0].job_id)
        for o in batch
    }
    assert set(outcomes) == {item.id for item in kept}
    alone = run_all(runner, kept)
    for item in kept:  # the batch run without the skipped items gives the same scores
        assert outcomes[item.id].result["scores"] == pytest.approx(
            alone[item.id].result["scores"], abs=1e-5
        )


def test_a_tokenizer_that_cannot_pad_fails_the_items_not_the_run(model_dirs):
    runner = runner_with_tokenizer(model_dirs, pad_token=None)
    outcomes = run_all(runner, items(TEXTS[:3]))
    assert sorted(outcomes) == [0, 1, 2]
    assert all(o.error and "pad" in o.error for o in outcomes.values())
