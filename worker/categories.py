"""Put each text of a job with `categories` in the category nearest to it in meaning.

A small sentence encoder (all-MiniLM-L6-v2 by default: 6 layers, 384 dimensions) embeds the
text once, by mean pooling over its tokens, and the category names once per list; the
text's category is the name with the highest cosine similarity. A zero-shot NLI model
(bart-large-mnli, 400 M parameters against MiniLM's 22 M) would need a forward pass for
every text *and* category.

The encoder is loaded on first use, so workers that never see a job with categories never
pay for it.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from shared.config import Settings
from shared.metrics import MODEL_LOAD_SECONDS
from worker import model_registry

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# After a failed load, jobs with categories fail at once for this long, then it is tried again.
RETRY_LOAD_AFTER_S = 60.0
# Category lists whose embeddings are kept (a list is embedded once, not once per batch).
CACHED_CATEGORY_LISTS = 256


class CategoriesUnavailable(Exception):
    """The embedding model that assigns categories cannot be found or loaded."""


class CategoryEncoder:
    """The worker's sentence encoder, loaded on first use, and its category embeddings."""

    def __init__(self, settings: Settings, *, device: torch.device, dtype: torch.dtype) -> None:
        self.settings = settings
        self.device = device
        self.dtype = dtype
        self._files: model_registry.ModelFiles | None = None
        self._loaded: model_registry.LoadedEncoder | None = None
        self._failure: str | None = None
        self._failed_at = 0.0
        self._categories: OrderedDict[tuple[str, ...], torch.Tensor] = OrderedDict()

    def identity(self) -> list[str]:
        """Return what names the encoder's answers (source and revision), for cache keys."""
        files = self._resolve()
        return [files.source, files.revision]

    def ensure_loaded(self) -> model_registry.LoadedEncoder:
        """Return the encoder, loading it now if needed; raise CategoriesUnavailable."""
        if self._loaded is not None:
            return self._loaded
        self._raise_if_failed_lately()
        files = self._resolve()
        try:
            self._loaded = model_registry.load_encoder(files, device=self.device, dtype=self.dtype)
        except model_registry.ModelUnavailable as error:
            raise self._failed(str(error)) from None
        MODEL_LOAD_SECONDS.labels(task="embedding", model=files.source).set(self._loaded.load_s)
        return self._loaded

    def similarities(self, texts: Sequence[str], categories: Sequence[str]) -> list[list[float]]:
        """Return each text's cosine similarity to each category, in the order given."""
        import torch

        names = self._category_embeddings(tuple(categories))
        with torch.inference_mode():
            cosines = self._embed(list(texts)) @ names.T
        return [list(map(float, row)) for row in cosines.cpu().tolist()]

    def _category_embeddings(self, categories: tuple[str, ...]) -> torch.Tensor:
        found = self._categories.get(categories)
        if found is None:
            found = self._embed(list(categories))
            self._categories[categories] = found
            if len(self._categories) > CACHED_CATEGORY_LISTS:
                self._categories.popitem(last=False)
        else:
            self._categories.move_to_end(categories)
        return found

    def _embed(self, texts: list[str]) -> torch.Tensor:
        """Return L2-normalised mean-pooled embeddings (float32), one row per text."""
        import torch

        loaded = self.ensure_loaded()
        encoded = loaded.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=loaded.max_input_tokens,
            return_tensors="pt",
        )
        inputs = {name: tensor.to(loaded.device) for name, tensor in encoded.items()}
        with torch.inference_mode():
            hidden = loaded.model(**inputs).last_hidden_state.float()
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def _resolve(self) -> model_registry.ModelFiles:
        if self._files is not None:
            return self._files
        self._raise_if_failed_lately()
        try:
            self._files = model_registry.resolve_embedding(self.settings)
        except model_registry.ModelUnavailable as error:
            raise self._failed(str(error)) from None
        return self._files

    def _raise_if_failed_lately(self) -> None:
        if self._failure is not None and time.monotonic() - self._failed_at < RETRY_LOAD_AFTER_S:
            raise CategoriesUnavailable(self._failure)

    def _failed(self, reason: str) -> CategoriesUnavailable:
        self._failure = f"cannot assign categories: {reason}"
        self._failed_at = time.monotonic()
        log.warning("%s", self._failure, extra={"action": "embedding_model_unavailable"})
        return CategoriesUnavailable(self._failure)


def best_category(categories: Sequence[str], cosines: Sequence[float]) -> tuple[str, float]:
    """Return the category with the highest similarity, and that similarity."""
    best = max(range(len(categories)), key=cosines.__getitem__)
    return categories[best], cosines[best]


def category_fields(
    categories: Sequence[str], cosines: Sequence[float], *, chunk: bool
) -> dict[str, Any]:
    """Return what a result says of its category (a chunk also keeps every similarity,
    which its text's category is averaged from)."""
    name, score = best_category(categories, cosines)
    fields: dict[str, Any] = {"category": name, "category_score": score}
    if chunk:
        fields["category_scores"] = dict(zip(categories, cosines, strict=True))
    return fields
