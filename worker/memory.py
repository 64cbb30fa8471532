"""Keep a long-running worker's memory flat whatever the sizes of the texts it has seen."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# oneDNN keeps its last N compiled kernels, about six for each (batch, length) shape a
# distilbert forward sees, at ~15 MB a shape on an AMX Xeon. Its default of 1024 grew a
# worker by 410 MB over one bulk job, and grows it with every new shape up to that bound
# (see README, "Flat memory").
ONEDNN_CACHE_KERNELS = "16"
# ideep, the layer through which torch runs bf16 matmuls on oneDNN, keeps a cache of its
# own of the primitives it made, by shape (`LRU_CACHE_CAPACITY`, 1024 by default), and each
# keeps its compiled kernel alive whatever oneDNN's cap. On a 2-core AMX Xeon the 2-layer
# test classifier in bf16 grew by 366 MB over its first 13 claims of feedback texts before
# it levelled off, and by 85 MB over 30 claims with 16 (in fp32, which skips ideep: 33 MB).
# 128 kept the benchmark's 5,000- and 50,000-item jobs within 2% of each other, for a cost
# to the full-size classifier within this machine's noise (see README, "Flat memory").
IDEEP_CACHE_PRIMITIVES = "128"


def limit_kernel_cache() -> None:
    """Cap oneDNN's and ideep's caches of compiled kernels; must run before torch is
    imported (both read their capacity once)."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_CACHE_KERNELS)
    os.environ.setdefault("LRU_CACHE_CAPACITY", IDEEP_CACHE_PRIMITIVES)


def _load_libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


_libc = _load_libc()


def give_back_freed_memory() -> None:
    """Return memory freed by the last claim to the OS (glibc keeps it otherwise)."""
    trim = getattr(_libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


def release_model_memory(device: torch.device) -> None:
    """Give an unloaded model's memory back: collect what still points at it in cycles,
    return CUDA's cached blocks to the driver (other processes and `nvidia-smi` see them
    free) and the freed heap to the OS."""
    gc.collect()
    if device.type == "cuda":
        import torch

        torch.cuda.empty_cache()
    give_back_freed_memory()
