"""The ceiling: textq's batches straight through the model, against the machine's matmul peak."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import torch

from shared.config import Settings
from shared.jobs.work import ClaimedItem, Outcome
from shared.states import Task
from worker import model_registry
from worker.engine import BatchLimits, SentimentRunner

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


def chunk_items(items: list[ClaimedItem], outcomes: list[Outcome]) -> list[ClaimedItem]:
    """Return the chunks the runner split long texts into, as the items a later claim runs.

    The worker runs each chunk of a text longer than the model's window (and averages their
    scores); the model alone must run them too, or its figure leaves out the costliest texts.
    """
    by_id = {item.id: item for item in items}
    next_id = max(by_id, default=0) + 1
    chunks = []
    for outcome in outcomes:
        for chunk in outcome.chunks or []:
            parent = by_id[outcome.item_id]
            chunks.append(
                ClaimedItem(
                    id=next_id,
                    job_id=parent.job_id,
                    index=parent.index,
                    text=chunk.text,
                    options=parent.options,
                    parent_id=parent.id,
                )
            )
            next_id += 1
    return chunks


def run(model_dir: Path, texts: list[str]) -> dict[str, Any]:
    """Time the sentiment runner alone (no API, no database) in fp32 and bf16.

    Each pass runs what the worker runs for the same texts: the texts, then the chunks of
    those longer than the model's window, in textq's planned batches, tokenizing included.
    `worker_dtype` names the dtype a CPU worker picks on this machine (bf16 only where the
    CPU computes it natively), the one end-to-end figures compare against.
    """
    defaults = Settings()
    limits = BatchLimits(
        max_tokens=defaults.max_batch_tokens,
        max_size=defaults.max_batch_size,
        overhead_tokens=defaults.batch_overhead_tokens,
    )
    job = uuid.uuid4()
    items = [
        ClaimedItem(id=n, job_id=job, index=n, text=t, options={}) for n, t in enumerate(texts)
    ]
    resolved = model_registry.ResolvedModel(
        task=Task.SENTIMENT, source=str(model_dir), path=model_dir, revision="bench"
    )
    worker_dtype = model_registry.pick_dtype("auto", torch.device("cpu"))
    out: dict[str, Any] = {
        "peak_gflops": {
            "float32": round(matmul_peak_gflops(torch.float32), 1),
            "bfloat16": round(matmul_peak_gflops(torch.bfloat16), 1),
        },
        "worker_dtype": "bf16" if worker_dtype == torch.bfloat16 else "fp32",
    }
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        loaded = model_registry.load(resolved, device=torch.device("cpu"), dtype=dtype)
        runner = SentimentRunner(loaded, limits)
        first = runner.prepare(items)
        chunks = chunk_items(items, [o for outcomes in first.decided for o in outcomes])
        batches = first.batches + runner.prepare(chunks).batches
        shapes = [(len(b.ids), max(len(ids) for ids in b.ids)) for b in batches]
        for _ in runner.run(items[:64]):
            pass
        started = time.perf_counter()
        for _ in runner.run(items):
            pass
        for _ in runner.run(chunks):
            pass
        elapsed = time.perf_counter() - started
        tokens = sum(len(ids) for b in batches for ids in b.ids)
        flops = forward_flops(loaded.model.config, shapes)
        out[name] = {
            "texts_per_s": round(len(texts) / elapsed, 2),
            "chunks": len(chunks),
            "tokens_per_s": round(tokens / elapsed, 1),
            "padding_efficiency": round(tokens / sum(b * s for b, s in shapes), 3),
            "gflops": round(flops / elapsed / 1e9, 1),
        }
    return out
