"""Turn claimed items into outcomes: tokenize, pack length-sorted batches, run the model."""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy
import torch

from shared import metrics
from shared.config import FORWARD_OVERHEAD_TOKENS
from shared.jobs.documents import MAX_REDUCE_ROUNDS
from shared.jobs.work import ClaimedItem, NewChunk, Outcome
from shared.states import Task
from shared.tracing import span
from worker.categories import CategoriesUnavailable, CategoryEncoder, category_fields
from worker.chunking import split_into_chunks
from worker.generation import generation_config, refuse_unfit
from worker.model_registry import LoadedModel
from worker.padding_bias import honours_padding_bias, padding_bias

log = logging.getLogger(__name__)


def plan_batches(
    lengths: Sequence[int],
    *,
    max_tokens: int,
    max_size: int,
    overhead_tokens: int = FORWARD_OVERHEAD_TOKENS,
) -> list[list[int]]:
    """Group positions into batches that cost the least to run, shortest texts first.

    A batch costs its padded size (longest length x count) plus a fixed per-forward overhead
    (`overhead_tokens`, in token-equivalents). Lengths are sorted, then split into runs by
    dynamic programming: unlike filling each batch up to the budget, this keeps a long text
    from padding a batch of short ones, which matters most for the small mixed pools many
    small jobs produce. Each batch holds at most `max_size` texts and `max_tokens` padded
    tokens; a text longer than the budget runs alone.
    """
    order = sorted(range(len(lengths)), key=lambda position: lengths[position])
    sorted_lengths = [max(lengths[position], 1) for position in order]
    count = len(order)
    best = [0.0] + [float("inf")] * count  # best[j]: cheapest plan for the first j texts
    start_of = [0] * (count + 1)
    for end in range(1, count + 1):
        longest = sorted_lengths[end - 1]
        for begin in range(end - 1, max(0, end - max_size) - 1, -1):
            size = end - begin
            if size > 1 and longest * size > max_tokens:
                break
            cost = best[begin] + longest * size + overhead_tokens
            if cost < best[end]:
                best[end], start_of[end] = cost, begin
    batches = []
    end = count
    while end > 0:
        begin = start_of[end]
        batches.append(order[begin:end])
        end = begin
    return batches[::-1]


@dataclass(frozen=True)
class PlannedBatch:
    """A batch ready for the model: its items, their token ids, and the padded tensors
    (`input_ids` and `attention_mask`, [texts, longest], on the host)."""

    items: list[ClaimedItem]
    ids: list[list[int]]
    tensors: dict[str, torch.Tensor] | None  # None: padded when the batch runs


@dataclass(frozen=True)
class Prepared:
    """Claimed items made ready to run: the outcomes known without the model (failures,
    texts split into chunks), one list per group, and the batches to run, in order."""

    decided: list[list[Outcome]]
    batches: list[PlannedBatch]


@dataclass(frozen=True)
class BatchLimits:
    max_tokens: int
    max_size: int
    overhead_tokens: int = FORWARD_OVERHEAD_TOKENS
    # Tokens of one text as submitted (TEXTQ_MAX_ITEM_TOKENS); None: no limit.
    max_item_tokens: int | None = None


