"""What a model can honour: its workers record it when they load it, submits are checked
against it, and a worker refuses what it cannot do with the same words.

The API imports no torch, so it cannot look at a model itself; the `workers` table carries
each served model's limits (`models[task]["limits"]`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

# Options counted in generated tokens (the decoder's start token included, as in
# transformers' `generate`).
GENERATED_LENGTH_OPTIONS = ("max_length", "min_length")

# Starts the error of an item whose job asked for what its model cannot do, so that the
# classic endpoints can answer it as the client's mistake (422), not a failure (500).
UNFIT_OPTIONS = "The model cannot honour the job's options"


@dataclass(frozen=True)
class ModelLimits:
    """Limits of one loaded model, in tokens.

    `max_input_tokens`: the encoder's window (longer texts are split into chunks).
    `max_output_tokens`: the longest text the model can generate, start token included (the
    decoder's position embeddings); None for a model that generates nothing or whose
    positions are relative (no fixed limit).
    """

    max_input_tokens: int
    max_output_tokens: int | None = None

    def as_json(self) -> dict[str, int | None]:
        """Return the limits as the `workers` table stores them."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> ModelLimits | None:
        """Return the limits a worker recorded, or None for a row without (an older worker)."""
        if not isinstance(data, Mapping) or not isinstance(data.get("max_input_tokens"), int):
            return None
        output = data.get("max_output_tokens")
        return cls(
            max_input_tokens=data["max_input_tokens"],
            max_output_tokens=output if isinstance(output, int) else None,
        )


def narrowest(found: Iterable[ModelLimits]) -> ModelLimits | None:
    """Return the limits every one of several workers can honour, or None if there are none."""
    found = list(found)
    if not found:
        return None
    outputs = [f.max_output_tokens for f in found if f.max_output_tokens is not None]
    return ModelLimits(
        max_input_tokens=min(f.max_input_tokens for f in found),
        max_output_tokens=min(outputs) if outputs else None,
    )


def unfit_options(options: Mapping[str, Any], limits: ModelLimits) -> dict[str, str]:
    """Return, for each option the model cannot honour, why and what it would accept.

    `options` are a job's validated options; an empty answer means the model can run them.
    """
    problems: dict[str, str] = {}
    cap = limits.max_output_tokens
    if cap is None:
        return problems
    for name in GENERATED_LENGTH_OPTIONS:
        value = options.get(name)
        if isinstance(value, int) and value > cap:
            problems[name] = (
                f"{name} {value:,} is more than this model can generate: its decoder has "
                f"{cap:,} positions; send {name} of at most {cap:,}"
            )
    return problems


def refusal(problems: Mapping[str, str]) -> str:
    """Return the error of an item whose options the model cannot honour."""
    return f"{UNFIT_OPTIONS}: " + "; ".join(problems.values()) + "."
