"""The baseline: the classic Flask example, one pipeline call per request, fp32.

    python -m benchmarks.naive_server SENTIMENT_DIR SUMMARIZATION_DIR PORT

Exactly what textq replaces: a `pipeline("text-classification")` for sentiment and a seq2seq
model's `generate` for summaries (transformers 5 has no summarization pipeline), each request
served alone, in one process.
"""

from __future__ import annotations

import sys

import torch
from flask import Flask, jsonify, request
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, pipeline


def create_app(sentiment_dir: str, summarization_dir: str) -> Flask:
    app = Flask(__name__)
    classifier = pipeline("text-classification", model=sentiment_dir, device="cpu")
    tokenizer = AutoTokenizer.from_pretrained(summarization_dir)
    summarizer = AutoModelForSeq2SeqLM.from_pretrained(summarization_dir).eval()

    @app.post("/analyze")
    def analyze():  # type: ignore[no-untyped-def]
        return jsonify(classifier(request.json["text"], truncation=True))

    @app.post("/summarize")
    def summarize():  # type: ignore[no-untyped-def]
        body = request.json
        encoded = tokenizer(body["text"], truncation=True, return_tensors="pt")
        options = {k: body[k] for k in ("max_length", "min_length", "num_beams") if k in body}
        with torch.inference_mode():
            output = summarizer.generate(
                input_ids=encoded["input_ids"],
                attention_mask=encoded["attention_mask"],
                do_sample=False,
                **options,
            )
        text = tokenizer.decode(output[0], skip_special_tokens=True).strip()
        return jsonify([{"summary_text": text}])

    @app.get("/readyz")
    def readyz():  # type: ignore[no-untyped-def]
        return {"status": "ok"}

    return app


def main() -> None:
    sentiment_dir, summarization_dir, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    threaded = len(sys.argv) > 4 and sys.argv[4] == "threaded"
    create_app(sentiment_dir, summarization_dir).run(host="127.0.0.1", port=port, threaded=threaded)


if __name__ == "__main__":
    main()