class Runner:
    """Runs one task's model over claimed items, one batch at a time."""

    def __init__(self, loaded: LoadedModel, limits: BatchLimits) -> None:
        self.loaded = loaded
        self.limits = limits

    @functools.cached_property
    def preparing_tokenizer(self) -> Any:
        """Return a copy of the model's tokenizer for `prepare`, set for whole texts (no
        truncation, no padding) by one call, as `_encode` then calls its backend directly:
        the copy's state is ours, whatever else calls the model's own."""
        try:
            tokenizer = copy.deepcopy(self.loaded.tokenizer)
        except Exception as error:  # then set the model's own, as its own call would
            log.warning("cannot copy the tokenizer (%s); using the model's own", error)
            tokenizer = self.loaded.tokenizer
        tokenizer([""], truncation=False, padding=False, verbose=False)
        return tokenizer

    @property
    def task(self) -> Task:
        return self.loaded.resolved.task

    @property
    def chunk_tokens(self) -> int:
        """Return how many content tokens fit the model's window beside its special tokens."""
        specials = self.loaded.tokenizer.num_special_tokens_to_add(pair=False)
        return self.loaded.max_input_tokens - specials

    def run(
        self,
        items: Sequence[ClaimedItem],
        skip: Callable[[ClaimedItem], bool] = lambda item: False,
    ) -> Iterator[list[Outcome]]:
        """Yield the outcomes of each batch as soon as it is done (`prepare`, then
        `run_prepared`)."""
        return self.run_prepared(self.prepare(items), skip)

    def prepare(self, items: Sequence[ClaimedItem]) -> Prepared:
        """Tokenize items and plan their batches, without running the model.

        A text longer than the model's window is not truncated: it comes back split into
        chunks (an outcome with `chunks`), which later claims run like any other text. Texts
        that cannot run at all come back as failures. The rest are planned into batches,
        their padded tensors built on the host. Tokenizes with `preparing_tokenizer`.
        """
        decided: list[list[Outcome]] = []
        batches: list[PlannedBatch] = []
        for group in self._groups(items):
            refused = self._refuse(group)
            if refused:
                decided.append(refused)
                continue
            encoded, failures, starts = self._encode_each(group)
            failures += self._refuse_too_many_tokens(group, encoded)
            splits = self._split_too_long(group, encoded, starts)
            if failures or splits:
                decided.append(failures + splits)
                done = {o.item_id for o in failures + splits}
                group = [item for item in group if item.id not in done]
            lengths = [len(encoded[item.id]) for item in group]
            for positions in plan_batches(
                lengths,
                max_tokens=self.limits.max_tokens,
                max_size=self.limits.max_size,
                overhead_tokens=self.limits.overhead_tokens,
            ):
                batch = [group[p] for p in positions]
                ids = [encoded[item.id] for item in batch]
                try:
                    tensors: dict[str, torch.Tensor] | None = self._host_tensors(ids)
                except Exception:  # padded again when the batch runs, where its items fail
                    tensors = None
                batches.append(PlannedBatch(batch, ids, tensors))
        return Prepared(decided, batches)

    def run_prepared(
        self,
        prepared: Prepared,
        skip: Callable[[ClaimedItem], bool] = lambda item: False,
    ) -> Iterator[list[Outcome]]:
        """Yield the outcomes decided while preparing, then each batch's as it is done.

        Items `skip` names when their batch comes up (their job was cancelled) are left
        out of it, without an outcome.
        """
        yield from prepared.decided
        for planned in prepared.batches:
            batch, ids, tensors = planned.items, planned.ids, planned.tensors
            if any(skip(item) for item in batch):
                kept = [n for n, item in enumerate(batch) if not skip(item)]
                batch, ids = [batch[n] for n in kept], [ids[n] for n in kept]
                tensors = None  # padded again, without the skipped items
            if not batch:
                continue
            started = time.perf_counter()
            with span(
                "textq.batch",
                task=self.task.value,
                size=len(batch),
                tokens=sum(len(row) for row in ids),
            ):
                outcomes = self._run_isolated(batch, ids, tensors)
            self._observe(ids, time.perf_counter() - started)
            yield outcomes

    def _observe(self, batch_ids: list[list[int]], seconds: float) -> None:
        task = self.task.value
        tokens = sum(len(ids) for ids in batch_ids)
        slots = max(len(ids) for ids in batch_ids) * len(batch_ids)
        metrics.BATCH_SIZE.labels(task=task).observe(len(batch_ids))
        metrics.BATCH_PADDING.labels(task=task).observe(1 - tokens / slots if slots else 0.0)
        metrics.BATCH_SECONDS.labels(task=task).observe(seconds)
        metrics.TOKENS_PROCESSED.labels(task=task).inc(tokens)

    def _refuse(self, group: Sequence[ClaimedItem]) -> list[Outcome]:
        """Return failures for a group of items this runner cannot run at all (none here)."""
        return []

    def _groups(self, items: Sequence[ClaimedItem]) -> list[list[ClaimedItem]]:
        """Split items into groups that may share a batch (same decoding options)."""
        groups: dict[str, list[ClaimedItem]] = {}
        for item in items:
            key = json.dumps([item.is_chunk, item.options], sort_keys=True)
            groups.setdefault(key, []).append(item)
        return list(groups.values())

    def _refuse_too_many_tokens(
        self, items: Sequence[ClaimedItem], encoded: dict[int, list[int]]
    ) -> list[Outcome]:
        """Fail the submitted texts over the token limit, before any work goes into them."""
        limit = self.limits.max_item_tokens
        if limit is None:
            return []
        outcomes = []
        for item in items:
            # Chunks and later reduce rounds are cut from a text that was already counted.
            if item.is_chunk or item.level > 0 or item.id not in encoded:
                continue
            tokens = len(encoded[item.id])
            if tokens > limit:
                del encoded[item.id]
                outcomes.append(_too_many_tokens(item, tokens, limit))
        return outcomes

    def _split_too_long(
        self,
        items: Sequence[ClaimedItem],
        encoded: dict[int, list[int]],
        starts: dict[int, list[int]] | None = None,
    ) -> list[Outcome]:
        """Split the texts longer than the window; truncate the rare chunk that still is.

        A chunk can come out a few tokens over when the tokenizer merges across the
        boundary it was cut at; the last reduce round never splits, so a summary ends.
        `starts`: by item id, where each token of a text over the window starts (`_encode`).
        """
        window = self.loaded.max_input_tokens
        outcomes = []
        for item in items:
            ids = encoded.get(item.id)
            if ids is None or len(ids) <= window:
                continue
            if item.is_chunk or item.level >= MAX_REDUCE_ROUNDS:
                encoded[item.id] = ids[: window - 1] + ids[-1:]
                continue
            try:
                chunks = split_into_chunks(
                    item.text,
                    self.preparing_tokenizer,
                    self.chunk_tokens,
                    (starts or {}).get(item.id),
                )
            except Exception as error:
                outcomes.append(_failure(item, error))
                continue
            tokens, chars = _measured(item, ids)
            outcomes.append(
                Outcome(
                    item_id=item.id,
                    chunks=[
                        NewChunk(c.start, c.end, c.tokens, item.text[c.start : c.end])
                        for c in chunks
                    ],
                    input_tokens=tokens,
                    input_chars=chars,
                )
            )
        return outcomes

    def _encode_each(
        self, items: Sequence[ClaimedItem]
    ) -> tuple[dict[int, list[int]], list[Outcome], dict[int, list[int]]]:
        """Tokenize all items at once; if that fails, one by one, so one bad text fails alone.

        Returns each item's token ids and the failures, by item id; and for the texts over
        the window, where each of their tokens starts (see `_encode`).
        """
        starts: dict[int, list[int]] = {}
        try:
            encoded = self._encode([item.text for item in items], starts)
            return (
                {item.id: ids for item, ids in zip(items, encoded, strict=True)},
                [],
                {items[position].id: offsets for position, offsets in starts.items()},
            )
        except Exception:
            pass
        by_id: dict[int, list[int]] = {}
        failures = []
        for item in items:
            try:
                by_id[item.id] = self._encode([item.text])[0]
            except Exception as error:
                failures.append(_failure(item, error))
        return by_id, failures, {}

    def _encode(
        self, texts: list[str], starts: dict[int, list[int]] | None = None
    ) -> list[list[int]]:
        """Return each text's token ids with the model's special tokens, whole.

        A fast tokenizer's Rust backend is called directly, as the tokenizer's own call does
        once set up (`preparing_tokenizer`), without building a `BatchEncoding` of Python
        lists around its answer: a third of the time on short feedback texts. Its offsets
        also go, for each text longer than the window (by position), into `starts`: where
        each token other than a special one starts, so the text is split into chunks
        without tokenizing it again (`split_into_chunks`).
        """
        tokenizer = self.preparing_tokenizer
        if getattr(tokenizer, "is_fast", False):
            encodings = tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=True)
            if starts is not None:
                window = self.loaded.max_input_tokens
                for position, encoding in enumerate(encodings):
                    if len(encoding) > window:
                        starts[position] = [
                            start
                            for (start, _), special in zip(
                                encoding.offsets, encoding.special_tokens_mask, strict=True
                            )
                            if not special
                        ]
            return [encoding.ids for encoding in encodings]
        encoded = tokenizer(texts, truncation=False, padding=False, verbose=False)
        return [list(ids) for ids in encoded["input_ids"]]

    def _run_isolated(
        self,
        batch: list[ClaimedItem],
        encoded: list[list[int]],
        tensors: dict[str, torch.Tensor] | None = None,
    ) -> list[Outcome]:
        """Run a batch; if it fails, run its items one by one so one bad text fails alone."""
        try:
            return self._forward(batch, encoded, tensors or self._host_tensors(encoded))
        except Exception as error:
            if len(batch) == 1:
                return [_failure(batch[0], error)]
            log.warning(
                "batch of %d failed (%s); retrying its items one by one",
                len(batch),
                error,
                extra={"action": "batch_split"},
            )
            return [
                outcome
                for item, ids in zip(batch, encoded, strict=True)
                for outcome in self._run_isolated([item], [ids])
            ]

    def _host_tensors(self, encoded: list[list[int]]) -> dict[str, torch.Tensor]:
        """Return a batch's padded `input_ids` and `attention_mask` ([texts, longest], int64)
        on the host, in pinned memory when the model is on a CUDA device.

        Padded as the tokenizer's `pad` does (its pad token, on its padding side), by a few
        array operations for the whole batch instead of its per-text Python work. Pinned
        memory lets the copy to the device run without blocking the host (`_on_device`).

        Padded in numpy, not torch: a claim taken ahead is made ready on a thread of its
        own, and a torch operation there that runs in parallel (a masked assignment does)
        gives that thread an OpenMP team of its own. With more OpenMP threads than cores,
        libgomp's threads spin only briefly between parallel regions, and every operation of
        the model's forwards after it waits for its team to wake: in process, on a 2-core
        Xeon, claims of 1,024 texts made ready ahead left a core idle 19% of the time and
        ran the full-size classifier 13% slower than the same claims made ready in turn.
        """
        tokenizer = self.loaded.tokenizer
        pad = tokenizer.pad_token_id
        if pad is None:  # the tokenizer's own padding says what is wrong
            padded = tokenizer.pad({"input_ids": encoded}, padding=True, return_tensors="pt")
            return {key: padded[key] for key in ("input_ids", "attention_mask")}
        lengths = numpy.fromiter(map(len, encoded), dtype=numpy.int64, count=len(encoded))
        longest = int(lengths.max())
        columns = numpy.arange(longest)
        if tokenizer.padding_side == "left":
            mask = columns >= longest - lengths[:, None]
        else:
            mask = columns < lengths[:, None]
        input_ids = numpy.full((len(encoded), longest), pad, dtype=numpy.int64)
        # A boolean mask takes its places row by row: the texts' ids, concatenated, fill them.
        # (numpy reads the ids straight from the iterator: 0.9 µs a feedback text against
        # torch.tensor's 2.9 from a list, Python the claim's thread holds the GIL for.)
        input_ids[mask] = numpy.fromiter(
            chain.from_iterable(encoded), dtype=numpy.int64, count=int(lengths.sum())
        )
        tensors = {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(mask.astype(numpy.int64)),
        }
        if self.loaded.device.type == "cuda":
            tensors = {key: value.pin_memory() for key, value in tensors.items()}
        return tensors

    def _on_device(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Return the batch's tensors on the model's device; from pinned memory the copy is
        queued behind the work before it, and the host waits only when it reads results."""
        device = self.loaded.device
        return {key: value.to(device, non_blocking=True) for key, value in tensors.items()}

    def _forward(
        self, batch: list[ClaimedItem], encoded: list[list[int]], tensors: dict[str, torch.Tensor]
    ) -> list[Outcome]:
        raise NotImplementedError


class SentimentRunner(Runner):
    """Labels texts with a sequence classifier; scores are softmax probabilities.

    Texts of a job with `categories` also get the category nearest in meaning, from the
    sentence encoder (loaded the first time such a job comes).
    """

    def __init__(
        self, loaded: LoadedModel, limits: BatchLimits, encoder: CategoryEncoder | None = None
    ) -> None:
        super().__init__(loaded, limits)
        self.encoder = encoder

    def _refuse(self, group: Sequence[ClaimedItem]) -> list[Outcome]:
        """Fail a group with categories at once if the encoder cannot be had."""
        if not group[0].options.get("categories"):
            return []
        try:
            self._encoder().ensure_loaded()
        except CategoriesUnavailable as error:
            return [Outcome(item_id=item.id, error=str(error)) for item in group]
        return []

    def _forward(
        self, batch: list[ClaimedItem], encoded: list[list[int]], tensors: dict[str, torch.Tensor]
    ) -> list[Outcome]:
        with torch.inference_mode():
            logits = self.loaded.model(**self._model_inputs(encoded, tensors)).logits
        probabilities = logits.float().softmax(dim=-1).cpu().tolist()
        labels = self.loaded.model.config.id2label
        categories = batch[0].options.get("categories")
        cosines = self._similarities(batch, categories) if categories else None
        outcomes = []
        for position, (item, row) in enumerate(zip(batch, probabilities, strict=True)):
            # A NaN or an infinity anywhere in a row makes its sum one: one read per row, and
            # one copy from the device per batch.
            if not math.isfinite(sum(row)):
                outcomes.append(Outcome(item_id=item.id, error=NOT_FINITE))
                continue
            best = max(range(len(row)), key=row.__getitem__)
            result = {
                "label": labels[best],
                "score": row[best],
                "scores": {labels[k]: p for k, p in enumerate(row)},
            }
            if cosines is not None:
                result |= category_fields(categories, cosines[position], chunk=item.is_chunk)
            outcomes.append(Outcome(item_id=item.id, result=result))
        return outcomes

    def _model_inputs(
        self, encoded: list[list[int]], tensors: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Return the batch's inputs on the device: its padding as an attention bias, or no
        mask when nothing is padded, where the model gives the same answer that way
        (`worker/padding_bias.py`); else the 2-D mask as the tokenizer makes it."""
        on_device = self._on_device(tensors)
        if not self._honours_padding_bias:
            return on_device
        if len({len(ids) for ids in encoded}) == 1:
            return {"input_ids": on_device["input_ids"]}
        bias = padding_bias(on_device["attention_mask"], self.loaded.dtype)
        return {"input_ids": on_device["input_ids"], "attention_mask": bias}

    @functools.cached_property
    def _honours_padding_bias(self) -> bool:
        tokenizer = self.loaded.tokenizer
        if getattr(tokenizer, "pad_token_id", None) is None:
            return False
        return honours_padding_bias(
            self.loaded.model,
            pad_id=tokenizer.pad_token_id,
            window=self.loaded.max_input_tokens,
            padding_side=getattr(tokenizer, "padding_side", "right"),
            dtype=self.loaded.dtype,
        )

    def _similarities(self, batch: list[ClaimedItem], categories: list[str]) -> list[list[float]]:
        """Return each text's similarity to each category: the text the classifier saw,
        cut to the encoder's own window."""
        return self._encoder().similarities([item.text for item in batch], categories)

    def _encoder(self) -> CategoryEncoder:
        if self.encoder is None:
            raise CategoriesUnavailable("cannot assign categories: this worker has no encoder")
        return self.encoder


class SummarizeRunner(Runner):
    """Summarizes texts with a seq2seq model, on the model's own decoding settings by default."""

    def _forward(
        self, batch: list[ClaimedItem], encoded: list[list[int]], tensors: dict[str, torch.Tensor]
    ) -> list[Outcome]:
        generation = self.generation_config(batch[0].options, chunk=batch[0].is_chunk)
        with torch.inference_mode():
            output = self.loaded.model.generate(
                **self._on_device(tensors), generation_config=generation
            )
        summaries = self.loaded.tokenizer.batch_decode(
            output, skip_special_tokens=True, clean_up_tokenization_spaces=True
        )
        outcomes = []
        for item, ids, summary in zip(batch, encoded, summaries, strict=True):
            tokens, chars = _measured(item, ids)
            result = {"summary_text": summary.strip()}
            outcomes.append(
                Outcome(item_id=item.id, result=result, input_tokens=tokens, input_chars=chars)
            )
        return outcomes

    def generation_config(self, options: dict[str, Any], *, chunk: bool = False) -> Any:
        """Return the model's generation config with the job's options laid over it."""
        return generation_config(
            self.loaded.model.generation_config,
            options,
            chunk_tokens=self.chunk_tokens,
            chunk=chunk,
        )

    def _refuse(self, group: Sequence[ClaimedItem]) -> list[Outcome]:
        """Fail a group whose options ask for more than the model can generate."""
        if group[0].is_chunk:  # chunks keep the model's own lengths
            return []
        error = refuse_unfit(group[0].options, self.loaded.limits)
        if error is None:
            return []
        return [Outcome(item_id=item.id, error=error) for item in group]


NOT_FINITE = (
    "the model gave this text scores that are not numbers (NaN or infinite: an overflow in "
    "its dtype); TEXTQ_DTYPE=float32 runs the model in full precision"
)


def _measured(item: ClaimedItem, ids: list[int]) -> tuple[int | None, int | None]:
    """Return a submitted text's length in tokens and characters for its outcome.

    Chunks and later rounds get none: drift compares texts as clients sent them.
    """
    if item.is_chunk or item.level > 0:
        return None, None
    return len(ids), len(item.text)


def _failure(item: ClaimedItem, error: Exception) -> Outcome:
    log.warning(
        "item %s failed: %s",
        item.id,
        error,
        extra={"action": "item_failed", "job_id": str(item.job_id)},
    )
    return Outcome(item_id=item.id, error=f"{type(error).__name__}: {error}")


def _too_many_tokens(item: ClaimedItem, tokens: int, limit: int) -> Outcome:
    log.warning(
        "item %s is %d tokens, over the limit of %d",
        item.id,
        tokens,
        limit,
        extra={"action": "item_too_long", "job_id": str(item.job_id)},
    )
    return Outcome(
        item_id=item.id,
        error=(
            f"The text is {tokens:,} tokens long; the limit is {limit:,} tokens a text "
            "(TEXTQ_MAX_ITEM_TOKENS)."
        ),
    )


RUNNERS: dict[Task, type[Runner]] = {
    Task.SENTIMENT: SentimentRunner,
    Task.SUMMARIZE: SummarizeRunner,
}


def make_runner(
    loaded: LoadedModel, limits: BatchLimits, *, encoder: CategoryEncoder | None = None
) -> Runner:
    """Return the runner for the loaded model's task (sentiment: with the category encoder)."""
    if loaded.resolved.task is Task.SENTIMENT:
        return SentimentRunner(loaded, limits, encoder)
    return RUNNERS[loaded.resolved.task](loaded, limits)
