import random

from worker.engine import plan_batches


def test_every_position_lands_in_exactly_one_batch():
    rng = random.Random(7)
    lengths = [rng.randint(1, 512) for _ in range(500)]
    batches = plan_batches(lengths, max_tokens=4096, max_size=64)
    flat = sorted(p for batch in batches for p in batch)
    assert flat == list(range(500))


def test_padded_size_stays_within_the_token_budget():
    rng = random.Random(3)
    lengths = [int(rng.lognormvariate(3.5, 0.8)) + 2 for _ in range(1000)]
    for batch in plan_batches(lengths, max_tokens=2048, max_size=64):
        longest = max(lengths[p] for p in batch)
        assert longest * len(batch) <= 2048 or len(batch) == 1
        assert len(batch) <= 64


def test_sorting_keeps_padding_small():
    rng = random.Random(11)
    lengths = [int(rng.lognormvariate(3.5, 0.9)) + 2 for _ in range(2000)]
    batches = plan_batches(lengths, max_tokens=4096, max_size=64)
    real = sum(lengths)
    padded = sum(max(lengths[p] for p in b) * len(b) for b in batches)
    assert padded / real < 1.15


def test_a_text_longer_than_the_budget_runs_alone():
    batches = plan_batches([10, 5000, 12], max_tokens=1000, max_size=8)
    assert [1] in batches
    assert sorted(p for b in batches for p in b) == [0, 1, 2]


def test_no_lengths_no_batches():
    assert plan_batches([], max_tokens=100, max_size=4) == []


def test_a_small_mixed_pool_is_not_padded_to_its_longest_text():
    # What many small jobs give a worker: a few dozen texts of very different lengths.
    rng = random.Random(5)
    for _ in range(20):
        lengths = [min(512, int(rng.lognormvariate(3.6, 0.9)) + 2) for _ in range(45)]
        batches = plan_batches(lengths, max_tokens=8192, max_size=64, overhead_tokens=32)
        padded = sum(max(lengths[p] for p in b) * len(b) for b in batches)
        assert sum(lengths) / padded > 0.85


def test_a_costlier_forward_buys_fewer_batches_with_some_padding():
    # The default weighs a forward as 256 tokens (shared/config.py): under half the forwards of
    # 32 on such pools, still far from padding every text to the longest.
    rng = random.Random(5)
    for _ in range(20):
        lengths = [min(512, int(rng.lognormvariate(3.6, 0.9)) + 2) for _ in range(45)]
        cheap = plan_batches(lengths, max_tokens=8192, max_size=64, overhead_tokens=32)
        batches = plan_batches(lengths, max_tokens=8192, max_size=64)
        padded = sum(max(lengths[p] for p in b) * len(b) for b in batches)
        assert len(batches) < len(cheap)
        assert sum(lengths) / padded > 0.65


def test_the_per_batch_overhead_keeps_equal_texts_together():
    assert plan_batches([20] * 10, max_tokens=8192, max_size=64) == [list(range(10))]
