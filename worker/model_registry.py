"""Find, fetch and load the models a worker serves: hub ids or local directories."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.catalogue import MODELS_FILE_SETTING, CatalogueModel
from shared.config import EMBEDDING_MODEL_SETTING, Settings
from shared.model_limits import ModelLimits
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
    # The catalogue name jobs choose it by (None: resolved outside the catalogue).
    name: str | None = None


def resolve(settings: Settings, task: Task) -> ResolvedModel:
    """Return the local files of the task's default model, fetching them if needed."""
    entry = settings.catalogue.default(task)
    if entry is None:
        raise ModelUnavailable(
            f"the models file {settings.models_file} names no {task.value} model; add one "
            f"with default = true, or serve other tasks (TEXTQ_WORKER_TASKS)"
        )
    return resolve_entry(settings, entry)


def resolve_entry(settings: Settings, entry: CatalogueModel) -> ResolvedModel:
    """Return the local files of a catalogue model, fetching them from the hub if needed."""
    if settings.models_file is None:  # worded as before the catalogue
        what, setting = f"{entry.task.value} model", settings.model_setting_name(entry.task)
    else:
        what = f"{entry.task.value} model {entry.name!r}"
        setting = f"the source of [{entry.task.value}.{entry.name}] in {MODELS_FILE_SETTING}"
    files = locate(entry.source, revision=entry.revision, what=what, setting=setting)
    return ResolvedModel(
        task=entry.task,
        source=files.source,
        path=files.path,
        revision=files.revision,
        name=entry.name,
    )


@dataclass(frozen=True)
class ModelFiles:
    """A model's files on this machine and the revision they are, whatever it is used for."""

    source: str
    path: Path
    revision: str


def resolve_embedding(settings: Settings) -> ModelFiles:
    """Return the local files of the sentence encoder that assigns categories."""
    return locate(
        settings.embedding_model,
        revision=settings.embedding_model_revision,
        what="embedding model",
        setting=EMBEDDING_MODEL_SETTING,
    )


def locate(source: str, *, revision: str | None, what: str, setting: str) -> ModelFiles:
    """Return a model's local files: a directory, or a hub id fetched into the cache.

    `what` names the model in errors ("sentiment model"), `setting` the env var to change.
    """
    local = Path(source).expanduser()
    if local.is_dir():
        path = local.resolve()
        found_revision = _revision_of_directory(path)
        if revision is not None and revision != found_revision:
            # A pin that could not be honoured would be recorded on jobs as if it had been.
            raise ModelUnavailable(
                f"{what} {source!r} is a local directory at revision {found_revision}, not "
                f"{revision!r}: a revision pins hub ids; remove it, or set it to that one"
            )
    elif local.is_absolute() or source.startswith((".", "~")):
        raise ModelUnavailable(
            f"{what} directory {source!r} does not exist; "
            f"set {setting} to a model directory or a hub id"
        )
    else:
        path = _fetch_from_hub(source, revision=revision, what=what, setting=setting)
        found_revision = path.name
    if not any(path.glob("*.safetensors")):
        raise ModelUnavailable(
            f"{what} {source!r} has no .safetensors weights and textq does not "
            f"load pickled weights; convert it or set {setting}"
        )
    return ModelFiles(source=source, path=path, revision=found_revision)


def _fetch_from_hub(repo_id: str, *, revision: str | None, what: str, setting: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_FILE_PATTERNS))
    except Exception as error:  # the hub client raises many types for "no network"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelUnavailable(
            f"cannot fetch the {what} {repo_id!r} from the Hugging Face hub "
            f"({type(error).__name__}: {reason[:200]}); set {setting} "
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
    """Return the torch device for `auto`, `cpu`, `cuda`, `cuda:N` or `mps`.

    On CUDA it also sets this process's attention kernels (see `use_shape_free_attention`):
    the worker is the only user of its device.

    Raises:
        ModelUnavailable: CUDA asked for and not available.
    """
    import torch

    if setting == "auto":
        device = (
            torch.device("cuda", torch.cuda.current_device())
            if torch.cuda.is_available()
            else torch.device("cpu")
        )
    else:
        device = torch.device(setting)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelUnavailable(f"device {setting!r} asked for but CUDA is not available")
        use_shape_free_attention()
    return device


def use_shape_free_attention() -> None:
    """Turn off cuDNN's fused attention for `scaled_dot_product_attention` in this process.

    cuDNN builds an execution graph for every new shape of query, key and value, and
    textq's batches rarely repeat one: they are sorted by length and sized by a token
    budget, and each generated token makes a longer key. On an H200 (torch 2.11, where
    SDPA picks cuDNN first on Hopper) the full-size classifier took 63 ms a batch of a new
    shape with cuDNN and 4.5 ms without (3.6 and 3.8 ms once shapes repeat), and textq's bulk
    sentiment ran 4.2x faster end to end without it (README "A GPU run"). FlashAttention and
    the memory-efficient kernels, chosen instead, take any shape without a build.
    """
    import torch

    torch.backends.cuda.enable_cudnn_sdp(False)


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
    # Tokens a generated text may have (decoder positions); None: no generator, or no limit.
    max_output_tokens: int | None = None

    @property
    def limits(self) -> ModelLimits:
        """Return what this model can honour, as its worker records it."""
        return ModelLimits(
            max_input_tokens=self.max_input_tokens, max_output_tokens=self.max_output_tokens
        )

    def registry_entry(self) -> dict[str, Any]:
        """Return what the `workers` table says of this model: source, revision and limits."""
        return {
            "model": self.resolved.source,
            "revision": self.resolved.revision,
            "limits": self.limits.as_json(),
        }

    def labels(self) -> list[str] | None:
        """Return a classifier's labels in the order of its outputs (None: a generator)."""
        if self.resolved.task is not Task.SENTIMENT:
            return None
        id2label = getattr(self.model.config, "id2label", None) or {}
        return [str(id2label[key]) for key in sorted(id2label)]


