"""Hand a classifier its padding as a ready-made attention bias, where the model honours one.

Given a 2-D `attention_mask`, transformers (5.x, `masking_utils.create_bidirectional_mask`)
builds a [texts, 1, longest, longest] boolean mask on every forward, first asking whether
any token is padding (`padding_mask.all()`: a wait for the device on CUDA), and SDPA turns that
mask into a float bias again in every layer. A 4-D mask is taken as it is: a [texts, 1, 1,
longest] additive bias (0 where a token counts, the dtype's lowest value at padding) means
the same to full attention, broadcast over the queries, without building the square mask. A
batch without padding gets no mask at all.

Measured with the 2-layer test classifier on one CPU thread (`torch 2.13`, transformers
5.24), the same batches: 16 texts of 400 tokens 29.3 → 19.6 ms a forward; 64 texts of 40
tokens 4.2 → 3.8 ms. A full-size model's arithmetic hides most of it on a CPU; on a GPU the
wait and the small kernels per forward are what the model's thread has to spare.

Not every architecture reads a 4-D mask this way (some take it as 0/1 multipliers, some
refuse it, and a model with local or sliding-window attention builds its windows from the 2-D
mask, which a ready mask would skip), so `honours_padding_bias` refuses models whose config
names such attention and tries the bias once on the rest.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)

# How close the bias's logits must come to the 2-D mask's: both are the same arithmetic in
# another order, so a few ulps of the model's dtype, scaled to the logits' size.
_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-8}
_HALF_TOLERANCE = 2e-2
# Config attributes that name attention other than full (a window, blocks, a per-layer mix):
# their masks are built from the 2-D one inside the model.
_LOCAL_ATTENTION = ("sliding_window", "local_attention", "attention_window", "block_size")
# The probe's shorter text: padding it to the longer one must change its logits if the
# mask were ignored, so that the probe can tell an honoured bias from an ignored one.
_PROBE_SHORT = 5
_PROBE_LONGEST = 128


def padding_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Return the additive bias for a [texts, longest] 0/1 `attention_mask`: a [texts, 1, 1,
    longest] tensor of `dtype` on the mask's device, 0 where a token counts and the dtype's
    lowest finite value at padding (as transformers' own additive masks use)."""
    bias = torch.zeros(
        (attention_mask.shape[0], 1, 1, attention_mask.shape[1]),
        dtype=dtype,
        device=attention_mask.device,
    )
    return bias.masked_fill_(attention_mask[:, None, None, :] == 0, torch.finfo(dtype).min)


def has_only_full_attention(config: Any) -> bool:
    """Return whether a model's config names no attention but full attention: no window,
    no sparse blocks, every layer `full_attention` where it lists their types."""
    if any(getattr(config, name, None) for name in _LOCAL_ATTENTION):
        return False
    if getattr(config, "attention_type", "original_full") != "original_full":  # BigBird
        return False
    layer_types = getattr(config, "layer_types", None) or []
    return all(kind == "full_attention" for kind in layer_types)


def honours_padding_bias(
    model: Any, *, pad_id: int, window: int, padding_side: str, dtype: torch.dtype
) -> bool:
    """Return whether `model` (a sequence classifier, on its device, in eval mode) gives the
    same logits for a padded batch with `padding_bias` as with the 2-D mask, and the same for
    an unpadded one with no mask as with a mask of ones.

    Refuses a model whose config names other than full attention (`has_only_full_attention`).
    Then two texts of made-up token ids, the longer as long as the model's `window` (up to
    128 tokens), the other padded with `pad_id` on `padding_side` to its length. False when
    either answer differs beyond the dtype's rounding, when the model refuses the bias, when
    the bias leaves the logits no nearer the 2-D mask's than no mask at all does (ignored,
    or the probe could not tell), or on any error: never raises.
    """
    try:
        if not has_only_full_attention(model.config):
            return False
        return _probe(model, pad_id, min(window, _PROBE_LONGEST), padding_side, dtype)
    except Exception as error:  # the model refuses a 4-D mask: it keeps the 2-D one
        log.info("the classifier takes no attention bias (%s); it gets the 2-D mask", error)
        return False


def _probe(model: Any, pad_id: int, longest: int, padding_side: str, dtype: torch.dtype) -> bool:
    device = next(model.parameters()).device
    vocab_size = model.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    low = min(1000, vocab_size - 1)
    input_ids = torch.randint(low, vocab_size, (2, longest), generator=generator)
    mask = torch.ones_like(input_ids)
    padded = (
        slice(0, longest - _PROBE_SHORT) if padding_side == "left" else slice(_PROBE_SHORT, None)
    )
    input_ids[1, padded], mask[1, padded] = pad_id, 0
    input_ids, mask = input_ids.to(device), mask.to(device)
    tolerance = _TOLERANCE.get(dtype, _HALF_TOLERANCE)

    def apart(a: torch.Tensor, b: torch.Tensor) -> float:
        """The largest difference, relative to the logits' size."""
        if a.shape != b.shape:
            return float("inf")
        scale = max(1.0, float(b.float().abs().max()))
        return float((a.float() - b.float()).abs().max()) / scale

    with torch.inference_mode():
        masked = model(input_ids=input_ids, attention_mask=mask).logits
        biased = model(input_ids=input_ids, attention_mask=padding_bias(mask, dtype)).logits
        unmasked = model(input_ids=input_ids, attention_mask=torch.ones_like(mask)).logits
        whole = input_ids[:1]
        ones = model(input_ids=whole, attention_mask=torch.ones_like(whole)).logits
        none = model(input_ids=whole).logits
    error = apart(biased, masked)
    # An ignored bias would leave the padded text's logits as far off as no mask does.
    seen = apart(unmasked, masked) > 4 * error
    return error <= tolerance and seen and apart(none, ones) <= tolerance
