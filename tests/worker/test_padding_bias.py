"""A classifier gets its padding as an attention bias only where that gives the mask's answer."""

import pytest
import torch
from torch import nn
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    DebertaV2Config,
    DistilBertConfig,
    ModernBertConfig,
    RobertaConfig,
)

from shared.states import Task
from tests import reference
from tests.model_factory import LABELS, tokenizer
from tests.worker.test_engine import TEXTS, items, load, run_all
from worker.engine import NOT_FINITE, BatchLimits, SentimentRunner
from worker.padding_bias import honours_padding_bias, padding_bias

PROBE = {"pad_id": 0, "window": 512, "padding_side": "right"}
# bert-base-uncased's special tokens, for a config whose own defaults are another vocabulary's.
BERT_SPECIAL_TOKENS = {"pad": 0, "cls": 101, "sep": 102, "bos": 101, "eos": 102}
SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
# Every text in one batch: the short ones padded to the longest's 302 tokens, so a mask read
# wrongly shows in their scores.
ONE_BATCH = BatchLimits(max_tokens=4096, max_size=8, overhead_tokens=100_000)
ARCHITECTURES = {
    "distilbert": DistilBertConfig(dim=32, hidden_dim=64, n_layers=2, n_heads=2),
    "bert": BertConfig(intermediate_size=64, **SMALL),
    "roberta": RobertaConfig(intermediate_size=64, pad_token_id=0, **SMALL),
    "deberta-v2": DebertaV2Config(intermediate_size=64, **SMALL),
    # Every other layer sees only 8 tokens either side: windows built from the 2-D mask.
    "modernbert": ModernBertConfig(
        intermediate_size=64,
        local_attention=16,
        **{f"{name}_token_id": id for name, id in BERT_SPECIAL_TOKENS.items()},
        **SMALL,
    ),
}
# Whether the probe lets each take the bias: transformers' own masks read it as the 2-D
# mask; DeBERTa-v2 reads a 4-D mask as 0/1 weights, ModernBERT's windows would be lost.
HONOURS = {"distilbert": True, "bert": True, "roberta": True, "deberta-v2": False}
HONOURS["modernbert"] = False


def build_classifier(directory, architecture):
    """Save a 2-layer classifier of `architecture` with the real bert tokenizer."""
    config = ARCHITECTURES[architecture]
    config.vocab_size = tokenizer().vocab_size
    config.id2label, config.label2id = LABELS, {v: k for k, v in LABELS.items()}
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(directory)
    tokenizer().save_pretrained(directory)
    return directory


def test_the_bias_is_zero_where_a_token_counts_and_lowest_at_padding():
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    bias = padding_bias(mask, torch.bfloat16)
    assert bias.shape == (2, 1, 1, 3) and bias.dtype == torch.bfloat16
    lowest = torch.finfo(torch.bfloat16).min
    assert bias[:, 0, 0].tolist() == [[0, 0, 0], [0, lowest, lowest]]


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_padded_batches_give_each_text_its_own_answer_whatever_the_architecture(
    tmp_path, architecture
):
    path = build_classifier(tmp_path / architecture, architecture)
    runner = SentimentRunner(load(path, Task.SENTIMENT), ONE_BATCH)
    assert len(runner.prepare(items(TEXTS)).batches) == 1
    outcomes = run_all(runner, items(TEXTS))
    for n, expected in enumerate(reference.sentiment(path, TEXTS)):
        assert outcomes[n].result["scores"] == pytest.approx(expected, abs=1e-4)
    assert runner._honours_padding_bias is HONOURS[architecture]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_test_classifier_honours_the_bias_in_either_dtype(model_dirs, dtype):
    model = AutoModelForSequenceClassification.from_pretrained(model_dirs.sentiment, dtype=dtype)
    assert honours_padding_bias(model.eval(), **PROBE, dtype=dtype)


