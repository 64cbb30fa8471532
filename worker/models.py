"""Find, fetch and load the models a worker serves: hub ids or local directories."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.config import Settings
from shared.states import Task

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# Only what loading needs: never pickled weights, never other frameworks' copies.
HUB_FILE_PATTERNS = [
    "*.json",
    "*.safetensors",
    "*.txt",
    "*.model",
    "tokenizer*",
    "merges.txt",
    "vocab.*",
]
FINGERPRINT_CHUNK_BYTES = 1 << 20


class ModelUnavailable(Exception):
    """A configured model cannot be found, fetched or loaded."""


@dataclass(frozen=True)
class ResolvedModel:
    """A model's files on this machine and the revision they are."""

    task: Task
    source: str
    path: Path
    revision: str


def resolve(settings: Settings, task: Task) -> ResolvedModel:
    """Return the local files of the task's model, fetching them from the hub if needed."""
    source = settings.model_for(task)
    local = Path(source).expanduser()
    if local.is_dir():
        path = local.resolve()
        revision = _revision_of_directory(path)
    elif local.is_absolute() or source.startswith((".", "~")):
        raise ModelUnavailable(
            f"{task.value} model directory {source!r} does not exist; "
            f"set {settings.model_setting_name(task)} to a model directory or a hub id"
        )
    else:
        path = _fetch_from_hub(settings, task, source)
        revision = path.name
    if not any(path.glob("*.safetensors")):
        raise ModelUnavailable(
            f"{task.value} model {source!r} has no .safetensors weights and textq does not "
            f"load pickled weights; convert it or set {settings.model_setting_name(task)}"
        )
    return ResolvedModel(task=task, source=source, path=path, revision=revision)


def _fetch_from_hub(settings: Settings, task: Task, repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                repo_id,
                revision=settings.revision_for(task),
                allow_patterns=HUB_FILE_PATTERNS,
            )
        )
    except Exception as error:  # the hub client raises many types for "no network"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelUnavailable(
            f"cannot fetch the {task.value} model {repo_id!r} from the Hugging Face hub "
            f"({type(error).__name__}: {reason[:200]}); set {settings.model_setting_name(task)} "
            "to a local model directory, or run `textq models pull` where the hub is reachable"
        ) from error


def _revision_of_directory(path: Path) -> str:
    """Return the hub commit of a cache snapshot, else a content hash of config and weights."""
    if path.parent.name == "snapshots" and len(path.name) == 40:
        return path.name
    digest = hashlib.sha256()
    files = sorted(path.glob("config.json")) + sorted(path.glob("*.safetensors"))
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            while chunk := handle.read(FINGERPRINT_CHUNK_BYTES):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()[:16]


def pick_device(setting: str) -> torch.device:
    """Return the torch device for `auto`, `cpu`, `cuda`, `cuda:N` or `mps`."""
    import torch

    if setting == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    device = torch.device(setting)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelUnavailable(f"device {setting!r} asked for but CUDA is not available")
    return device


def pick_dtype(setting: str, device: torch.device) -> torch.dtype:
    """Return the fastest numerically safe dtype for the device, unless one is set."""
    import torch

    if setting != "auto":
        return getattr(torch, setting)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def cpu_has_native_bf16() -> bool:
    """Say whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


@dataclass
class LoadedModel:
    """A model warm on its device, with its tokenizer and the limits it was built with."""

    resolved: ResolvedModel
    tokenizer: Any
    model: Any
    device: torch.device
    dtype: torch.dtype
    max_input_tokens: int
    load_s: float


def load(resolved: ResolvedModel, *, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    """Load the model and tokenizer from local files onto the device, ready for inference."""
    import torch
    from transformers import (
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    started = time.perf_counter()
    model_class = (
        AutoModelForSequenceClassification
        if resolved.task is Task.SENTIMENT
        else AutoModelForSeq2SeqLM
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.path)
        model = model_class.from_pretrained(
            resolved.path, use_safetensors=True, trust_remote_code=False, dtype=dtype
        )
    except Exception as error:
        raise ModelUnavailable(
            f"cannot load the {resolved.task.value} model from {resolved.path}: "
            f"{type(error).__name__}: {error}"
        ) from error
    model.to(device)
    model.eval()
    torch.set_grad_enabled(False)
    windows = [
        getattr(model.config, "max_position_embeddings", None),
        tokenizer.model_max_length if tokenizer.model_max_length < 1_000_000 else None,
    ]
    max_input_tokens = min(w for w in windows if w) if any(windows) else 512
    loaded = LoadedModel(
        resolved=resolved,
        tokenizer=tokenizer,
        model=model,
        device=device,
        dtype=dtype,
        max_input_tokens=max_input_tokens,
        load_s=time.perf_counter() - started,
    )
    log.info(
        "loaded %s model %s (revision %s) on %s as %s in %.1f s",
        resolved.task.value,
        resolved.source,
        resolved.revision,
        device,
        str(dtype).removeprefix("torch."),
        loaded.load_s,
        extra={"action": "model_loaded", "task": resolved.task.value},
    )
    return loaded
