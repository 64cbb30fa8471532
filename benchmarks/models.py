"""Full-size benchmark models with random weights: speed does not depend on weight values.

distilbert-base (6 layers, 768 wide) as a 2-label classifier, and distilbart-cnn-12-6
(12 encoder and 6 decoder layers, 1024 wide) with its CNN decoding settings. Both use the real
bert-base-uncased tokenizer, so distilbart's vocabulary is bert's 30,522 tokens instead of
BART's 50,265: a slightly cheaper output projection, the same everything else.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    GenerationConfig,
)

from tests.model_factory import LABELS, tokenizer

# sshleifer/distilbart-cnn-12-6's decoding settings.
CNN_DECODING = {
    "num_beams": 4,
    "length_penalty": 2.0,
    "no_repeat_ngram_size": 3,
    "early_stopping": True,
    "max_length": 142,
    "min_length": 56,
}


def distilbert_classifier(directory: Path) -> Path:
    """Save a distilbert-base-uncased sized sequence classifier (random weights)."""
    if (directory / "model.safetensors").exists():
        return directory
    tok = tokenizer()
    torch.manual_seed(0)
    config = DistilBertConfig(
        vocab_size=tok.vocab_size,
        id2label=LABELS,
        label2id={label: index for index, label in LABELS.items()},
    )
    DistilBertForSequenceClassification(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def distilbart_cnn(directory: Path) -> Path:
    """Save a distilbart-cnn-12-6 sized summarizer (random weights, CNN decoding settings)."""
    if (directory / "model.safetensors").exists():
        return directory
    tok = tokenizer()
    torch.manual_seed(0)
    special = {
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.cls_token_id,
        "eos_token_id": tok.sep_token_id,
        "decoder_start_token_id": tok.sep_token_id,
    }
    config = BartConfig(
        vocab_size=tok.vocab_size,
        d_model=1024,
        encoder_layers=12,
        decoder_layers=6,
        encoder_attention_heads=16,
        decoder_attention_heads=16,
        encoder_ffn_dim=4096,
        decoder_ffn_dim=4096,
        max_position_embeddings=1024,
        forced_bos_token_id=None,
        **special,
    )
    model = BartForConditionalGeneration(config)
    model.generation_config = GenerationConfig(**CNN_DECODING, **special)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory
