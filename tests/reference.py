"""What the models say when run the plain way, one text at a time, to check textq against."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSeq2SeqLM, AutoModelForSequenceClassification, AutoTokenizer


def sentiment(model_dir: Path, texts: list[str]) -> list[dict[str, float]]:
    """Return each text's label probabilities from an unbatched forward pass."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    labels = model.config.id2label
    scores = []
    for text in texts:
        encoded = tokenizer(text, truncation=True, max_length=512, return_tensors="pt")
        with torch.inference_mode():
            row = model(**encoded).logits.softmax(-1)[0].tolist()
        scores.append({labels[k]: p for k, p in enumerate(row)})
    return scores


def summaries(model_dir: Path, texts: list[str], **overrides: Any) -> list[str]:
    """Return each text's summary from unbatched `generate` with the model's own settings."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()
    out = []
    for text in texts:
        encoded = tokenizer(text, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            output = model.generate(
                input_ids=encoded["input_ids"],
                attention_mask=encoded["attention_mask"],
                **overrides,
            )
        out.append(tokenizer.decode(output[0], skip_special_tokens=True).strip())
    return out
