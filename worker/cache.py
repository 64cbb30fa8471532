"""Answer repeated texts from the result cache, and run each distinct text once per claim.

Feedback repeats itself ("love it", "great product"). A result is cached under a key made of
everything that decides it: the task, the exact model (source, revision, precision, device
type), the job's options and the text, and for a job with categories the exact sentence
encoder too. Same key, same result: the cache never changes an answer, it only skips
recomputing one. A sampled summary has no key: it is neither answered from the cache nor
stored in it, and each of its texts runs on its own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.db import Database
from shared.jobs.result_cache import cached_results
from shared.jobs.work import ClaimedItem, Outcome
from worker.categories import CategoriesUnavailable, CategoryEncoder
from worker.model_registry import LoadedModel

# Options about the job as a whole, not any text's result: left out of the key, so a job
# with insights reuses the results of the same texts without.
JOB_LEVEL_OPTIONS = frozenset({"insights"})


@dataclass
class CachePlan:
    """How a claim's items will be answered: from the cache, or by running some of them."""

    hits: list[Outcome] = field(default_factory=list)
    to_run: list[ClaimedItem] = field(default_factory=list)
    # item id of a text to run -> ids of the claim's other items with the same key
    followers: dict[int, list[int]] = field(default_factory=dict)
    key_of: dict[int, str] = field(default_factory=dict)

    def complete(
        self, outcomes: Sequence[Outcome]
    ) -> tuple[list[Outcome], dict[str, dict[str, Any]]]:
        """Return the outcomes with copies for same-key items, and the results to cache."""
        completed = list(outcomes)
        entries: dict[str, dict[str, Any]] = {}
        for outcome in outcomes:
            for follower in self.followers.get(outcome.item_id, ()):
                completed.append(
                    Outcome(
                        item_id=follower,
                        result=outcome.result,
                        error=outcome.error,
                        from_cache=outcome.result is not None,
                        chunks=outcome.chunks,
                    )
                )
            if outcome.result is not None and outcome.item_id in self.key_of:
                entries[self.key_of[outcome.item_id]] = outcome.result
        return completed, entries


class ResultCache:
    """The result cache as one loaded model sees it."""

    def __init__(
        self,
        db: Database,
        loaded: LoadedModel,
        *,
        enabled: bool,
        encoder: CategoryEncoder | None = None,
    ) -> None:
        self.db = db
        self.enabled = enabled
        self.encoder = encoder
        resolved = loaded.resolved
        self.identity = [
            resolved.task.value,
            resolved.source,
            resolved.revision,
            str(loaded.dtype),
            loaded.device.type,
        ]

    def key(self, item: ClaimedItem) -> str | None:
        """Return the cache key of an item: a hash of all that decides its result.

        None: the item's result is not to be cached: it is sampled (a new draw each time, so
        a copy would pass one draw off as the answer), or cannot be named (its category
        encoder is unavailable).
        """
        if item.options.get("do_sample"):
            return None
        identity = self.identity
        if item.options.get("categories"):
            if self.encoder is None:
                return None
            try:
                identity = [*identity, *self.encoder.identity()]
            except CategoriesUnavailable:
                return None
        options = {k: v for k, v in item.options.items() if k not in JOB_LEVEL_OPTIONS}
        material = json.dumps(
            [identity, options, item.is_chunk, item.text],
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(material.encode()).hexdigest()

    def plan(self, items: Sequence[ClaimedItem]) -> CachePlan:
        """Split a claim into cached answers and the distinct texts that must run."""
        if not self.enabled:
            return CachePlan(to_run=list(items))
        keys = {item.id: self.key(item) for item in items}
        with self.db.read() as session:
            found = cached_results(session, [k for k in keys.values() if k])
        plan = CachePlan()
        leader_of: dict[str, int] = {}
        for item in items:
            key = keys[item.id]
            if key is None:
                plan.to_run.append(item)
            elif key in found:
                plan.hits.append(Outcome(item_id=item.id, result=found[key], from_cache=True))
            elif key in leader_of:
                plan.followers[leader_of[key]].append(item.id)
            else:
                leader_of[key] = item.id
                plan.followers[item.id] = []
                plan.key_of[item.id] = key
                plan.to_run.append(item)
        return plan
