"""Split a long text at sentence boundaries into chunks that each fit a model's input window.

Sentences are counted in one batched tokenizer call and packed into chunks of about equal size.
Each chunk is then tokenized once as cut, because a byte-level BPE merges a space into the word
after it, so counts taken sentence by sentence can be a few tokens off at a chunk's edges; a
WordPiece tokenizer (BERT's) counted from the whole text's tokens is exact.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate, pairwise
from typing import Any

# A cut falls after the whitespace that ends a sentence (. ! ? … and closing quotes or brackets),
# after a blank line (a paragraph, a heading), and right after a CJK (full-width) sentence end,
# which takes no space. A lone line break is not a boundary: books and e-mails wrap lines in
# mid-sentence. Lookbehinds keep the scan linear on long runs of dots or spaces.
_END = r"[.!?\u2026]"
_CLOSE = r"[\"'\u201d\u2019\u00bb)\]}]"
_BOUNDARY = re.compile(
    rf"(?:(?<={_END})|(?<={_END}{_CLOSE})|(?<={_END}{_CLOSE}{_CLOSE}))\s+"
    r"|\n[^\S\n]*\n\s*"
    r"|(?<=[\u3002\uff01\uff1f])[\u300d\u300f\u201d\u2019\uff09]*\s*"
)


@dataclass(frozen=True)
class Chunk:
    """A span of the text and its token count, without special tokens."""

    start: int
    end: int
    tokens: int


def split_into_chunks(
    text: str, tokenizer: Any, max_tokens: int, token_starts: Sequence[int] | None = None
) -> list[Chunk]:
    """Split text at sentence boundaries into chunks of at most max_tokens tokens each.

    `token_starts`: where each of the text's tokens starts (character offsets, ascending,
    special tokens left out), from tokenizing the whole text once already; the sentences
    are then counted from it instead of by tokenizing them again. Each chunk is then
    tokenized once as cut, so its count is exact; with `token_starts` and BERT's
    tokenizer, the count from them already is, and no chunk is tokenized again.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    if not text:
        return []
    cuts, marks = _sentences(text, max(1, max_tokens // 32))
    if len(cuts) == 2:
        return _split_long(text, 0, len(text), tokenizer, max_tokens)
    if token_starts is not None:
        # A sentence's tokens start at or after the end of the one before's content.
        prefix = [bisect_left(token_starts, mark) for mark in marks]
        return _pack(
            text, cuts, prefix, tokenizer, max_tokens, exact=_exact_from_token_starts(tokenizer)
        )
    # Count each sentence with the whitespace before it, as a BPE tokenizes it in running text.
    counts = [len(ids) for ids in _encode(tokenizer, [text[a:b] for a, b in pairwise(marks)])]
    return _pack(text, cuts, [0, *accumulate(counts)], tokenizer, max_tokens)


def _sentences(text: str, min_length: int) -> tuple[list[int], list[int]]:
    """Return where sentences start (cuts) and where their content ends before whitespace.

    Sentences shorter than min_length characters join the next: each text in a tokenizer call
    has a fixed cost, and a cut every few characters is finer than balancing needs.
    """
    cuts, marks = [0], [0]
    for match in _BOUNDARY.finditer(text):
        cut = match.end()
        mark = match.start() + len(match.group().rstrip())
        while mark > cuts[-1] and text[mark - 1].isspace():
            mark -= 1
        if mark - cuts[-1] >= min_length and cut < len(text):
            cuts.append(cut)
            marks.append(mark)
    return [*cuts, len(text)], [*marks, len(text)]


def _pack(
    text: str,
    edges: list[int],
    prefix: list[int],
    tokenizer: Any,
    budget: int,
    *,
    exact: bool = False,
) -> list[Chunk]:
    """Group the units between edges into chunks, by the running estimated counts in prefix.

    `exact`: the counts are the chunks' own (see `_exact_from_token_starts`), so no chunk is
    tokenized again to count it.
    """
    fewest = _fewest(prefix, budget)
    chunks: list[Chunk] = []
    first = 0
    while first < len(edges) - 1:
        last = _plan(prefix, fewest, first, budget, fewest[0] - len(chunks))
        while last > first:
            if exact:
                tokens = prefix[last] - prefix[first]
            else:
                tokens = len(_encode(tokenizer, [text[edges[first] : edges[last]]])[0])
            if tokens <= budget:
                chunks.append(Chunk(edges[first], edges[last], tokens))
                break
            # Over by a few tokens at the edges: move units out until the estimate makes room.
            target = prefix[last] - (tokens - budget)
            last = max(first, min(last - 1, bisect_right(prefix, target) - 1))
        if last == first:
            chunks += _split_long(text, edges[first], edges[first + 1], tokenizer, budget)
            last = first + 1
        first = last
    return chunks


def _exact_from_token_starts(tokenizer: Any) -> bool:
    r"""Return whether a span cut where a sentence ends is tokenized as the whole text's
    tokens that start inside it, so counts taken from the whole text's token starts are
    exact: BERT's pre-tokenizer (it splits at every whitespace and punctuation mark, so at
    every cut, the CJK ones without a space included) with BERT's normalizer cleaning the
    text (it deletes the control characters Python's `\s` takes for whitespace at a cut).

    Not a byte-level BPE (GPT-2, BART), which merges the space before a word into the
    word's token; nor the `Whitespace` pre-tokenizers, which keep a run of punctuation
    whole across a CJK sentence's end.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    pre_tokenizer = getattr(backend, "pre_tokenizer", None)
    normalizer = getattr(backend, "normalizer", None)
    return (
        type(pre_tokenizer).__name__ == "BertPreTokenizer"
        and type(normalizer).__name__ == "BertNormalizer"
        and getattr(normalizer, "clean_text", False) is True
    )


def _fewest(prefix: list[int], budget: int) -> list[int]:
    """Return for each unit the fewest chunks it and the units after it take, by the estimates."""
    fewest = [0] * len(prefix)
    for first in range(len(prefix) - 2, -1, -1):
        # Filling each chunk to the budget takes the fewest; a unit over it is split on its own.
        last = bisect_right(prefix, prefix[first] + budget, first) - 1
        size = prefix[first + 1] - prefix[first]
        fewest[first] = (
            fewest[last] + 1 if last > first else fewest[first + 1] + math.ceil(size / budget)
        )
    return fewest


def _plan(prefix: list[int], fewest: list[int], first: int, budget: int, left: int) -> int:
    """Return the unit that ends the chunk starting at unit `first`, with `left` chunks to go.

    Returns `first` itself when that unit alone is over the budget.
    """
    base, total = prefix[first], prefix[-1]
    furthest = bisect_right(prefix, base + budget, first) - 1
    if furthest == first:
        return first
    left = max(left, fewest[first])
    goal = base + (total - base) / left
    last = bisect_left(prefix, goal, first)
    if last - 1 > first and goal - prefix[last - 1] < prefix[last] - goal:
        last -= 1
    # Never so short that the rest would need more chunks than are left.
    soonest = bisect_left(fewest, 1 - left, first + 1, furthest, key=lambda count: -count)
    last = min(max(last, soonest), furthest)
    # Units that count no tokens ride along rather than open a chunk of their own.
    return bisect_right(prefix, prefix[last], last) - 1


def _split_long(text: str, start: int, end: int, tokenizer: Any, budget: int) -> list[Chunk]:
    """Split a span over the budget at word starts, or at any token inside a word over it."""
    offsets = _tokenize(tokenizer, [text[start:end]], return_offsets_mapping=True)
    offsets = offsets["offset_mapping"][0]
    total = len(offsets)
    if total <= budget:
        return [Chunk(start, end, total)]
    places, words = [], [0]
    for index, (begin, stop) in enumerate(offsets):
        place = start + begin
        # BPE offsets include the space a token starts with; it stays with the chunk before.
        while place < start + stop and text[place].isspace():
            place += 1
        places.append(place)
        if index and place < start + stop and text[place - 1].isspace():
            words.append(index)
    edges, prefix = [start], [0]
    for low, high in pairwise([*words, total]):
        for index in range(low, high) if high - low > budget else [low]:
            if edges[-1] < places[index] < end and index:
                edges.append(places[index])
                prefix.append(index)
    if len(edges) == 1:
        return [Chunk(start, end, total)]  # a single character over the budget: no cut to make
    return _pack(text, [*edges, end], [*prefix, total], tokenizer, budget)


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Return the token ids of each text, without special tokens, in one batched call."""
    return list(_tokenize(tokenizer, texts)["input_ids"])


def _tokenize(tokenizer: Any, texts: list[str], **options: Any) -> Any:
    """Tokenize texts without special tokens, padding or truncation, in one batched call."""
    # Counting texts longer than the model takes is the point: keep its warning out of the log.
    return tokenizer(
        texts,
        add_special_tokens=False,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,
        **options,
    )