def load(
    resolved: ResolvedModel, *, device: torch.device, dtype: torch.dtype, announce: bool = True
) -> LoadedModel:
    """Load the model and tokenizer from local files onto the device, ready for inference
    (`announce`: log the load; False for a caller that logs it with more to say)."""
    started = time.perf_counter()
    tokenizer, model, max_input_tokens = _load_pretrained(
        resolved.path,
        "AutoModelForSequenceClassification"
        if resolved.task is Task.SENTIMENT
        else "AutoModelForSeq2SeqLM",
        what=f"{resolved.task.value} model",
        device=device,
        dtype=dtype,
        complete=True,
    )
    loaded = LoadedModel(
        resolved=resolved,
        tokenizer=tokenizer,
        model=model,
        device=device,
        dtype=dtype,
        max_input_tokens=max_input_tokens,
        load_s=time.perf_counter() - started,
        max_output_tokens=decoder_positions(model.config),
    )
    if announce:
        _say_loaded(
            resolved.task.value, resolved.source, resolved.revision, device, dtype, loaded.load_s
        )
    return loaded


@dataclass
class LoadedEncoder:
    """A sentence encoder (a bare transformer, no head) warm on its device."""

    files: ModelFiles
    tokenizer: Any
    model: Any
    device: torch.device
    dtype: torch.dtype
    max_input_tokens: int
    load_s: float


def load_encoder(files: ModelFiles, *, device: torch.device, dtype: torch.dtype) -> LoadedEncoder:
    """Load a sentence encoder (AutoModel) and its tokenizer onto the device."""
    started = time.perf_counter()
    tokenizer, model, max_input_tokens = _load_pretrained(
        files.path, "AutoModel", what="embedding model", device=device, dtype=dtype
    )
    # sentence-transformers models say how long a text they were trained to embed.
    trained = _max_seq_length(files.path)
    loaded = LoadedEncoder(
        files=files,
        tokenizer=tokenizer,
        model=model,
        device=device,
        dtype=dtype,
        max_input_tokens=min(max_input_tokens, trained or max_input_tokens),
        load_s=time.perf_counter() - started,
    )
    _say_loaded("embedding", files.source, files.revision, device, dtype, loaded.load_s)
    return loaded


def decoder_positions(config: Any) -> int | None:
    """Return how many tokens the model's decoder can attend over (generate up to), or None.

    Learned or precomputed position tables (BART, Pegasus, Marian) end there: one step
    past it, generation fails with an IndexError. Relative positions (T5) have no end.
    """
    if not getattr(config, "is_encoder_decoder", False):
        return None
    decoder = config.get_text_config(decoder=True)
    for name in ("max_target_positions", "max_position_embeddings"):
        value = getattr(decoder, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _max_seq_length(path: Path) -> int | None:
    try:
        config = json.loads((path / "sentence_bert_config.json").read_text())
        return int(config["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _load_pretrained(
    path: Path,
    model_class: str,
    *,
    what: str,
    device: torch.device,
    dtype: torch.dtype,
    complete: bool = False,
) -> tuple[Any, Any, int]:
    """Return tokenizer, model (safetensors only, no remote code) and the input window.

    `complete`: raise ModelUnavailable when the files lack weights the model class needs (a
    summarizer's directory loaded as a classifier would get a random head and answer
    nonsense without an error).
    """
    import torch
    import transformers
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        model, loading = getattr(transformers, model_class).from_pretrained(
            path,
            use_safetensors=True,
            trust_remote_code=False,
            dtype=dtype,
            output_loading_info=True,
        )
    except Exception as error:
        raise ModelUnavailable(
            f"cannot load the {what} from {path}: {type(error).__name__}: {error}"
        ) from error
    missing = sorted(loading.get("missing_keys") or [])
    if complete and missing:
        raise ModelUnavailable(
            f"the {what} at {path} has no weights for {len(missing)} of the model's tensors "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}): it is not a "
            f"{what} checkpoint, and those weights would be random; use a model trained for it"
        )
    model.to(device)
    model.eval()
    torch.set_grad_enabled(False)
    windows = [
        getattr(model.config, "max_position_embeddings", None),
        tokenizer.model_max_length if tokenizer.model_max_length < 1_000_000 else None,
    ]
    max_input_tokens = min(w for w in windows if w) if any(windows) else 512
    return tokenizer, model, max_input_tokens


def _say_loaded(
    what: str, source: str, revision: str, device: torch.device, dtype: torch.dtype, load_s: float
) -> None:
    log.info(
        "loaded %s model %s (revision %s) on %s as %s in %.1f s",
        what,
        source,
        revision,
        device,
        str(dtype).removeprefix("torch."),
        load_s,
        extra={"action": "model_loaded", "task": what},
    )