class IgnoresFourDimensionalMasks(nn.Module):
    """A classifier that drops a 4-D mask, as one whose attention cannot read it might."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, input_ids, attention_mask=None):
        if attention_mask is not None and attention_mask.dim() == 4:
            attention_mask = None
        return self.model(input_ids=input_ids, attention_mask=attention_mask)


class MultipliesByTheMask(IgnoresFourDimensionalMasks):
    """A classifier that reads a 4-D mask as 0/1 weights (0: padding), as some do."""

    def forward(self, input_ids, attention_mask=None):
        if attention_mask is not None and attention_mask.dim() == 4:
            attention_mask = attention_mask[:, 0, 0, :].long()
        return self.model(input_ids=input_ids, attention_mask=attention_mask)


class RefusesFourDimensionalMasks(IgnoresFourDimensionalMasks):
    def forward(self, input_ids, attention_mask=None):
        if attention_mask is not None and attention_mask.dim() == 4:
            raise ValueError("a 2-D attention mask is expected")
        return self.model(input_ids=input_ids, attention_mask=attention_mask)


@pytest.mark.parametrize(
    "wrapper", [IgnoresFourDimensionalMasks, MultipliesByTheMask, RefusesFourDimensionalMasks]
)
def test_a_model_that_reads_the_bias_otherwise_keeps_the_two_dimensional_mask(model_dirs, wrapper):
    loaded = load(model_dirs.sentiment, Task.SENTIMENT)
    model = wrapper(loaded.model).eval()
    assert not honours_padding_bias(model, **PROBE, dtype=torch.float32)
    runner = SentimentRunner(type(loaded)(**{**loaded.__dict__, "model": model}), ONE_BATCH)
    outcomes = run_all(runner, items(TEXTS))
    for n, expected in enumerate(reference.sentiment(model_dirs.sentiment, TEXTS)):
        assert outcomes[n].result["scores"] == pytest.approx(expected, abs=1e-4)


class RecordsMasks(IgnoresFourDimensionalMasks):
    """The test classifier, noting the shape of each mask it is given (None: no mask)."""

    def __init__(self, model):
        super().__init__(model)
        self.masks = []

    def forward(self, input_ids, attention_mask=None):
        self.masks.append(None if attention_mask is None else tuple(attention_mask.shape))
        return self.model(input_ids=input_ids, attention_mask=attention_mask)


def test_a_padded_batch_gets_the_bias_and_an_unpadded_one_no_mask(model_dirs):
    loaded = load(model_dirs.sentiment, Task.SENTIMENT)
    model = RecordsMasks(loaded.model).eval()
    runner = SentimentRunner(type(loaded)(**{**loaded.__dict__, "model": model}), ONE_BATCH)
    assert runner._honours_padding_bias
    model.masks.clear()
    run_all(runner, items(TEXTS))  # padded to the longest, 302 tokens
    run_all(runner, items(["the same four words", "a few other words"]))  # 6 tokens each
    assert model.masks == [(5, 1, 1, 302), None]


class GivesNaNForTheFirstText(IgnoresFourDimensionalMasks):
    def forward(self, input_ids, attention_mask=None):
        output = self.model(input_ids=input_ids, attention_mask=attention_mask)
        output.logits[0] = float("nan")
        return output


def test_a_text_whose_scores_are_not_numbers_fails_alone(model_dirs):
    loaded = load(model_dirs.sentiment, Task.SENTIMENT)
    model = GivesNaNForTheFirstText(loaded.model).eval()
    runner = SentimentRunner(type(loaded)(**{**loaded.__dict__, "model": model}), ONE_BATCH)
    outcomes = run_all(runner, items(TEXTS))
    failed = [n for n, outcome in outcomes.items() if outcome.error is not None]
    assert len(failed) == 1 and outcomes[failed[0]].error == NOT_FINITE
    assert all(outcome.result["scores"] for outcome in outcomes.values() if not outcome.error)


class NoConfig(nn.Module):
    config = object()

    def forward(self, input_ids, attention_mask=None):
        raise AssertionError("never called")


def test_the_probe_says_no_instead_of_raising():
    assert not honours_padding_bias(NoConfig(), **PROBE, dtype=torch.float32)
