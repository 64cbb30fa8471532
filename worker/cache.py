"""Answer repeated texts from the result cache, and run each distinct text once per claim.

Feedback repeats itself ("love it", "great product"). A result is cached under a key made of
everything that decides it: the task, the exact model (source, revision, precision, device
type), the job's options and the text. Same key, same result: the cache never changes an
answer, it only skips recomputing one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shared import repository
from shared.db import Database
from shared.repository import ClaimedItem, Outcome
from worker.models import LoadedModel


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
                        parts=outcome.parts,
                    )
                )
            if outcome.result is not None and outcome.item_id in self.key_of:
                entries[self.key_of[outcome.item_id]] = outcome.result
        return completed, entries


class ResultCache:
    """The result cache as one loaded model sees it."""

    def __init__(self, db: Database, loaded: LoadedModel, *, enabled: bool) -> None:
        self.db = db
        self.enabled = enabled
        resolved = loaded.resolved
        self.identity = [
            resolved.task.value,
            resolved.source,
            resolved.revision,
            str(loaded.dtype),
            loaded.device.type,
        ]

    def key(self, item: ClaimedItem) -> str:
        """Return the cache key of an item: a hash of all that decides its result."""
        material = json.dumps(
            [self.identity, item.options, item.is_chunk, item.text],
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
            found = repository.cached_results(session, keys.values())
        plan = CachePlan()
        leader_of: dict[str, int] = {}
        for item in items:
            key = keys[item.id]
            if key in found:
                plan.hits.append(Outcome(item_id=item.id, result=found[key], from_cache=True))
            elif key in leader_of:
                plan.followers[leader_of[key]].append(item.id)
            else:
                leader_of[key] = item.id
                plan.followers[item.id] = []
                plan.key_of[item.id] = key
                plan.to_run.append(item)
        return plan
