"""The ceiling: textq's batches straight through the model, against the machine's matmul peak."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import torch

from shared.config import Settings
from shared.jobs.work import ClaimedItem
from shared.states import Task
from worker import model_registry
from worker.engine import BatchLimits, SentimentRunner, plan_batches

MATMUL_SIZE = 4096


def matmul_peak_gflops(dtype: torch.dtype, repeats: int = 5) -> float:
    """Return the best of three timings of large square matmuls, in GFLOP/s."""
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, dtype=dtype)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * MATMUL_SIZE**3 * repeats / best / 1e9


def forward_flops(config: Any, shapes: list[tuple[int, int]]) -> float:
    """FLOPs of an encoder forward over padded (batch, length) shapes: projections + attention."""
    width, layers = config.dim, config.n_layers
    hidden = config.hidden_dim
    total = 0.0
    for batch, length in shapes:
        tokens = batch * length
        projections = 2 * tokens * (4 * width * width + 2 * width * hidden)
        attention = 2 * 2 * batch * length * length * width
        total += layers * (projections + attention)
    return total


def run(model_dir: Path, texts: list[str]) -> dict[str, Any]:
    """Time the sentiment runner alone (no API, no database) in fp32 and bf16."""
    defaults = Settings()
    limits = BatchLimits(max_tokens=defaults.max_batch_tokens, max_size=defaults.max_batch_size)
    job = uuid.uuid4()
    items = [
        ClaimedItem(id=n, job_id=job, index=n, text=t, options={}) for n, t in enumerate(texts)
    ]
    resolved = model_registry.ResolvedModel(
        task=Task.SENTIMENT, source=str(model_dir), path=model_dir, revision="bench"
    )
    out: dict[str, Any] = {
        "peak_gflops": {
            "float32": round(matmul_peak_gflops(torch.float32), 1),
            "bfloat16": round(matmul_peak_gflops(torch.bfloat16), 1),
        }
    }
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        loaded = model_registry.load(resolved, device=torch.device("cpu"), dtype=dtype)
        runner = SentimentRunner(loaded, limits)
        encoded = runner._encode(texts)
        lengths = [len(ids) for ids in encoded]
        batches = plan_batches(lengths, max_tokens=limits.max_tokens, max_size=limits.max_size)
        shapes = [(len(b), max(lengths[p] for p in b)) for b in batches]
        for _ in runner.run(items[:64]):
            pass
        started = time.perf_counter()
        for _ in runner.run(items):
            pass
        elapsed = time.perf_counter() - started
        flops = forward_flops(loaded.model.config, shapes)
        out[name] = {
            "texts_per_s": round(len(texts) / elapsed, 2),
            "tokens_per_s": round(sum(lengths) / elapsed, 1),
            "padding_efficiency": round(sum(lengths) / sum(b * s for b, s in shapes), 3),
            "gflops": round(flops / elapsed / 1e9, 1),
        }
    return out
