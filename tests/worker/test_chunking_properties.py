"""Properties of the chunker over generated texts, measured with the real bert tokenizer.

For any text and budget: the chunks tile the text exactly, in order; each one's count is
its real token count and fits the budget (unless it cannot be cut at all); no cut falls
in whitespace, so no chunk starts with the space or line break that ends the one before.
"""

from __future__ import annotations

import os
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests import model_factory
from worker.chunking import split_into_chunks

# Deterministic in CI (no flaky reds); a new draw on every local run.
PROPERTY = settings(
    max_examples=200,
    deadline=None,
    database=None,
    derandomize="CI" in os.environ,
    suppress_health_check=[HealthCheck.too_slow],
)

WORDS = ["the", "service", "was", "great", "naïve", "café", "über", "don't", "e-mail", "42"]
PIECES = st.one_of(
    st.sampled_from(WORDS),
    # Sentence ends, closing quotes and brackets, CJK full stops, ellipses.
    st.sampled_from(
        [".", "!", "?", "…", '."', ".)", "?!", "\u3002", "\uff01", "\uff1f", "\u300d", "\u201d"]
    ),
    # Every kind of whitespace a text carries, paragraphs included.
    st.sampled_from([" ", "  ", "\n", "\n\n", "\r\n", "\r\n\r\n", "\t", "\u3000", "\xa0"]),
    st.sampled_from(["日本語", "🙂", "abcdefghijklmnopqrstuvwxyz" * 3, "https://x.org/a/b"]),
)
# Prose-like texts, and anything at all (combining marks, controls, unpaired surrogates).
texts = st.one_of(
    st.lists(PIECES, max_size=120).map("".join),
    st.text(max_size=400),
)


@pytest.fixture(scope="module")
def bert() -> Any:
    """The real bert-base-uncased WordPiece tokenizer."""
    return model_factory.tokenizer()


def token_starts(tokenizer: Any, text: str) -> list[int]:
    """Return where each token of `text` starts, without special tokens."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [start for start, _ in encoded["offset_mapping"]]


@PROPERTY
@given(text=texts, max_tokens=st.integers(min_value=1, max_value=48))
@example(text="one two three four five. six seven eight.\n\nnine ten", max_tokens=3)
@example(text="abc\r\ndef\r\nghi jkl. mno", max_tokens=1)
@example(text=" \n\t ", max_tokens=1)
def test_chunks_tile_the_text_and_fit_the_budget(bert: Any, text: str, max_tokens: int) -> None:
    chunks = split_into_chunks(text, bert, max_tokens)
    if not text:
        assert chunks == []
        return
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    assert all(a.end == b.start for a, b in pairwise(chunks))
    assert all(chunk.start < chunk.end for chunk in chunks)
    for chunk in chunks:
        piece = text[chunk.start : chunk.end]
        starts = token_starts(bert, piece)
        assert chunk.tokens == len(starts)
        # Over the budget only where there is no place to cut: every token starts at once.
        assert chunk.tokens <= max_tokens or set(starts) == {0}
    for chunk in chunks[1:]:
        assert not text[chunk.start].isspace(), f"a cut in whitespace at {chunk.start}"


@PROPERTY
@given(text=texts, max_tokens=st.integers(min_value=1, max_value=48))
@example(text="one two. three\u2028four. five\x1csix. seven", max_tokens=2)
def test_counts_taken_from_the_whole_texts_tokens_are_exact(
    bert: Any, text: str, max_tokens: int
) -> None:
    # As the worker splits: from the token starts of its first encoding, no chunk
    # tokenized again (a WordPiece tokenizer splits at whitespace).
    chunks = split_into_chunks(text, bert, max_tokens, token_starts(bert, text))
    assert "".join(text[chunk.start : chunk.end] for chunk in chunks) == text
    for chunk in chunks:
        starts = token_starts(bert, text[chunk.start : chunk.end])
        assert chunk.tokens == len(starts)
        assert chunk.tokens <= max_tokens or set(starts) == {0}


@PROPERTY
@given(text=texts, max_tokens=st.integers(min_value=1, max_value=48))
def test_a_text_that_fits_is_one_chunk(bert: Any, text: str, max_tokens: int) -> None:
    tokens = len(token_starts(bert, text))
    if text and tokens <= max_tokens:
        chunks = split_into_chunks(text, bert, max_tokens)
        assert [(c.start, c.end, c.tokens) for c in chunks] == [(0, len(text), tokens)]
