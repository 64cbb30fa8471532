"""Benchmark inputs: real feedback and news articles from the shared corpora when present."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

DATA_DIR = Path(
    os.environ.get("TEXTQ_BENCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def feedback(count: int, *, seed: int = 0) -> list[str]:
    """Return `count` customer-feedback texts (real reviews, shuffled; repeats allowed)."""
    texts = []
    for path in sorted((DATA_DIR / "sentiment").glob("*.jsonl")):
        with path.open(encoding="utf-8") as lines:  # not splitlines(): texts hold U+2028
            texts += [json.loads(line)["text"] for line in lines if line.strip()]
    texts = [text for text in texts if text.strip()]
    if not texts:
        return synthetic_feedback(count, seed=seed)
    rng = random.Random(seed)
    rng.shuffle(texts)
    return [texts[n % len(texts)] for n in range(count)]


def synthetic_feedback(count: int, *, seed: int = 0) -> list[str]:
    """Return texts with a lognormal length mix (mean about 40 tokens, tail to 512)."""
    rng = random.Random(seed)
    words = [
        *("the", "product", "arrived", "late", "but", "works"),
        *("great", "support", "was", "helpful", "price", "fair"),
    ]
    return [
        " ".join(rng.choice(words) for _ in range(min(500, int(rng.lognormvariate(3.4, 0.8)) + 1)))
        for _ in range(count)
    ]


def news_articles(count: int, *, tokenizer, low: int = 500, high: int = 800) -> list[str]:  # type: ignore[no-untyped-def]
    """Return `count` CNN/DailyMail articles whose length is within [low, high] tokens."""
    path = DATA_DIR / "summarization" / "cnndm_test_frank.jsonl"
    with path.open(encoding="utf-8") as lines:
        articles = [json.loads(line)["article"] for line in lines if line.strip()]
    chosen = [a for a in articles if low <= len(tokenizer(a)["input_ids"]) <= high]
    if len(chosen) < count:
        raise SystemExit(f"only {len(chosen)} articles of {low}-{high} tokens in {path}")
    return chosen[:count]
