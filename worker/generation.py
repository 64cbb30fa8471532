"""Decoding settings of a summary: the model's own, with a job's options laid over them."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from shared.model_limits import ModelLimits, refusal, unfit_options


def generation_config(
    model_config: Any, options: Mapping[str, Any], *, chunk_tokens: int, chunk: bool = False
) -> Any:
    """Return a copy of the model's `GenerationConfig` with the job's options laid over it.

    A chunk's summary is an intermediate: it keeps the model's own lengths (the job's
    lengths are for the final summary), held to a quarter of a window (`chunk_tokens`) so
    that each reduce round shrinks the text. Sampling is off unless the job asks for it.
    """
    generation = copy.deepcopy(model_config)
    overrides = {k: v for k, v in options.items() if v is not None}
    overrides.setdefault("do_sample", False)
    if chunk:
        cap = max(chunk_tokens // 4, 8)
        overrides.pop("min_length", None)
        overrides["max_length"] = min(generation.max_length or cap, cap)
        if generation.max_new_tokens:
            overrides["max_new_tokens"] = min(generation.max_new_tokens, cap)
    elif "max_length" in overrides or "min_length" in overrides:
        # A model's own max_new_tokens would win over the job's lengths.
        overrides["max_new_tokens"] = None
    # A job that only lowers max_length must not be held to the model's longer minimum.
    if "max_length" in overrides and "min_length" not in overrides:
        overrides["min_length"] = min(generation.min_length or 0, overrides["max_length"])
    # Nor can a job that only raises min_length be cut at the model's shorter maximum.
    if "min_length" in overrides and "max_length" not in overrides:
        overrides["max_length"] = max(generation.max_length or 0, overrides["min_length"])
    generation.update(**overrides)
    return generation


def refuse_unfit(options: Mapping[str, Any], limits: ModelLimits) -> str | None:
    """Return the error for a summary whose options the model cannot honour, or None.

    The API refuses these at submit once a worker has recorded the model's limits; this
    catches what was accepted before any had, so that generation never runs past the
    model's positions (an IndexError deep in the model).
    """
    problems = unfit_options(options, limits)
    return refusal(problems) if problems else None
