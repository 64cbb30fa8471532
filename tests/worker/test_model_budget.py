"""The memory budget's arithmetic: model sizes, and which models to evict in which order."""

import pytest
import torch

from worker.model_budget import (
    MemoryBudget,
    ModelTooLarge,
    describe_bytes,
    expected_bytes,
    resident_bytes,
)
from worker.model_registry import ModelUnavailable


def test_evicts_the_least_recently_used_until_the_new_model_fits():
    budget = MemoryBudget(100)
    for name in ("a", "b", "c"):
        budget.added(name, 30)
    budget.used("a")  # order of use now: b, c, a
    assert budget.to_evict("d", 10) == []
    assert budget.to_evict("d", 20) == ["b"]
    assert budget.to_evict("d", 50) == ["b", "c"]
    assert budget.to_evict("a", 30) == [], "a loaded model needs no room"


def test_a_model_in_use_is_never_chosen():
    budget = MemoryBudget(60)
    budget.added("a", 30)
    budget.added("b", 30)
    budget.pin("a")
    budget.pin("a")
    budget.unpin("a")  # pins nest: one claim still runs on it
    assert budget.to_evict("c", 30) == ["b"]
    assert budget.to_evict("c", 60) == ["b"], "the rest is in use: only what can go"
    budget.unpin("a")
    assert budget.to_evict("c", 60) == ["b", "a"]


def test_no_budget_evicts_nothing_and_refuses_nothing():
    budget = MemoryBudget.from_gb(None)
    budget.added("a", 10**12)
    budget.refuse_if_too_large("b", 10**15)
    assert budget.to_evict("b", 10**15) == []


def test_a_model_larger_than_the_whole_budget_is_refused_saying_how_large():
    budget = MemoryBudget.from_gb(0.5)
    assert budget.limit_bytes == 500_000_000
    with pytest.raises(ModelTooLarge) as refused:
        budget.refuse_if_too_large("big", 1_300_000_000)
    assert isinstance(refused.value, ModelUnavailable), "its jobs wait like any unloadable model"
    assert "'big' needs 1.30 GB" in str(refused.value)
    assert "budget of 500.0 MB (TEXTQ_WORKER_MEMORY_GB)" in str(refused.value)
    assert describe_bytes(4_200_000) == "4.2 MB"


def test_sizes_from_the_weights_headers_match_the_loaded_model(model_dirs):
    from transformers import AutoModelForSequenceClassification

    for dtype in (torch.float32, torch.bfloat16):
        model = AutoModelForSequenceClassification.from_pretrained(
            model_dirs.sentiment, dtype=dtype
        )
        loaded = resident_bytes(model)
        assert loaded == model.get_memory_footprint(return_buffers=True)
        # Only non-persistent buffers (position ids) are not in the files.
        buffers_not_saved = sum(b.numel() * b.element_size() for b in model.buffers())
        assert expected_bytes(model_dirs.sentiment, dtype) == loaded - buffers_not_saved
