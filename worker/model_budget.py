"""Keep a worker's loaded models under its memory budget (TEXTQ_WORKER_MEMORY_GB): how big a
model is, and which loaded models to evict, least recently used first, to make room.

A model's size is the bytes of its parameters and buffers (shared tensors once): exact and
the same on every run, on CPU and GPU alike. Process RSS or `torch.cuda.memory_allocated`
deltas would also count allocator caches, oneDNN kernels and whatever the last batch left,
and on CPU they move by more than a small model weighs. Activations are not counted: they
exist only while a batch runs, one model runs at a time, and TEXTQ_MAX_BATCH_TOKENS bounds
them, so the budget leaves room for one batch rather than reserving it per model.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.model_registry import ModelUnavailable

if TYPE_CHECKING:
    import torch

BYTES_PER_GB = 10**9
# safetensors dtype names of floating tensors: loading with a dtype casts these to it.
FLOATING_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}
STORED_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2}
STORED_BYTES |= {"I16": 2, "U16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1}


class ModelTooLarge(ModelUnavailable):
    """A model needs more memory than the worker's whole budget."""


def expected_bytes(path: Path, dtype: torch.dtype) -> int:
    """Return the bytes a model's weights will take loaded as `dtype`, from the headers of
    its `*.safetensors` files (no tensor is read): floating tensors at `dtype`'s size, the
    rest as stored. Non-persistent buffers are not in the files, so this is a little less
    than `resident_bytes` once loaded."""
    from safetensors import safe_open

    cast_size = dtype.itemsize
    total = 0
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(file, framework="pt") as weights:
            for key in weights.keys():  # noqa: SIM118 (a safe_open handle is no dict)
                tensor = weights.get_slice(key)
                stored = tensor.get_dtype()
                size = cast_size if stored in FLOATING_DTYPES else STORED_BYTES.get(stored, 4)
                total += size * math.prod(tensor.get_shape())
    return total


def resident_bytes(model: Any) -> int:
    """Return the bytes of a loaded torch model's parameters and buffers; tied weights (one
    tensor under two names) count once."""
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    return total


def describe_bytes(count: int) -> str:
    """Return a byte count as people read it: `4.2 MB`, `1.30 GB` (powers of ten)."""
    if count >= BYTES_PER_GB:
        return f"{count / BYTES_PER_GB:.2f} GB"
    return f"{count / 10**6:.1f} MB"


class MemoryBudget:
    """The loaded models' sizes in order of use, and the evictions that make room.

    Not thread-safe: the worker runtime calls it under its loading lock. `limit_bytes`
    None: no budget, nothing is ever evicted.
    """

    def __init__(self, limit_bytes: int | None) -> None:
        self.limit_bytes = limit_bytes
        # Least recently used first.
        self._sizes: OrderedDict[str, int] = OrderedDict()
        self._in_use: dict[str, int] = {}

    @classmethod
    def from_gb(cls, gb: float | None) -> MemoryBudget:
        return cls(None if gb is None else int(gb * BYTES_PER_GB))

    @property
    def loaded_bytes(self) -> int:
        return sum(self._sizes.values())

    def holds(self, name: str) -> bool:
        return name in self._sizes

    def added(self, name: str, size_bytes: int) -> None:
        """Count a model just loaded, as the most recently used."""
        self._sizes[name] = size_bytes
        self._sizes.move_to_end(name)

    def removed(self, name: str) -> None:
        self._sizes.pop(name, None)

    def used(self, name: str) -> None:
        """Make a loaded model the most recently used."""
        if name in self._sizes:
            self._sizes.move_to_end(name)

    def pin(self, name: str) -> None:
        """Keep a model from eviction while a claim runs on it (pins nest)."""
        self._in_use[name] = self._in_use.get(name, 0) + 1
        self.used(name)

    def unpin(self, name: str) -> None:
        left = self._in_use.get(name, 0) - 1
        if left > 0:
            self._in_use[name] = left
        else:
            self._in_use.pop(name, None)

    def refuse_if_too_large(self, name: str, size_bytes: int) -> None:
        """Raise ModelTooLarge when the model alone needs more than the whole budget."""
        if self.limit_bytes is not None and size_bytes > self.limit_bytes:
            raise ModelTooLarge(
                f"model {name!r} needs {describe_bytes(size_bytes)} (parameters and buffers), "
                f"more than this worker's whole memory budget of "
                f"{describe_bytes(self.limit_bytes)} (TEXTQ_WORKER_MEMORY_GB); its jobs wait for "
                "a worker with a larger budget"
            )

    def to_evict(self, name: str, size_bytes: int) -> list[str]:
        """Return the loaded models to evict, least recently used first, so that `name`
        (`size_bytes` more, unless it is loaded already) fits; models in use are kept, so
        the list may not free enough when a claim holds the rest."""
        if self.limit_bytes is None:
            return []
        needed = self.loaded_bytes + (0 if name in self._sizes else size_bytes) - self.limit_bytes
        chosen = []
        for other, other_bytes in self._sizes.items():
            if needed <= 0:
                break
            if other == name or other in self._in_use:
                continue
            chosen.append(other)
            needed -= other_bytes
        return chosen
